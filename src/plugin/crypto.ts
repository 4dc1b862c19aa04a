import type { KeyObject } from "node:crypto";
import { nodeCrypto } from "../protocol/lazy-builtins.js";
import {
  BINDING_SIZE,
  Direction,
  MAX_KEY_ID_BYTES,
  MAX_RECORD_PLAINTEXT,
  TAG_SIZE,
  MAX_RECORD_SIZE,
  MIN_RECORD_SIZE,
  openEnvelope,
  proofAad,
  readEnvelopeHeader,
  recordAad,
  recordKey,
  sealEnvelope,
  sealRecord,
  setRecordSequence,
} from "../protocol/crypto-envelope.js";
import { FrameType } from "../protocol/frame.js";
import type { MsgpackCodec } from "../protocol/msgpack-codec.js";
import type { Processor, ProcessorAgreement, ProcessorOffer, RecordTransform, Transcript } from "../protocol/processor.js";
import { ReplayCache } from "../protocol/replay-cache.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type Metadata, parseSealedHello } from "../protocol/wire-messages.js";
import { checkCount, checkDuration } from "./option-checks.js";

/** Options of {@link crypto}. */
export interface CryptoOptions {
  /**
   * The key ring: key id (1 to 255 UTF-8 bytes) to a 32-byte AES-256 key.
   * A side opens whatever was sealed under any of its keys, so several keys
   * can be live at once while one is being replaced. Required.
   */
  keys: Readonly<Record<string, Uint8Array>>;
  /**
   * The key a client seals with; the server answers every connection with
   * the key its client chose. Default: the first key in `keys`.
   */
  keyId?: string;
  /**
   * Server side: refuse clients whose HELLO offers no crypto, with
   * UNAUTHENTICATED. Default true. `false` also serves plaintext clients (for
   * a migration). A client with this processor always requires encryption.
   */
  required?: boolean;
  /**
   * How far, in ms, the timestamp of a handshake proof may be from the
   * receiver's clock, either way. Default 30,000. Handshake proofs are
   * remembered for this long. (Records carry a timestamp too, which is not
   * checked: their sequence numbers refuse replays.)
   */
  timeout?: number;
  /**
   * Most handshake proofs remembered for replay detection: one per
   * encrypted connection this processor accepted (server) or opened
   * (client) within `timeout`. Past it, new handshakes are refused with
   * RESOURCE_EXHAUSTED rather than the memory growing; traffic on open
   * connections is not affected (records are numbered per connection, which
   * detects their replay). About 70 bytes each. Default 1,000,000.
   */
  replayCacheSize?: number;
}

/** The processor {@link crypto} returns, with its run-time controls. */
export interface CryptoProcessor extends Processor {
  readonly kind: "crypto";
  /** The key ids of the ring, in order. */
  readonly keyIds: readonly string[];
  /** The key a client seals with. */
  readonly keyId: string;
  /** Whether a server refuses clients without crypto. */
  readonly required: boolean;
  /** The timestamp tolerance, ms. */
  readonly timeout: number;
  /** Handshake proof nonces held for replay detection now. */
  readonly replayCacheEntries: number;
  /**
   * Replaces the key ring, the sending key or `required`, at once for new
   * connections and, for the ring, for every record received from now on.
   * A new ring without `keyId` keeps the sending key if it holds it, and
   * otherwise uses its first. Open connections keep sealing with the key
   * they started with. Throws INVALID_ARGUMENT on a bad value, changing nothing.
   */
  configure(options: Partial<Pick<CryptoOptions, "keys" | "keyId" | "required">>): void;
}

interface KeyEntry {
  readonly id: string;
  readonly idBytes: Buffer;
  readonly key: KeyObject;
}

const ZERO_BINDING = Buffer.alloc(BINDING_SIZE);
const EMPTY = Buffer.alloc(0);
const NO_METADATA: Metadata = Object.freeze({}) as Metadata;

