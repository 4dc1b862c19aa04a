import {
  Decoder,
  EXT_TIMESTAMP,
  Encoder,
  ExtensionCodec,
  decodeTimestampExtension,
  encodeTimestampExtension,
} from "@msgpack/msgpack/dist.esm/index.mjs";
import { NOT_PLAIN, PlainDecoder } from "./plain-decoder.js";
import { PlainEncoder } from "./plain-encoder.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

/** MessagePack extension type carrying a BigInt as its signed decimal digits (ASCII). */
export const EXT_BIGINT = 0x01;

/** Limits on decoding; they bound what hostile input can make the decoder allocate. */
export interface CodecLimits {
  /** Longest string, in bytes. Default 64 MiB (a connection uses its maxMessageSize). */
  maxStrLength?: number;
  /** Longest binary, in bytes. Default 64 MiB (a connection uses its maxMessageSize). */
  maxBinLength?: number;
  /** Most elements in one array. Default 1,000,000. */
  maxArrayLength?: number;
  /** Most entries in one map. Default 100,000. */
  maxMapLength?: number;
  /** Longest extension payload, in bytes. Default 1 KiB. */
  maxExtLength?: number;
  /** Deepest nesting of arrays and maps, decoding and encoding. Default 64. */
  maxDepth?: number;
}

/** The array length limit when none is configured. */
export const DEFAULT_MAX_ARRAY_LENGTH = 1_000_000;

/** Most decimal digits (sign not counted) a BigInt extension may carry. */
const MAX_BIGINT_DIGITS = 1000;
const BIGINT_TEXT = /^-?[0-9]{1,1000}$/;

/**
 * rapt's extension types only: an extension type it does not know is a
 * protocol error instead of an opaque `ExtData` object handed to the handler.
 */
class RaptExtensionCodec extends ExtensionCodec {
  override decode(data: Uint8Array, type: number, context: undefined): unknown {
    if (type !== EXT_BIGINT && type !== EXT_TIMESTAMP) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `unknown MessagePack extension type ${type}`);
    }
    return super.decode(data, type, context);
  }
}

function makeCodec(): ExtensionCodec {
  const codec = new RaptExtensionCodec();
  codec.register({
    type: EXT_TIMESTAMP,
    encode(value: unknown): Uint8Array | null {
      if (!(value instanceof Date)) return null;
      // An Invalid Date would otherwise be written as the epoch.
      if (Number.isNaN(value.getTime())) throw new RangeError("Invalid Date");
      return encodeTimestampExtension(value);
    },
    decode(data: Uint8Array): Date {
      const date = decodeTimestampExtension(data);
      if (Number.isNaN(date.getTime())) throw new RpcError(ErrorCode.PROTOCOL_ERROR, "timestamp outside the range of a Date");
      return date;
    },
  });
  codec.register({
    type: EXT_BIGINT,
    encode(value: unknown): Uint8Array | null {
      if (typeof value !== "bigint") return null;
      const text = value.toString(10);
      const digits = value < 0n ? text.length - 1 : text.length;
      // The peer rejects more; fail here, where the value comes from.
      if (digits > MAX_BIGINT_DIGITS) throw new RangeError(`BigInt of ${digits} digits exceeds the ${MAX_BIGINT_DIGITS}-digit limit`);
      return Buffer.from(text, "latin1");
    },
    decode(data: Uint8Array): bigint {
      const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("latin1");
      if (!BIGINT_TEXT.test(text)) {
        throw new RpcError(ErrorCode.PROTOCOL_ERROR, `malformed BigInt extension ${JSON.stringify(text.slice(0, 40))}`);
      }
      return BigInt(text);
    },
  });
  return codec;
}

interface DecoderStackPool {
  stackHeadPosition: number;
  getUninitializedStateFromPool(): unknown;
}

/**
 * @msgpack/msgpack decodes nesting with its own stack and has no depth limit;
 * a value nested 100,000 deep would then overflow the call stack of whatever
 * walks it next (a validator, the handler, the encoder). The limit is added
 * where the decoder pushes a level. The pinned version's stack pool is checked
 * for at construction and by a test, so an upgrade that changes it fails loudly.
 */
