import { ChunkList } from "./chunk-list.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

/** Receives each complete record body from a {@link RecordDecoder}. */
export interface RecordSink {
  /**
   * One record's body: the bytes after its length prefix. It may be a view
   * into a socket chunk: copy it if you keep it past the call.
   */
  onRecord(body: Buffer): void;
}

/** Options of a {@link RecordDecoder}. */
export interface RecordDecoderOptions {
  /** Smallest `recordLength` that can be a record. */
  minRecordSize: number;
  /** Largest `recordLength` accepted, checked from the length prefix before any body is buffered. */
  maxRecordSize: number;
  /**
   * How many chunks a record may arrive in before the decoder stops keeping
   * a list of them and copies into one buffer of the record's size. Default 64.
   */
  maxBufferedParts?: number;
}

const STATE_LENGTH = 0;
const STATE_BODY = 1;
const LENGTH_SIZE = 4;
/** What every length refusal adds: the usual cause of a nonsensical length. */
const NOT_RECORDS = "after an encrypted handshake every byte must be in records, and this is not one (a plaintext frame?)";

/**
 * Incremental reader of the record stream that follows an encrypted
 * handshake (`recordLength:u32be` then that many bytes, over and over): an
 * explicit two-state machine (length, body) over a list of socket chunks,
 * like the FrameDecoder. A record lying inside one chunk is handed out as
 * a view; a record trickling in as many tiny chunks is gathered into one
 * buffer of its size. A length outside the accepted range is refused before
 * any of the body is buffered, so a peer cannot make this side hold more
 * than one maximum-size record.
 */
export class RecordDecoder {
  private readonly sink: RecordSink;
  private readonly minSize: number;
  private readonly maxSize: number;
  private readonly maxParts: number;
  private state = STATE_LENGTH;
  /** Bytes of an incomplete length or body. */
  private readonly held = new ChunkList();
  private length = 0;
  /** Set once a record spanned more than maxParts chunks: its body is copied in as it arrives. */
  private target: Buffer | null = null;
  private filled = 0;
  private stopped = false;

  constructor(sink: RecordSink, options: RecordDecoderOptions) {
    this.sink = sink;
    this.minSize = options.minRecordSize;
    this.maxSize = options.maxRecordSize;
    this.maxParts = options.maxBufferedParts ?? 64;
  }

  /** Bytes held for a record not yet complete. */
  get bufferedBytes(): number {
    return this.target === null ? this.held.length : this.filled;
  }

  /** Stops delivering records (after a fatal error); later chunks are ignored. */
  stop(): void {
    this.stopped = true;
    this.held.clear();
    this.target = null;
  }

  /**
   * Feeds one chunk. Throws an {@link RpcError} UNAUTHENTICATED on a length
   * that cannot be a record's; the decoder is unusable afterwards.
   */
  push(chunk: Buffer): void {
    if (this.stopped || chunk.length === 0) return;
    if (this.target !== null) {
      const need = this.length - this.filled;
      if (chunk.length < need) {
        chunk.copy(this.target, this.filled);
        this.filled += chunk.length;
        return;
      }
      chunk.copy(this.target, this.filled, 0, need);
      const body = this.target;
      this.target = null;
      this.state = STATE_LENGTH;
      this.sink.onRecord(body);
      if (chunk.length === need) return;
      chunk = chunk.subarray(need);
    }
    if (this.held.length === 0) this.parseChunk(chunk);
    else {
      this.held.push(chunk);
      this.drainParts();
    }
  }

  /** Fast path: nothing is buffered, so records are read straight out of `chunk`. */
  private parseChunk(chunk: Buffer): void {
    let offset = 0;
    const end = chunk.length;
    while (!this.stopped) {
      if (this.state === STATE_LENGTH) {
        if (end - offset < LENGTH_SIZE) break;
        this.readLength(chunk.readUInt32BE(offset));
        offset += LENGTH_SIZE;
      }
      if (end - offset < this.length) break;
      const body = chunk.subarray(offset, offset + this.length);
      offset += this.length;
      this.state = STATE_LENGTH;
      this.sink.onRecord(body);
    }
    if (offset < end && !this.stopped) {
      this.held.push(offset === 0 ? chunk : chunk.subarray(offset));
      this.spillIfFragmented();
    }
  }

  private drainParts(): void {
    while (!this.stopped) {
      if (this.state === STATE_LENGTH) {
        if (this.held.length < LENGTH_SIZE) return;
        this.readLength(this.held.take(LENGTH_SIZE).readUInt32BE(0));
      }
      if (this.held.length < this.length) {
        this.spillIfFragmented();
        return;
      }
      const body = this.held.take(this.length);
      this.state = STATE_LENGTH;
      this.sink.onRecord(body);
      if (this.held.length === 0) return;
    }
  }

  /** Past maxParts chunks, a record's body gets its own buffer, filled as bytes arrive (no growing list, no repeated concat). */
  private spillIfFragmented(): void {
    if (this.state !== STATE_BODY || this.held.count <= this.maxParts) return;
    this.filled = this.held.length;
    this.target = this.held.gather(this.length);
  }

  private readLength(length: number): void {
    if (length > this.maxSize) {
      this.stop();
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `record of ${length} bytes exceeds the maximum record size of ${this.maxSize} bytes; ${NOT_RECORDS}`,
        { size: length, limit: this.maxSize },
      );
    }
    if (length < this.minSize) {
      this.stop();
      throw new RpcError(
        ErrorCode.UNAUTHENTICATED,
        `record of ${length} bytes is shorter than the smallest record (${this.minSize} bytes); ${NOT_RECORDS}`,
        { size: length, limit: this.minSize },
      );
    }
    this.length = length;
    this.state = STATE_BODY;
  }
}
