import { FRAME_HEADER_SIZE, FrameFlag, KNOWN_FLAGS, MAX_FRAME_TYPE, frameTypeName } from "./frame.js";
import { ChunkList } from "./chunk-list.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

/** Receives each complete frame from a {@link FrameDecoder}. */
export interface FrameSink {
  /**
   * `payload` may be a view into a chunk given to {@link FrameDecoder.push}.
   * The decoder never writes to a chunk, and whoever pushes one must not
   * either (Node reads each socket chunk into memory of its own), so a sink
   * may keep the view; but a view of a small part of a chunk keeps all of
   * it alive: copy such a view if you keep it. `owned` is true when the
   * decoder copied the payload into a buffer of its own (the frame spanned
   * chunks).
   */
  onFrame(type: number, flags: number, streamId: number, payload: Buffer, owned?: boolean): void;
  /**
   * Optional: a fragment (FOLLOWS set) whose payload spans chunks, as views
   * of them in order (`length` bytes in all) instead of a copy joining them.
   * A sink that joins a message's fragments anyway then copies each byte
   * once. The views are like `onFrame`'s payload. Without this method,
   * `onFrame` gets such fragments copied into one buffer.
   */
  onFragmentParts?(type: number, flags: number, streamId: number, parts: Buffer[], length: number): void;
}

/** Options of a {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest accepted payload, checked from the length prefix before any body is buffered. */
  maxFrameSize: number;
  /**
   * Flag bits accepted in a header; any other bit is a protocol error.
   * Default FOLLOWS only: the processing bits need a handshake that agreed on them.
   */
  allowedFlags?: number;
  /**
   * How many chunks a frame may arrive in before the decoder stops keeping a
   * list of them and copies into one buffer of the frame's size. Default 64.
   */
  maxBufferedParts?: number;
}

const STATE_HEADER = 0;
const STATE_PAYLOAD = 1;
const EMPTY = Buffer.alloc(0);

/**
 * Incremental frame parser: an explicit two-state machine (header, payload)
 * over a list of socket chunks. Correct under any split or coalescing of TCP
 * chunks; each byte is copied at most twice, and a frame that lies inside one
 * chunk is handed out as a view without copying.
 */
export class FrameDecoder {
  /** Largest accepted payload; may be changed between chunks (after the handshake). */
  maxFrameSize: number;
  /** Flag bits accepted; may be widened between frames (after a handshake that negotiated processors). */
  allowedFlags: number;
  private readonly maxParts: number;
  private readonly sink: FrameSink;
  private state = STATE_HEADER;
  /** Bytes of an incomplete header or payload; made when a frame first straddles chunks (an idle connection's never does). */
  private held: ChunkList | undefined;
  private type = 0;
  private flags = 0;
  private streamId = 0;
  private length = 0;
  /** Set once a frame spanned more than maxParts chunks: the payload is copied in as it arrives. */
  private target: Buffer | null = null;
  private filled = 0;
  private stopped = false;
  /** Set by {@link handOff}: the bytes after the current frame belong to someone else. */
  private handingOff = false;
  /** What {@link handOff} left unparsed, collected for {@link push} to return; made only then. */
  private rest: Buffer[] | undefined;

  constructor(sink: FrameSink, options: FrameDecoderOptions) {
    this.sink = sink;
    this.maxFrameSize = options.maxFrameSize;
    this.allowedFlags = options.allowedFlags ?? FrameFlag.FOLLOWS;
    this.maxParts = options.maxBufferedParts ?? 64;
  }

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes(): number {
    return this.target === null ? (this.held?.length ?? 0) : this.filled;
  }

  /** Stops delivering frames (after a fatal error); later chunks are ignored. */
  stop(): void {
    this.stopped = true;
    this.held?.clear();
    this.target = null;
  }

  /**
   * Called by the sink while it handles a frame: that frame is the last this
   * decoder delivers, and the {@link push} under way returns the bytes after
   * it, unparsed. This is how a connection switches to records after an
   * encrypted handshake: the peer's first record may arrive in the same
   * socket chunk as its handshake frame.
   */
  handOff(): void {
    this.handingOff = true;
    this.stopped = true;
  }

  /**
   * Feeds one chunk. Throws an {@link RpcError} with code PROTOCOL_ERROR on a
   * malformed or oversized header; the decoder is unusable afterwards.
   * Returns undefined, except in the push during which the sink called
   * {@link handOff}: then the bytes after the last frame delivered (maybe
   * none), which this decoder will never look at.
   */
  push(chunk: Buffer): Buffer | undefined {
    if (this.stopped || chunk.length === 0) return undefined;
    this.deliver(chunk);
    if (!this.handingOff) return undefined;
    this.handingOff = false;
    const rest = this.rest ?? [];
    this.rest = undefined;
    this.stop();
    return rest.length === 1 ? (rest[0] as Buffer) : Buffer.concat(rest);
  }

