import { FrameFlag, FrameType, frameTypeName } from "./frame.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

interface Partial {
  type: number;
  parts: Buffer[];
  size: number;
}

/** Limits of a {@link MessageAssembler}. */
export interface MessageAssemblerOptions {
  /** Largest reassembled message. */
  maxMessageSize: number;
  /** Most bytes held for all incomplete messages of one connection together. */
  maxBufferedBytes: number;
}

/**
 * Joins the fragments of messages (frames flagged FOLLOWS) per stream, within
 * a per-message and a per-connection byte limit.
 */
export class MessageAssembler {
  private readonly partial = new Map<number, Partial>();
  /** Streams whose current message broke the size limit; their fragments are dropped until its last one. */
  private readonly discarding = new Set<number>();
  private total = 0;
  private readonly options: MessageAssemblerOptions;

  constructor(options: MessageAssemblerOptions) {
    this.options = options;
  }

  /** Whether any stream has an incomplete message (the fast path skips the assembler otherwise). */
  get busy(): boolean {
    return this.partial.size > 0 || this.discarding.size > 0;
  }

  /** Whether `streamId` is in the middle of a message. */
  has(streamId: number): boolean {
    return this.partial.has(streamId) || this.discarding.has(streamId);
  }

  /**
   * Adds one frame. Returns the whole message once its last fragment is in,
   * `null` while more follow or while an oversized message is being dropped.
   * Throws RESOURCE_EXHAUSTED (with `data.streamId`) when a message outgrows
   * maxMessageSize, the first time only; PROTOCOL_ERROR when the connection
   * as a whole must fail.
   */
  add(type: number, flags: number, streamId: number, payload: Buffer): Buffer | null {
    const follows = (flags & FrameFlag.FOLLOWS) !== 0;
    if (this.discarding.has(streamId)) {
      if (!follows) this.discarding.delete(streamId);
      return null;
    }
    let entry = this.partial.get(streamId);
    if (entry === undefined) {
      if (!follows) return payload;
      entry = { type, parts: [], size: 0 };
      this.partial.set(streamId, entry);
    } else if (entry.type !== type && (type === FrameType.ERROR || type === FrameType.CANCEL)) {
      // A sender that gives up on a stream mid-message cuts it off with ERROR
      // or CANCEL; the partial message is void.
      this.forget(streamId);
      return this.add(type, flags, streamId, payload);
    } else if (entry.type !== type) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `${frameTypeName(type)} frame on stream ${streamId} interrupts a fragmented ${frameTypeName(entry.type)} message`,
      );
    }
    const size = entry.size + payload.length;
    if (size > this.options.maxMessageSize) {
      this.forget(streamId);
      if (follows) this.discarding.add(streamId);
      throw new RpcError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `${frameTypeName(type)} message on stream ${streamId} exceeds the maximum message size of ${this.options.maxMessageSize} bytes`,
        { streamId, limit: this.options.maxMessageSize },
      );
    }
    if (this.total + payload.length > this.options.maxBufferedBytes) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `incomplete messages exceed the connection's reassembly limit of ${this.options.maxBufferedBytes} bytes`,
      );
    }
    // Own the bytes: a view would keep a whole socket chunk alive.
    entry.parts.push(Buffer.from(payload));
    entry.size = size;
    this.total += payload.length;
    if (follows) return null;
    this.forget(streamId);
    return entry.parts.length === 1 ? (entry.parts[0] as Buffer) : Buffer.concat(entry.parts, size);
  }

  /** Drops any incomplete message of a stream (it was closed). */
  forget(streamId: number): void {
    const entry = this.partial.get(streamId);
    if (entry === undefined) return;
    this.total -= entry.size;
    this.partial.delete(streamId);
  }

  /** Drops everything (the connection closed). */
  clear(): void {
    this.partial.clear();
    this.discarding.clear();
    this.total = 0;
  }
}