/**
 * The crypto processor: AES-256-GCM over everything a connection carries
 * after its handshake, in both directions (PROTOCOL.md, "Processors"). Each
 * direction's frames are cut into records, one per socket write batch (so
 * the cipher setup is paid once for all the frames of an event-loop turn),
 * each sealed with a fresh random nonce, a timestamp and the key id, and
 * authenticated together with its direction, its sequence number and the
 * connection's handshake. A receiver refuses, with UNAUTHENTICATED, a
 * handshake proof whose timestamp is off by more than `timeout`, a record
 * under an unknown key id, and one that does not authenticate: altered, replayed,
 * reordered, dropped before it, reflected, or from another connection. The
 * connection is then closed and no handler runs for what it carried.
 *
 * In the handshake the client proves it has the key with a sealed HELLO
 * field, which also carries the connection metadata, so credentials never
 * travel in the clear; the server proves it too in WELCOME. A server with
 * `required` (the default) refuses clients without the proof.
 *
 * ```ts
 * const key = Buffer.from(process.env.RAPT_KEY, "base64"); // 32 bytes
 * const server = new Server({ processors: [crypto({ keys: { k1: key } })] });
 * const client = new Client(address, { processors: [crypto({ keys: { k1: key } })] });
 * ```
 *
 * Node's built-in crypto only. Each processor instance keeps its own replay
 * cache of handshake proofs, shared by the connections that use it.
 */
export function crypto(options: CryptoOptions): CryptoProcessor {
  return new Crypto(options);
}

class Crypto implements CryptoProcessor {
  readonly kind = "crypto" as const;
  readonly timeout: number;
  private ring: ReadonlyMap<string, KeyEntry>;
  private sending: KeyEntry;
  private require: boolean;
  private readonly cache: ReplayCache;

