import { FrameFlag } from "./frame.js";
import type { MsgpackCodec } from "./msgpack-codec.js";
import { ErrorCode, RpcError } from "./rpc-error.js";
import type { Metadata } from "./wire-messages.js";

/**
 * Processors change what a connection carries, on both ends of a connection
 * whose handshake agreed on them (PROTOCOL.md, "Processors"). There are two
 * kinds, at most one of each per side; their names are also their keys in
 * the HELLO and WELCOME `processors` maps:
 *
 * - compression works per message ({@link PayloadTransform}): a payload is
 *   compressed before it is fragmented into frames, and flagged COMPRESSED;
 * - crypto works per connection ({@link RecordTransform}): after the
 *   handshake each direction's byte stream of frames is cut into sealed
 *   records.
 *
 * So whatever order they are configured in, a message is compressed first
 * and then travels encrypted (compressing ciphertext would gain nothing).
 */
export type ProcessorKind = "compression" | "crypto";

/** One connection's per-message transform (compression), made by a processor once the handshake agreed on it. */
export interface PayloadTransform {
  /** The frame flag bit marking payloads it transformed ({@link FrameFlag.COMPRESSED}). */
  readonly flag: number;
  /** Most bytes it adds to a payload; 0 for one that only ever shrinks payloads. */
  readonly overhead: number;
  /**
   * Transforms an outgoing payload of a frame whose header will carry the
   * processing `flags` (this transform's own included). Returns undefined
   * to leave this payload as it is (its flag is then not set).
   */
  encode(type: number, flags: number, streamId: number, payload: Uint8Array): Uint8Array | undefined;
  /** Reverses {@link encode} on a received payload whose frame carried `flags`; throws an RpcError when it cannot. */
  decode(type: number, flags: number, streamId: number, payload: Buffer): Buffer;
}

/**
 * One connection's record layer (crypto), made once the handshake agreed
 * on it. From its switch point on, each direction's bytes are a sequence of
 * records, `recordLength:u32be` then a sealed body, whose plaintexts joined
 * are that direction's frames. The transform numbers the records it seals
 * and opens itself: they must be sealed, sent, received and opened in order.
 */
export interface RecordTransform {
  /** Smallest `recordLength` that can be a record. */
  readonly minRecordSize: number;
  /** Largest `recordLength` the peer may send; a longer one is refused before it is buffered. */
  readonly maxRecordSize: number;
  /**
   * Seals a write batch, `chunks` of outgoing frame bytes in order, into
   * records (several when the batch is large), each with its length prefix.
   * Returns the bytes to write, in order; a large record may come as
   * several chunks (its ciphertext is not copied into one buffer).
   */
  seal(chunks: readonly Uint8Array[]): Uint8Array[];
  /**
   * Opens the next record received, given its body (the bytes after its
   * length prefix); returns its plaintext, the next slice of the peer's
   * frames. Throws an RpcError (UNAUTHENTICATED) when it is not authentic.
   * The plaintext is the connection's from then on: it may keep views of it
   * (fragments of a message being reassembled), so the transform must not
   * write to that memory again; `body` is the transform's to keep or not.
   */
  open(body: Buffer): Buffer;
}

/** What a processor's transform may depend on, known once both handshake frames have passed. */
export interface Transcript {
  /** Which end this is. */
  readonly role: "client" | "server";
  /** The HELLO payload, byte for byte as sent. */
  readonly hello: Uint8Array;
  /** The WELCOME payload, byte for byte as sent. */
  readonly welcome: Uint8Array;
  /** This side's own maxMessageSize, which bounds a decompressed message too. */
  readonly maxMessageSize: number;
}

/** A processor's offer for the HELLO. */
export interface ProcessorOffer {
  /** The value of HELLO `processors[kind]`. */
  readonly value: unknown;
  /** Whether the offer carries the connection metadata sealed, so HELLO must not carry it in the clear. */
  readonly sealsMetadata?: boolean;
}

/** What one processor agreed on in a handshake. */
export interface ProcessorAgreement {
  readonly kind: ProcessorKind;
  /** Server side: the value of WELCOME `processors[kind]`. */
  readonly answer?: unknown;
  /** Server side: the connection metadata the offer carried sealed. */
  readonly metadata?: Metadata;
  /** Makes the connection's transform once both handshake payloads are known: a record transform for crypto, a payload transform for compression. */
  start(transcript: Transcript): PayloadTransform | RecordTransform;
}