  private deliver(chunk: Buffer): void {
    if (this.target !== null) {
      const need = this.length - this.filled;
      if (chunk.length < need) {
        chunk.copy(this.target, this.filled);
        this.filled += chunk.length;
        return;
      }
      chunk.copy(this.target, this.filled, 0, need);
      const payload = this.target;
      this.target = null;
      this.state = STATE_HEADER;
      this.sink.onFrame(this.type, this.flags, this.streamId, payload, true);
      if (chunk.length === need) return;
      chunk = chunk.subarray(need);
      if (this.handingOff) {
        (this.rest ??= []).push(chunk);
        return;
      }
    }
    const held = this.held;
    if (held === undefined || held.length === 0) this.parseChunk(chunk);
    else {
      held.push(chunk);
      this.drainParts(held);
    }
  }

  /** Fast path: nothing is buffered, so frames are read straight out of `chunk`. */
  private parseChunk(chunk: Buffer): void {
    let offset = 0;
    const end = chunk.length;
    while (!this.stopped) {
      if (this.state === STATE_HEADER) {
        if (end - offset < FRAME_HEADER_SIZE) break;
        this.readHeader(chunk, offset);
        offset += FRAME_HEADER_SIZE;
      }
      if (end - offset < this.length) break;
      const payload = this.length === 0 ? EMPTY : chunk.subarray(offset, offset + this.length);
      offset += this.length;
      this.state = STATE_HEADER;
      this.sink.onFrame(this.type, this.flags, this.streamId, payload);
    }
    if (offset < end) {
      if (this.handingOff) (this.rest ??= []).push(chunk.subarray(offset));
      else if (!this.stopped) {
        const held = (this.held ??= new ChunkList());
        held.push(offset === 0 ? chunk : chunk.subarray(offset));
        this.spillIfFragmented(held);
      }
    }
  }

  private drainParts(held: ChunkList): void {
    while (!this.stopped) {
      if (this.state === STATE_HEADER) {
        if (held.length < FRAME_HEADER_SIZE) return;
        this.readHeader(held.take(FRAME_HEADER_SIZE), 0);
      }
      if (held.length < this.length) {
        this.spillIfFragmented(held);
        return;
      }
      this.state = STATE_HEADER;
      if ((this.flags & FrameFlag.FOLLOWS) !== 0 && held.firstLength < this.length && this.sink.onFragmentParts !== undefined) {
        this.sink.onFragmentParts(this.type, this.flags, this.streamId, held.takeParts(this.length), this.length);
      } else {
        const payload = this.length === 0 ? EMPTY : held.take(this.length);
        this.sink.onFrame(this.type, this.flags, this.streamId, payload, this.length !== 0 && held.copied);
      }
      if (this.handingOff) {
        (this.rest ??= []).push(...held.drain());
        return;
      }
      if (held.length === 0) return;
    }
  }

  /**
   * A frame trickling in as many tiny chunks would make the part list (and
   * each later concat) grow without bound; past maxParts its payload gets its
   * own buffer, filled as bytes arrive.
   */
  private spillIfFragmented(held: ChunkList): void {
    if (this.state !== STATE_PAYLOAD || held.count <= this.maxParts) return;
    this.filled = held.length;
    this.target = held.gather(this.length);
  }

  private readHeader(source: Buffer, offset: number): void {
    const length = source.readUInt32BE(offset);
    const type = source[offset + 4] as number;
    const flags = source[offset + 5] as number;
    const streamId = source.readUInt32BE(offset + 6);
    if (type === 0 || type > MAX_FRAME_TYPE) {
      throw this.fail(`unknown frame type 0x${type.toString(16).padStart(2, "0")} on stream ${streamId}`);
    }
    if ((flags & ~this.allowedFlags) !== 0) {
      // A defined processing bit the handshake did not agree on is as unknown to this connection as an undefined one.
      const known =
        (flags & ~KNOWN_FLAGS) !== 0
          ? ""
          : (flags & ~this.allowedFlags & FrameFlag.ENCRYPTED) !== 0
            ? " (ENCRYPTED is set on no frame: encryption is the record layer around the frames)"
            : " (a processing flag this connection did not negotiate)";
      throw this.fail(`unknown flags 0x${flags.toString(16)} on ${frameTypeName(type)} frame, stream ${streamId}${known}`);
    }
    if (length > this.maxFrameSize) {
      throw this.fail(
        `${frameTypeName(type)} frame of ${length} bytes on stream ${streamId} exceeds the maximum frame size of ${this.maxFrameSize} bytes`,
        { size: length, limit: this.maxFrameSize },
      );
    }
    this.type = type;
    this.flags = flags;
    this.streamId = streamId;
    this.length = length;
    this.state = STATE_PAYLOAD;
  }

  private fail(message: string, data?: unknown): RpcError {
    this.stop();
    return new RpcError(ErrorCode.PROTOCOL_ERROR, message, data);
  }
}