  constructor(options: CryptoOptions) {
    if (typeof options !== "object" || options === null) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, "crypto options must be an object with keys: { keyId: 32-byte key }");
    }
    this.timeout = checkDuration(options.timeout ?? 30_000, "crypto timeout");
    const size = checkCount(options.replayCacheSize ?? 1_000_000, "crypto replayCacheSize");
    if (size === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, "crypto replayCacheSize must be at least 1");
    this.cache = new ReplayCache({ maxEntries: size, windowMs: this.timeout });
    this.ring = keyRing(options.keys);
    this.sending = sendingKey(this.ring, options.keyId);
    this.require = checkRequired(options.required ?? true);
  }

  get keyIds(): readonly string[] {
    return [...this.ring.keys()];
  }

  get keyId(): string {
    return this.sending.id;
  }

  get required(): boolean {
    return this.require;
  }

  get replayCacheEntries(): number {
    return this.cache.size;
  }

  configure(options: Partial<Pick<CryptoOptions, "keys" | "keyId" | "required">>): void {
    const ring = options.keys === undefined ? this.ring : keyRing(options.keys);
    // A new ring keeps the current sending key if it still holds it.
    const sending = sendingKey(ring, options.keyId ?? (ring.has(this.sending.id) ? this.sending.id : undefined));
    const required = checkRequired(options.required ?? this.require);
    this.ring = ring;
    this.sending = sending;
    this.require = required;
  }

  offer(metadata: Metadata | undefined, codec: MsgpackCodec): ProcessorOffer {
    const plaintext = codec.encode(metadata === undefined ? {} : { metadata });
    return { value: this.sealProof(this.sending, helloAad(), plaintext), sealsMetadata: true };
  }

  accept(offer: unknown, hello: Uint8Array, codec: MsgpackCodec): ProcessorAgreement | undefined {
    if (offer === undefined) {
      if (!this.require) return undefined;
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        "this server accepts only encrypted connections: the HELLO offers no crypto proof (configure the client with the crypto processor and a key the server has)",
      );
    }
    if (!(offer instanceof Uint8Array)) throw new RpcError(ErrorCode.PROTOCOL_ERROR, "malformed HELLO: processors.crypto should be binary");
    const { plaintext, entry } = this.openProof(helloAad(), offer, "the HELLO's crypto proof");
    const sealed = parseSealedHello(codec.decode(plaintext));
    return {
      kind: "crypto",
      answer: this.sealProof(entry, welcomeAad(hello), EMPTY),
      metadata: sealed.metadata ?? NO_METADATA,
      start: (transcript) => new CryptoRecords(this, entry, transcript),
    };
  }

  confirm(answer: unknown, hello: Uint8Array): ProcessorAgreement | undefined {
    if (answer === undefined) {
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        "the server did not accept encryption (it has no crypto processor); this client sends nothing in the clear",
      );
    }
    if (!(answer instanceof Uint8Array))
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, "malformed WELCOME: processors.crypto should be binary");
    const { entry } = this.openProof(welcomeAad(hello), answer, "the WELCOME's crypto proof");
    return { kind: "crypto", start: (transcript) => new CryptoRecords(this, entry, transcript) };
  }

  /** Seals a handshake proof's `plaintext` under `entry` with the associated-data context `aad`. */
  private sealProof(entry: KeyEntry, aad: Uint8Array, plaintext: Uint8Array): Buffer {
    return sealEnvelope(entry.key, entry.idBytes, aad, plaintext, Date.now());
  }

  /**
   * Opens a received handshake proof: key id, timestamp, replay and tag
   * checks, in that order, each failing with UNAUTHENTICATED naming `what`.
   * The nonce is remembered only once the tag has proved the proof
   * authentic, so forgeries cannot fill the replay cache.
   */
  private openProof(aad: Uint8Array, payload: Uint8Array, what: string): { plaintext: Buffer; entry: KeyEntry } {
    const header = readEnvelopeHeader(payload, what);
    const now = Date.now();
    const entry = this.checkHeader(header.keyId, header.timestamp, now, what);
    if (this.cache.has(header.nonceKey, now)) {
      throw new RpcError(ErrorCode.UNAUTHENTICATED, `${what} is a replay: its nonce was already seen within the last ${this.timeout} ms`);
    }
    const plaintext = openEnvelope(entry.key, aad, payload, header);
    if (plaintext === undefined) {
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `${what} failed authentication: it (or its frame header) was altered, or the sender's key "${header.keyId}" is not the same as this side's`,
      );
    }
    this.cache.remember(header.nonceKey, header.timestamp, now);
    return { plaintext, entry };
  }

  /**
   * The key named `keyId` in the current ring, once the timestamp is within
   * the window; throws UNAUTHENTICATED naming `what` otherwise. The ring is
   * looked up for every envelope, so a configure() applies at once.
   */
  checkHeader(keyId: string, timestamp: number, now: number, what: string, data?: Record<string, unknown>): KeyEntry {
    const entry = this.keyNamed(keyId, what, data);
    const skew = timestamp - now;
    if (skew > this.timeout || skew < -this.timeout) {
      const off = skew < 0 ? `${-skew} ms old` : `${skew} ms in the future`;
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `${what} has a timestamp ${off}, outside the ±${this.timeout} ms window (stale, replayed, or the clocks differ)`,
        { ...data, skew, window: this.timeout },
      );
    }
    return entry;
  }

  /** The key named `keyId` in the current ring; throws UNAUTHENTICATED naming `what` when there is none. */
  keyNamed(keyId: string, what: string, data?: Record<string, unknown>): KeyEntry {
    const entry = this.ring.get(keyId);
    if (entry === undefined) {
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `${what} is sealed under key id ${JSON.stringify(keyId)}, which this side does not have`,
        {
          ...data,
          keyId,
        },
      );
    }
    return entry;
  }
}

/**
 * One connection's record layer: seals this side's write batches into
 * numbered records and opens the peer's in order, both bound to the
 * connection's handshake and their direction.
 */