/**
 * A processor as configured on a server or client (`processors: [crypto(...),
 * compression(...)]`): it takes part in the handshake and makes each
 * connection's {@link PayloadTransform} or {@link RecordTransform}. Built-in: `crypto()` and
 * `compression()` from `rapt/plugin`.
 */
export interface Processor {
  readonly kind: ProcessorKind;
  /** Client side: what to offer in HELLO; `metadata` is the connection metadata, which an offer may seal. */
  offer(metadata: Metadata | undefined, codec: MsgpackCodec): ProcessorOffer;
  /**
   * Server side: answers the client's offer (undefined when it made none).
   * Returns undefined to leave this processor out of the connection; throws
   * an RpcError to refuse the handshake. `hello` is the HELLO payload.
   */
  accept(offer: unknown, hello: Uint8Array, codec: MsgpackCodec): ProcessorAgreement | undefined;
  /**
   * Client side: checks the server's answer (undefined when it gave none)
   * to this side's offer in `hello`. Returns undefined to go on without
   * this processor; throws an RpcError to fail the handshake.
   */
  confirm(answer: unknown, hello: Uint8Array): ProcessorAgreement | undefined;
}

const KINDS: readonly ProcessorKind[] = ["compression", "crypto"];

/** Checks a `processors` option: an array of processors, at most one of each kind. Throws INVALID_ARGUMENT. */
export function checkProcessors(value: unknown, what: string): readonly Processor[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${what} must be an array of processors`);
  const seen = new Set<string>();
  for (const item of value as unknown[]) {
    const processor = item as Partial<Processor> | null;
    if (
      typeof processor !== "object" ||
      processor === null ||
      !KINDS.includes(processor.kind as ProcessorKind) ||
      typeof processor.offer !== "function" ||
      typeof processor.accept !== "function" ||
      typeof processor.confirm !== "function"
    ) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${what}: each entry must be a processor such as crypto() or compression()`);
    }
    if (seen.has(processor.kind as string)) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${what}: more than one ${String(processor.kind)} processor`);
    }
    seen.add(processor.kind as string);
  }
  return [...(value as Processor[])];
}

/** Client side: the HELLO `processors` map (undefined for none) and the metadata to send in the clear. */
export function offerProcessors(
  processors: readonly Processor[],
  metadata: Metadata | undefined,
  codec: MsgpackCodec,
): { offers: Record<string, unknown> | undefined; metadata: Metadata | undefined } {
  if (processors.length === 0) return { offers: undefined, metadata };
  const offers: Record<string, unknown> = {};
  let clear = metadata;
  for (const processor of processors) {
    const offer = processor.offer(metadata, codec);
    offers[processor.kind] = offer.value;
    if (offer.sealsMetadata === true) clear = undefined;
  }
  return { offers, metadata: clear };
}

/** What a server agreed on in a handshake. */
export interface AcceptedProcessors {
  /** The WELCOME `processors` map, or undefined when nothing was agreed. */
  readonly answers: Record<string, unknown> | undefined;
  /** Connection metadata a processor unsealed, if any. */
  readonly metadata: Metadata | undefined;
  readonly agreements: readonly ProcessorAgreement[];
}

/**
 * Server side: answers the HELLO's `offers` with this server's processors.
 * Throws the RpcError that refuses the handshake (a crypto-only server
 * without a valid crypto offer, metadata in the clear next to a sealing offer).
 */
export function acceptProcessors(
  processors: readonly Processor[],
  offers: Readonly<Record<string, unknown>> | undefined,
  hello: Uint8Array,
  codec: MsgpackCodec,
  clearMetadata: boolean,
): AcceptedProcessors {
  if (processors.length === 0) return { answers: undefined, metadata: undefined, agreements: [] };
  const agreements: ProcessorAgreement[] = [];
  let answers: Record<string, unknown> | undefined;
  let metadata: Metadata | undefined;
  for (const processor of processors) {
    const agreement = processor.accept(offers?.[processor.kind], hello, codec);
    if (agreement === undefined) continue;
    agreements.push(agreement);
    (answers ??= {})[processor.kind] = agreement.answer;
    if (agreement.metadata !== undefined) {
      if (clearMetadata) {
        throw new RpcError(
          ErrorCode.PROTOCOL_ERROR,
          `HELLO carries metadata in the clear next to a ${processor.kind} offer, which carries it sealed; send it only sealed`,
        );
      }
      metadata = agreement.metadata;
    }
  }
  return { answers, metadata, agreements };
}

/**
 * Client side: checks the WELCOME's `answers` against this client's
 * processors. Throws PROTOCOL_ERROR for an answer to something not offered,
 * or what a processor throws (crypto: UNAUTHENTICATED when the server did
 * not accept encryption or could not prove it holds the key).
 */
export function confirmProcessors(
  processors: readonly Processor[],
  answers: Readonly<Record<string, unknown>> | undefined,
  hello: Uint8Array,
): ProcessorAgreement[] {
  if (answers !== undefined) {
    for (const kind of KINDS) {
      if (answers[kind] !== undefined && !processors.some((p) => p.kind === kind)) {
        throw new RpcError(ErrorCode.PROTOCOL_ERROR, `the server's WELCOME accepts the ${kind} processor, which this client did not offer`);
      }
    }
  }
  const agreements: ProcessorAgreement[] = [];
  for (const processor of processors) {
    const agreement = processor.confirm(answers?.[processor.kind], hello);
    if (agreement !== undefined) agreements.push(agreement);
  }
  return agreements;
}

