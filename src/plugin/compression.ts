import { constants as bufferConstants } from "node:buffer";
import { FrameFlag, frameTypeName } from "../protocol/frame.js";
import { nodeZlib } from "../protocol/lazy-builtins.js";
import type { PayloadTransform, Processor, ProcessorAgreement, ProcessorOffer, Transcript } from "../protocol/processor.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { checkCount } from "./option-checks.js";

/** The one compression algorithm of this version: raw DEFLATE (RFC 1951, no zlib or gzip wrapper). */
export const DEFLATE_RAW = "deflate-raw";

/** Options of {@link compression}. */
export interface CompressionOptions {
  /** Messages of at least this many bytes are compressed (and sent so only if that made them smaller). Default 1024. */
  threshold?: number;
  /** zlib compression level, 1 (fastest) to 9 (smallest). Default 1. */
  level?: number;
}

/** The processor {@link compression} returns. */
export interface CompressionProcessor extends Processor {
  readonly kind: "compression";
  /** The options in force. */
  readonly options: Readonly<Required<CompressionOptions>>;
}

/**
 * The compression processor: raw DEFLATE (node:zlib) on messages of at
 * least `threshold` bytes, when both sides configure it (negotiated in the
 * handshake; a side without it simply gets no compression). Each side
 * decides for itself what it compresses; both accept compressed messages
 * once agreed. Runs before encryption when both are on.
 *
 * Compression and decompression are synchronous (zlib's `*Sync`
 * functions): a message is processed where it is sent, so messages keep
 * their order without a queue; at level 1 deflate handles about 70 MB/s and
 * inflate about 150 MB/s on one core, which bounds the pause a large message
 * causes. A decompressed message is limited to the receiver's
 * `maxMessageSize`: inflating stops there, and the message fails with
 * RESOURCE_EXHAUSTED, so a small "zip bomb" cannot allocate more.
 *
 * ```ts
 * new Server({ processors: [compression({ threshold: 4096 })] });
 * new Client(address, { processors: [compression()] });
 * ```
 */
export function compression(options: CompressionOptions = {}): CompressionProcessor {
  const current: Readonly<Required<CompressionOptions>> = Object.freeze({
    threshold: checkCount(options.threshold ?? 1024, "compression threshold"),
    level: checkLevel(options.level ?? 1),
  });
  const agreement: ProcessorAgreement = {
    kind: "compression",
    answer: DEFLATE_RAW,
    start: (transcript) => new DeflateTransform(current, transcript),
  };
  return {
    kind: "compression",
    options: current,
    offer(): ProcessorOffer {
      return { value: [DEFLATE_RAW] };
    },
    accept(offer: unknown): ProcessorAgreement | undefined {
      return Array.isArray(offer) && offer.includes(DEFLATE_RAW) ? agreement : undefined;
    },
    confirm(answer: unknown): ProcessorAgreement | undefined {
      if (answer === undefined) return undefined;
      if (answer !== DEFLATE_RAW) {
        throw new RpcError(
          ErrorCode.PROTOCOL_ERROR,
          `the server chose compression ${JSON.stringify(answer)}, which this client did not offer`,
        );
      }
      return agreement;
    },
  };
}

/** One connection's compression: the sender's threshold and level, the receiver's size limit. */
class DeflateTransform implements PayloadTransform {
  readonly flag = FrameFlag.COMPRESSED;
  readonly overhead = 0;
  private readonly threshold: number;
  private readonly level: number;
  private readonly maxOutputLength: number;

  constructor(options: Readonly<Required<CompressionOptions>>, transcript: Transcript) {
    this.threshold = options.threshold;
    this.level = options.level;
    this.maxOutputLength = Math.min(transcript.maxMessageSize, bufferConstants.MAX_LENGTH);
  }

  encode(_type: number, _flags: number, _streamId: number, payload: Uint8Array): Uint8Array | undefined {
    if (payload.length < this.threshold) return undefined;
    const compressed = nodeZlib().deflateRawSync(payload, { level: this.level });
    // Incompressible data (already compressed, encrypted, random) goes as it is.
    return compressed.length < payload.length ? compressed : undefined;
  }

  decode(type: number, _flags: number, streamId: number, payload: Buffer): Buffer {
    try {
      return nodeZlib().inflateRawSync(payload, { maxOutputLength: this.maxOutputLength });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
        throw new RpcError(
          ErrorCode.RESOURCE_EXHAUSTED,
          `compressed ${frameTypeName(type)} message on stream ${streamId} exceeds the maximum message size of ${this.maxOutputLength} bytes once decompressed`,
          { streamId, limit: this.maxOutputLength },
        );
      }
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `compressed ${frameTypeName(type)} message on stream ${streamId} cannot be decompressed: ${(error as Error).message}`,
      );
    }
  }
}

function checkLevel(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 9) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `compression level must be an integer from 1 to 9, got ${String(value)}`);
  }
  return value;
}