class CryptoRecords implements RecordTransform {
  readonly minRecordSize = MIN_RECORD_SIZE;
  readonly maxRecordSize = MAX_RECORD_SIZE;
  private readonly processor: Crypto;
  private readonly entry: KeyEntry;
  /** This side's record key (derived from the entry's shared key), for sealing. */
  private readonly sendKey: KeyObject;
  private readonly receiveDirection: number;
  private readonly binding: Buffer;
  /** The shared key the last received record named, and the record key derived from it (a ring rarely changes mid-connection). */
  private receiveEntry: KeyEntry | undefined;
  private receiveKey: KeyObject | undefined;
  /** Associated-data context of the next record sent; its sequence field is rewritten per record. */
  private readonly sendAad: Buffer;
  private readonly receiveAad: Buffer;
  private sendSequence = 0;
  private receiveSequence = 0;
  /** Who sends the records this side receives, for error messages. */
  private readonly peer: string;

  constructor(processor: Crypto, entry: KeyEntry, transcript: Transcript) {
    this.processor = processor;
    this.entry = entry;
    // Binding every record to both handshake frames ties it to this
    // connection (its WELCOME holds a random connection id and the server's
    // fresh proof) and detects a HELLO or WELCOME altered on the way.
    const binding = nodeCrypto().createHash("sha256").update(transcript.hello).update(transcript.welcome).digest();
    const client = transcript.role === "client";
    const sendDirection = client ? Direction.CLIENT_TO_SERVER : Direction.SERVER_TO_CLIENT;
    this.receiveDirection = client ? Direction.SERVER_TO_CLIENT : Direction.CLIENT_TO_SERVER;
    this.binding = binding;
    this.sendKey = recordKey(entry.key, binding, sendDirection);
    this.sendAad = recordAad(sendDirection, binding);
    this.receiveAad = recordAad(this.receiveDirection, binding);
    this.peer = client ? "the server" : "the client";
  }

  seal(chunks: readonly Uint8Array[]): Uint8Array[] {
    const now = Date.now();
    const out: Uint8Array[] = [];
    let parts: Uint8Array[] = [];
    let size = 0;
    for (let chunk of chunks) {
      // A batch past MAX_RECORD_PLAINTEXT is cut into several records, a
      // chunk straddling the cut going partly into each.
      while (size + chunk.length > MAX_RECORD_PLAINTEXT) {
        const take = MAX_RECORD_PLAINTEXT - size;
        parts.push(chunk.subarray(0, take));
        this.sealOne(parts, MAX_RECORD_PLAINTEXT, now, out);
        parts = [];
        size = 0;
        chunk = chunk.subarray(take);
      }
      if (chunk.length === 0) continue;
      parts.push(chunk);
      size += chunk.length;
    }
    if (size > 0) this.sealOne(parts, size, now, out);
    return out;
  }

  private sealOne(parts: readonly Uint8Array[], size: number, now: number, out: Uint8Array[]): void {
    setRecordSequence(this.sendAad, this.sendSequence++);
    sealRecord(this.sendKey, this.entry.idBytes, this.sendAad, parts, size, now, out);
  }

  /**
   * Key id and timestamp checks, then the tag, each failing with
   * UNAUTHENTICATED and the record's sequence number in `data`. No replay
   * cache: the sequence number in the associated data makes a record
   * authentic at one place in one connection's stream only.
   */
  open(body: Buffer): Buffer {
    const sequence = this.receiveSequence++;
    try {
      return this.openRecord(body, sequence);
    } catch (error) {
      // The first record is where a peer that does not speak records (a
      // plaintext frame after an encrypted handshake) ends up.
      if (sequence !== 0 || !(error instanceof RpcError)) throw error;
      throw new RpcError(error.code, `${error.message}; after an encrypted handshake everything must be sent in records`, error.data);
    }
  }