function limitDepth(decoder: Decoder, maxDepth: number, depth: { extra: number }): void {
  const pool = (decoder as unknown as { stack?: DecoderStackPool }).stack;
  if (pool === undefined || typeof pool.getUninitializedStateFromPool !== "function") {
    throw new Error("rapt: unsupported @msgpack/msgpack version (no decoder stack pool to limit depth)");
  }
  const push = pool.getUninitializedStateFromPool.bind(pool);
  pool.getUninitializedStateFromPool = () => {
    if (pool.stackHeadPosition + 1 >= maxDepth + depth.extra) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `MessagePack value nested deeper than ${maxDepth} levels`);
    }
    return push();
  };
}

const MAX_SHARED_CODECS = 16;
const sharedCodecs = new Map<string, MsgpackCodec>();

/**
 * A codec with these limits, shared by every connection that asks for the
 * same ones. Sharing is safe because the runtime is single-threaded and every
 * user of {@link MsgpackCodec.encodeShared} copies the result before it
 * yields; it saves each idle connection its own encoder buffer, decoder and
 * extension tables (about 4 KB). A few distinct limit sets are kept; past
 * that, codecs are made per call (a program building connections with ever
 * new limits does not grow this cache).
 */
export function sharedCodec(limits: CodecLimits = {}): MsgpackCodec {
  const key = `${limits.maxStrLength}/${limits.maxBinLength}/${limits.maxArrayLength}/${limits.maxMapLength}/${limits.maxExtLength}/${limits.maxDepth}`;
  let codec = sharedCodecs.get(key);
  if (codec === undefined) {
    codec = new MsgpackCodec(limits);
    if (sharedCodecs.size < MAX_SHARED_CODECS) sharedCodecs.set(key, codec);
  }
  return codec;
}

/**
 * One reusable MessagePack encoder/decoder pair with rapt's extension types
 * (Date as the standard timestamp extension -1, BigInt as {@link EXT_BIGINT})
 * and decode limits. Connections share instances (see {@link sharedCodec}), so
 * {@link encodeShared}'s result must be copied before anything else encodes.
 */
export class MsgpackCodec {
  private readonly encoder: Encoder;
  /** Plain values, most of what is sent, take this faster path; the rest go to `encoder`. */
  private readonly plain: PlainEncoder;
  private readonly decoder: Decoder;
  /** Plain data, most of what arrives, is decoded here; the rest (and every error) by `decoder`. */
  private readonly plainDecoder: PlainDecoder;
  /** Levels allowed past the depth limit: 1 while decoding an ITEMS array, whose items have the full depth. */
  private readonly depth = { extra: 0 };

  constructor(limits: CodecLimits = {}) {
    const extensionCodec = makeCodec();
    const maxDepth = limits.maxDepth ?? 64;
    // The encoder counts the leaf inside the deepest array or map as a level,
    // the decoder only the containers: +1 makes both accept the same values.
    this.encoder = new Encoder({ extensionCodec, maxDepth: maxDepth + 1, ignoreUndefined: false });
    this.plain = new PlainEncoder(maxDepth + 1);
    const decodeLimits = {
      maxStrLength: limits.maxStrLength ?? 64 * 1024 * 1024,
      maxBinLength: limits.maxBinLength ?? 64 * 1024 * 1024,
      maxArrayLength: limits.maxArrayLength ?? DEFAULT_MAX_ARRAY_LENGTH,
      maxMapLength: limits.maxMapLength ?? 100_000,
    };
    this.decoder = new Decoder({ extensionCodec, ...decodeLimits, maxExtLength: limits.maxExtLength ?? 1024 });
    this.plainDecoder = new PlainDecoder({ ...decodeLimits, maxDepth });
    limitDepth(this.decoder, maxDepth, this.depth);
  }

