import { type KeyObject, createHash, createSecretKey } from "node:crypto";
import {
  BINDING_SIZE,
  Direction,
  MAX_KEY_ID_BYTES,
  aadPrefix,
  envelopeOverhead,
  openEnvelope,
  readEnvelopeHeader,
  sealEnvelope,
  setAadFrame,
} from "../protocol/crypto-envelope.js";
import { FrameFlag, FrameType, PROCESSING_FLAGS, frameTypeName } from "../protocol/frame.js";
import type { MsgpackCodec } from "../protocol/msgpack-codec.js";
import type { PayloadTransform, Processor, ProcessorAgreement, ProcessorOffer, Transcript } from "../protocol/processor.js";
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
   * How far, in ms, a payload's timestamp may be from the receiver's clock,
   * either way. Default 30,000. Nonces are remembered for this long.
   */
  timeout?: number;
  /**
   * Most nonces remembered for replay detection (one per message received
   * within `timeout`); past it, messages are refused with RESOURCE_EXHAUSTED
   * rather than the memory growing. About 70 bytes each. Default 1,000,000.
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
  /** Nonces held for replay detection now. */
  readonly replayCacheEntries: number;
  /**
   * Replaces the key ring, the sending key or `required`, at once for new
   * connections and, for the ring, for every message received from now on.
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
 * The crypto processor: AES-256-GCM over every payload of a connection, in
 * both directions, stream 0 included (PROTOCOL.md, "Processors"). Each
 * payload is sealed with a fresh random nonce, a timestamp and the key id,
 * and authenticated together with its frame header, its direction and the
 * connection's handshake. A receiver refuses, with UNAUTHENTICATED, a
 * payload under an unknown key id, one that was altered, one whose
 * timestamp is off by more than `timeout`, and one whose nonce it has seen
 * already (a replay); the connection is then closed and no handler runs.
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
 * cache, shared by the connections that use it.
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
    return { value: this.seal(this.sending, helloPrefix(), plaintext), sealsMetadata: true };
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
    const { plaintext, entry } = this.open(helloPrefix(), offer, "the HELLO's crypto proof");
    const sealed = parseSealedHello(codec.decode(plaintext));
    return {
      kind: "crypto",
      answer: this.seal(entry, welcomePrefix(hello), EMPTY),
      metadata: sealed.metadata ?? NO_METADATA,
      start: (transcript) => new CryptoTransform(this, entry, transcript),
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
    const { entry } = this.open(welcomePrefix(hello), answer, "the WELCOME's crypto proof");
    return { kind: "crypto", start: (transcript) => new CryptoTransform(this, entry, transcript) };
  }

  /** Seals `plaintext` under `entry` with the associated-data context `prefix`. */
  seal(entry: KeyEntry, prefix: Uint8Array, plaintext: Uint8Array): Buffer {
    return sealEnvelope(entry.key, entry.idBytes, prefix, plaintext, Date.now());
  }

  /**
   * Opens a received envelope: key id, timestamp, replay and tag checks, in
   * that order, each failing with UNAUTHENTICATED naming `what`. The nonce is
   * remembered only once the tag has proved the payload authentic, so
   * forgeries cannot fill the replay cache.
   */
  open(prefix: Uint8Array, payload: Uint8Array, what: string): { plaintext: Buffer; entry: KeyEntry } {
    const header = readEnvelopeHeader(payload, what);
    const entry = this.ring.get(header.keyId);
    if (entry === undefined) {
      throw new RpcError(ErrorCode.UNAUTHENTICATED, `${what} is sealed under key id "${header.keyId}", which this side does not have`, {
        keyId: header.keyId,
      });
    }
    const now = Date.now();
    const skew = header.timestamp - now;
    if (skew > this.timeout || skew < -this.timeout) {
      const off = skew < 0 ? `${-skew} ms old` : `${skew} ms in the future`;
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `${what} has a timestamp ${off}, outside the ±${this.timeout} ms window (stale, replayed, or the clocks differ)`,
        { skew, window: this.timeout },
      );
    }
    if (this.cache.has(header.nonceKey, now)) {
      throw new RpcError(ErrorCode.UNAUTHENTICATED, `${what} is a replay: its nonce was already seen within the last ${this.timeout} ms`);
    }
    const plaintext = openEnvelope(entry.key, prefix, payload, header, what);
    this.cache.remember(header.nonceKey, header.timestamp, now);
    return { plaintext, entry };
  }
}

/** One connection's sealing and opening, bound to its handshake and the two directions. */
class CryptoTransform implements PayloadTransform {
  readonly flag = FrameFlag.ENCRYPTED;
  readonly overhead: number;
  private readonly processor: Crypto;
  private readonly entry: KeyEntry;
  private readonly sendPrefix: Buffer;
  private readonly receivePrefix: Buffer;

  constructor(processor: Crypto, entry: KeyEntry, transcript: Transcript) {
    this.processor = processor;
    this.entry = entry;
    this.overhead = envelopeOverhead(entry.idBytes.length);
    // Binding every payload to both handshake frames ties it to this
    // connection (its WELCOME holds a random connection id and the server's
    // fresh proof) and detects a HELLO or WELCOME altered on the way.
    const binding = createHash("sha256").update(transcript.hello).update(transcript.welcome).digest();
    const client = transcript.role === "client";
    this.sendPrefix = aadPrefix(client ? Direction.CLIENT_TO_SERVER : Direction.SERVER_TO_CLIENT, binding);
    this.receivePrefix = aadPrefix(client ? Direction.SERVER_TO_CLIENT : Direction.CLIENT_TO_SERVER, binding);
  }

  encode(type: number, flags: number, streamId: number, payload: Uint8Array): Uint8Array {
    return this.processor.seal(this.entry, setAadFrame(this.sendPrefix, type, flags & PROCESSING_FLAGS, streamId), payload);
  }

  decode(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
    const prefix = setAadFrame(this.receivePrefix, type, flags & PROCESSING_FLAGS, streamId);
    const what = `encrypted ${frameTypeName(type)} ${streamId === 0 ? "frame" : "message"} on stream ${streamId}`;
    return this.processor.open(prefix, payload, what).plaintext;
  }
}

/** The associated-data context of the HELLO proof: client to server, HELLO, stream 0, no binding yet. */
function helloPrefix(): Buffer {
  return setAadFrame(aadPrefix(Direction.CLIENT_TO_SERVER, ZERO_BINDING), FrameType.HELLO, 0, 0);
}

/** The associated-data context of the WELCOME proof: server to client, WELCOME, stream 0, bound to the HELLO. */
function welcomePrefix(hello: Uint8Array): Buffer {
  const binding = createHash("sha256").update(hello).digest();
  return setAadFrame(aadPrefix(Direction.SERVER_TO_CLIENT, binding), FrameType.WELCOME, 0, 0);
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
    ring.set(id, { id, idBytes, key: createSecretKey(Buffer.from(key)) });
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
