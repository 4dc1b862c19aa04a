import { FrameFlag, FrameType, frameTypeName } from "./frame.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

interface Partial {
  type: number;
  parts: Buffer[];
  size: number;
}

/**
 * Fragments of a message are kept as views of the chunks they came in
 * while the message is at most this large; past it they are copied. A
 * view keeps its socket chunk alive until the message is complete, and
 * holding a 4 MiB message's 64 chunks meant Node's next reads and the
 * joined message got new memory from the kernel instead of reused memory:
 * a median of 1,100 page faults per 4 MiB echo on the server instead of 9,
 * and 154 against 187 calls/s (6 alternating runs each). Copying costs more
 * user time but frees each chunk at once.
 */
const VIEWS_UP_TO = 256 * 1024;

/**
 * A view of a received chunk as the assembler keeps it: as it is when it is
 * at least half of its chunk's memory (a 64 KiB fragment of 64 KiB socket
 * reads), so the bytes are copied once, when the message is joined; else a
 * copy, as the view would keep all of the chunk alive for a few bytes.
 * Memory held is then at most twice the bytes counted against the limits.
 */
function kept(view: Buffer): Buffer {
  return view.length * 2 >= view.buffer.byteLength ? view : Buffer.from(view);
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
  // Both maps are made on first use: most connections never fragment, and
  // an idle one should not carry two empty hash tables.
  private partialMap: Map<number, Partial> | undefined;
  /**
   * Streams whose current message broke the size limit, with that message's
   * type; its fragments are dropped until its last one.
   */
  private discardingMap: Map<number, number> | undefined;
  private total = 0;
  private readonly options: MessageAssemblerOptions;

  constructor(options: MessageAssemblerOptions) {
    this.options = options;
  }

  /** Whether any stream has an incomplete message (the fast path skips the assembler otherwise). */
  get busy(): boolean {
    return (this.partialMap !== undefined && this.partialMap.size > 0) || (this.discardingMap !== undefined && this.discardingMap.size > 0);
  }

  private get partial(): Map<number, Partial> {
    return (this.partialMap ??= new Map());
  }

  private get discarding(): Map<number, number> {
    return (this.discardingMap ??= new Map());
  }

  /** Whether `streamId` is in the middle of a message. */
  has(streamId: number): boolean {
    return this.partialMap?.has(streamId) === true || this.discardingMap?.has(streamId) === true;
  }

  /**
   * Adds one frame. Returns the whole message once its last fragment is in,
   * `null` while more follow or while an oversized message is being dropped.
   * Throws RESOURCE_EXHAUSTED (with `data.streamId`), the first time only,
   * when a message outgrows maxMessageSize or would push all incomplete
   * messages past maxBufferedBytes; the rest of that message is dropped.
   * Throws PROTOCOL_ERROR when another type interrupts a fragmented message.
   */
  add(type: number, flags: number, streamId: number, payload: Buffer, owned = false): Buffer | null {
    return this.addBytes(type, flags, streamId, payload, payload.length, owned);
  }

  /**
   * {@link add} for a fragment given as views of the chunks it spans
   * (`length` bytes in all; see {@link FrameSink.onFragmentParts}): kept as
   * they are, so its bytes are copied once, when the message is joined.
   */
  addParts(type: number, flags: number, streamId: number, parts: readonly Buffer[], length: number): Buffer | null {
    return this.addBytes(type, flags, streamId, parts, length, false);
  }

  private addBytes(
    type: number,
    flags: number,
    streamId: number,
    bytes: Buffer | readonly Buffer[],
    length: number,
    owned: boolean,
  ): Buffer | null {
    const follows = (flags & FrameFlag.FOLLOWS) !== 0;
    const current = this.partialMap?.get(streamId)?.type ?? this.discardingMap?.get(streamId);
    if (current !== undefined && current !== type) {
      if (type !== FrameType.ERROR && type !== FrameType.CANCEL) {
        throw new RpcError(
          ErrorCode.PROTOCOL_ERROR,
          `${frameTypeName(type)} frame on stream ${streamId} interrupts a fragmented ${frameTypeName(current)} message`,
        );
      }
      // A sender that gives up on a stream mid-message cuts it off with ERROR
      // or CANCEL; the partial (or already dropped) message is void.
      this.forget(streamId);
    }
    if (this.discardingMap?.has(streamId) === true) {
      if (!follows) this.discardingMap.delete(streamId);
      return null;
    }
    const entry = this.partialMap?.get(streamId);
    const size = (entry?.size ?? 0) + length;
    // A whole message in one frame passes through as it is, within the size limit too.
    if (entry === undefined && !follows && size <= this.options.maxMessageSize) {
      return Array.isArray(bytes) ? Buffer.concat(bytes, length) : (bytes as Buffer);
    }
    if (size > this.options.maxMessageSize) {
      this.forget(streamId);
      if (follows) this.discarding.set(streamId, type);
      throw new RpcError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `${frameTypeName(type)} message on stream ${streamId} exceeds the maximum message size of ${this.options.maxMessageSize} bytes`,
        { streamId, limit: this.options.maxMessageSize },
      );
    }
    if (this.total + length > this.options.maxBufferedBytes) {
      // Fails the message that would cross the limit, not the connection: a
      // peer cannot know how many of its concurrent large messages fit.
      this.forget(streamId);
      if (follows) this.discarding.set(streamId, type);
      throw new RpcError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `${frameTypeName(type)} message on stream ${streamId} does not fit: incomplete messages on this connection would exceed the reassembly limit of ${this.options.maxBufferedBytes} bytes`,
        { streamId, limit: this.options.maxBufferedBytes },
      );
    }
    if (!follows) {
      const parts = (entry as Partial).parts;
      if (Array.isArray(bytes)) parts.push(...(bytes as readonly Buffer[]));
      else parts.push(bytes as Buffer);
      const whole = Buffer.concat(parts, size);
      this.forget(streamId);
      return whole;
    }
    this.total += length;
    let parts: Buffer[];
    if (entry === undefined) {
      parts = [];
      this.partial.set(streamId, { type, parts, size });
    } else {
      parts = entry.parts;
      entry.size = size;
    }
    if (!Array.isArray(bytes))
      parts.push(owned ? (bytes as Buffer) : size <= VIEWS_UP_TO ? kept(bytes as Buffer) : Buffer.from(bytes as Buffer));
    else if (size > VIEWS_UP_TO) parts.push(Buffer.concat(bytes as readonly Buffer[], length));
    else for (const part of bytes as readonly Buffer[]) parts.push(kept(part));
    return null;
  }

  /** Drops any incomplete (or being discarded) message of a stream (it was closed). */
  forget(streamId: number): void {
    this.discardingMap?.delete(streamId);
    const entry = this.partialMap?.get(streamId);
    if (entry === undefined) return;
    this.total -= entry.size;
    this.partial.delete(streamId);
  }

  /** Drops everything (the connection closed). */
  clear(): void {
    this.partialMap = undefined;
    this.discardingMap = undefined;
    this.total = 0;
  }
}