  /**
   * Encodes into the encoder's own buffer and returns a view of it, valid only
   * until the next encode: copy it before encoding again. Throws an
   * {@link RpcError} INVALID_ARGUMENT for values MessagePack cannot carry.
   */
  encodeShared(value: unknown): Uint8Array {
    try {
      // A getter that throws fails the encoding like any unencodable value.
      return this.plain.encode(value) ?? this.encoder.encodeSharedRef(value);
    } catch (error) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `value cannot be encoded as MessagePack: ${(error as Error).message}`);
    }
  }

  /**
   * Encodes a plain value (see {@link PlainEncoder}) straight into `target`
   * from `offset`, before `end`; returns the bytes written, or -1 for a value
   * that is not plain data or does not fit (use {@link encodeShared} then).
   */
  encodeInto(value: unknown, target: Buffer, offset: number, end: number): number {
    try {
      return this.plain.encodeInto(value, target, offset, end);
    } catch (error) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `value cannot be encoded as MessagePack: ${(error as Error).message}`);
    }
  }

  /**
   * Hands over the memory of the large encoding `view` (what the last
   * {@link encodeShared} returned), see {@link PlainEncoder.release}: true
   * when the caller now owns the whole of `view.buffer`, which came from
   * the process's BulkBufferPool and goes back there once sent. False otherwise.
   */
  release(view: Uint8Array): boolean {
    return this.plain.release(view);
  }

  /** Encodes into a new buffer the caller owns. */
  encode(value: unknown): Buffer {
    const shared = this.encodeShared(value);
    return Buffer.from(shared);
  }

  /**
   * Decodes an ITEMS payload: one MessagePack array of 1 to `maxItems`
   * values filling `bytes`, each an item. The count is read from the array
   * header and checked before anything is decoded; the array itself does not
   * count against the depth limit, so each item may nest as deep as a value
   * sent alone. Throws an {@link RpcError} PROTOCOL_ERROR naming the problem.
   */
  decodeItems(bytes: Uint8Array, maxItems: number): unknown[] {
    const count = itemsCount(bytes);
    if (count === 0) throw new RpcError(ErrorCode.PROTOCOL_ERROR, "malformed ITEMS: the array is empty");
    if (count > maxItems) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `ITEMS of ${count} items exceeds maxBatchItems (${maxItems})`, {
        count,
        limit: maxItems,
      });
    }
    const plain = this.plainDecoder.decode(bytes, 1);
    if (plain !== NOT_PLAIN) return plain as unknown[];
    this.depth.extra = 1;
    try {
      return this.generalDecode(bytes) as unknown[];
    } finally {
      this.depth.extra = 0;
    }
  }

  /**
   * Decodes exactly one value filling `bytes`. Throws an {@link RpcError}
   * PROTOCOL_ERROR naming the problem on malformed input or a broken limit.
   */
  decode(bytes: Uint8Array): unknown {
    const plain = this.plainDecoder.decode(bytes);
    return plain === NOT_PLAIN ? this.generalDecode(bytes) : plain;
  }

  /** @msgpack/msgpack's decode: extensions, 64-bit integers, and the error for anything malformed or past a limit. */
  private generalDecode(bytes: Uint8Array): unknown {
    try {
      return this.decoder.decode(bytes);
    } catch (error) {
      if (error instanceof RpcError) throw error;
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `malformed MessagePack: ${(error as Error).message}`);
    }
  }
}

/** The element count of the MessagePack array an ITEMS payload must be, from its header alone. */
function itemsCount(bytes: Uint8Array): number {
  const head = bytes.length === 0 ? -1 : (bytes[0] as number);
  if (head >= 0x90 && head <= 0x9f) return head & 0x0f;
  if (head === 0xdc && bytes.length >= 3) return ((bytes[1] as number) << 8) | (bytes[2] as number);
  if (head === 0xdd && bytes.length >= 5) {
    return (((bytes[1] as number) << 24) >>> 0) + (((bytes[2] as number) << 16) | ((bytes[3] as number) << 8) | (bytes[4] as number));
  }
  throw new RpcError(ErrorCode.PROTOCOL_ERROR, "malformed ITEMS: the payload is not a MessagePack array");
}