/**
 * Whether the agreements turn the byte streams into records after the
 * handshake (crypto does). The server needs to know as soon as it has
 * accepted the HELLO: the client's records follow it directly.
 */
export function agreesOnRecords(agreements: readonly ProcessorAgreement[]): boolean {
  return agreements.some((agreement) => agreement.kind === "crypto");
}

/** Starts the agreed processors on a connection; undefined when none was agreed (the fast path). */
export function startProcessors(agreements: readonly ProcessorAgreement[], transcript: Transcript): ProcessorChain | undefined {
  if (agreements.length === 0) return undefined;
  let compression: PayloadTransform | undefined;
  let records: RecordTransform | undefined;
  for (const agreement of agreements) {
    const transform = agreement.start(transcript);
    if (agreement.kind === "crypto" && "seal" in transform) records = transform;
    else if (agreement.kind === "compression" && "flag" in transform && transform.flag === FrameFlag.COMPRESSED) compression = transform;
    else throw new RpcError(ErrorCode.INTERNAL, `the ${agreement.kind} processor made a transform of the wrong kind`);
  }
  return new ProcessorChain(compression, records);
}

/**
 * One connection's agreed processing: the per-message compression (on the
 * way out compress, on the way in decompress) and the record layer that
 * encrypts everything after the handshake. A connection without processors
 * has no chain at all.
 */
export class ProcessorChain {
  /** The processing flag bits agreed on (COMPRESSED or none): the only ones the peer may set. */
  readonly flags: number;
  /** Most bytes per-message processing adds to a payload. */
  readonly overhead: number;
  /** The record layer, when the handshake agreed on encryption. */
  readonly records: RecordTransform | undefined;
  /** The processing flags of the payload the last {@link encode} returned. */
  lastFlags = 0;
  private readonly compression: PayloadTransform | undefined;

  constructor(compression: PayloadTransform | undefined, records: RecordTransform | undefined) {
    this.compression = compression;
    this.records = records;
    this.flags = compression === undefined ? 0 : FrameFlag.COMPRESSED;
    this.overhead = compression?.overhead ?? 0;
  }

  /** Whether messages are processed one by one (compression): a connection without it takes the unprocessed fast paths. */
  get processesMessages(): boolean {
    return this.compression !== undefined;
  }

  /**
   * Processes an outgoing payload; its processing flags are then in
   * {@link lastFlags}. Returns `payload` itself when nothing applied.
   * Stream 0 is never compressed.
   */
  encode(type: number, streamId: number, payload: Uint8Array): Uint8Array {
    let flags = 0;
    if (this.compression !== undefined && streamId !== 0) {
      const compressed = this.compression.encode(type, FrameFlag.COMPRESSED, streamId, payload);
      if (compressed !== undefined) {
        payload = compressed;
        flags = FrameFlag.COMPRESSED;
      }
    }
    this.lastFlags = flags;
    return payload;
  }

  /** Inflates a received payload flagged COMPRESSED. Throws RESOURCE_EXHAUSTED past maxMessageSize, PROTOCOL_ERROR when malformed. */
  decompress(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
    if (this.compression === undefined) throw new RpcError(ErrorCode.PROTOCOL_ERROR, "COMPRESSED flag on a connection without compression");
    return this.compression.decode(type, flags, streamId, payload);
  }
}