  private openRecord(body: Buffer, sequence: number): Buffer {
    const what = `record ${sequence} from ${this.peer}`;
    const header = readEnvelopeHeader(body, what);
    const plaintextLength = body.length - header.length - TAG_SIZE;
    if (plaintextLength > MAX_RECORD_PLAINTEXT) {
      // The length limit allows for a 255-byte key id; a shorter one leaves room the plaintext may not take.
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `${what} carries ${plaintextLength} bytes, more than the ${MAX_RECORD_PLAINTEXT} a record may hold`,
        { sequence, size: plaintextLength, limit: MAX_RECORD_PLAINTEXT },
      );
    }
    // The timestamp is not checked here (PROTOCOL.md §13.3): the handshake's
    // proofs are, and the sequence number refuses replays. Checking each
    // record against this side's clock dropped live connections whenever
    // this process stalled (a long synchronous task, a debugger, a VM
    // pause) or its clock stepped, by more than the window.
    const entry = this.processor.keyNamed(header.keyId, what, { sequence });
    if (entry !== this.receiveEntry) {
      this.receiveEntry = entry;
      this.receiveKey = recordKey(entry.key, this.binding, this.receiveDirection);
    }
    const plaintext = openEnvelope(this.receiveKey as KeyObject, setRecordSequence(this.receiveAad, sequence), body, header);
    if (plaintext === undefined) {
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `${what} failed authentication: it was altered, replayed, reordered, reflected or taken from another connection, or the sender's key ${JSON.stringify(header.keyId)} is not the same as this side's`,
        { sequence },
      );
    }
    return plaintext;
  }
}

/** The associated-data context of the HELLO proof: client to server, HELLO, flags 0, stream 0, no binding yet. */
function helloAad(): Buffer {
  return proofAad(Direction.CLIENT_TO_SERVER, FrameType.HELLO, 0, 0, ZERO_BINDING);
}

/** The associated-data context of the WELCOME proof: server to client, WELCOME, flags 0, stream 0, bound to the HELLO. */
function welcomeAad(hello: Uint8Array): Buffer {
  return proofAad(Direction.SERVER_TO_CLIENT, FrameType.WELCOME, 0, 0, nodeCrypto().createHash("sha256").update(hello).digest());
}

function keyRing(keys: unknown): ReadonlyMap<string, KeyEntry> {
  if (typeof keys !== "object" || keys === null || Array.isArray(keys)) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, "crypto keys must be an object of key id to 32-byte key");
  }
  const ring = new Map<string, KeyEntry>();
  for (const [id, key] of Object.entries(keys as Record<string, unknown>)) {
    const idBytes = Buffer.from(id, "utf8");
    if (idBytes.length === 0 || idBytes.length > MAX_KEY_ID_BYTES) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `crypto key id "${id}" must be 1 to ${MAX_KEY_ID_BYTES} bytes of UTF-8`);
    }
    if (!(key instanceof Uint8Array) || key.length !== 32) {
      const got = key instanceof Uint8Array ? `${key.length} bytes` : typeof key;
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `crypto key "${id}" must be 32 bytes (AES-256), got ${got}`);
    }
    ring.set(id, { id, idBytes, key: nodeCrypto().createSecretKey(Buffer.from(key)) });
  }
  if (ring.size === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, "crypto keys must hold at least one key");
  return ring;
}

function sendingKey(ring: ReadonlyMap<string, KeyEntry>, keyId: string | undefined): KeyEntry {
  if (keyId === undefined) return ring.values().next().value as KeyEntry;
  const entry = ring.get(keyId);
  if (entry === undefined) throw new RpcError(ErrorCode.INVALID_ARGUMENT, `crypto keyId "${String(keyId)}" is not one of the keys`);
  return entry;
}

function checkRequired(value: unknown): boolean {
  if (typeof value !== "boolean") throw new RpcError(ErrorCode.INVALID_ARGUMENT, `crypto required must be a boolean, got ${String(value)}`);
  return value;
}
