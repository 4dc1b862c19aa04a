import { FRAME_HEADER_SIZE, FrameFlag, writeFrameHeader } from "./frame.js";

/** What a {@link FrameWriter} needs of a socket. */
export interface FrameSocket {
  write(chunk: Uint8Array): boolean;
  cork(): void;
  uncork(): void;
  readonly writableLength: number;
  readonly destroyed: boolean;
  /** The listener must be called with the socket as `this` (as EventEmitter does): one listener function serves every writer. */
  on(event: "drain", listener: () => void): unknown;
}

/** Options of a {@link FrameWriter}. */
export interface FrameWriterOptions {
  /** Largest payload per frame; bigger messages are fragmented. Default 64 KiB. */
  fragmentSize?: number;
  /**
   * Bytes the socket may hold unsent before fragments of large messages wait
   * for `drain`, so small frames queued later are not stuck behind megabytes.
   * Default 256 KiB.
   */
  highWaterMark?: number;
}

/**
 * Turns a write batch (the frame bytes of one flush, in order) into the
 * chunks that go to the socket instead; see {@link FrameWriter.output}.
 */
export type WriterOutput = (chunks: readonly Uint8Array[]) => Uint8Array[];

interface BulkMessage {
  type: number;
  /** Processing flags every fragment carries (FOLLOWS is added to all but the last). */
  flags: number;
  data: Uint8Array;
  offset: number;
}

const kWriter = Symbol("rapt.frameWriter");
type WriterSocket = FrameSocket & { [kWriter]: FrameWriter };

/**
 * The slab a quiet connection starts a batch in. Small, because an idle
 * connection's batches are lone PINGs and PONGs of 18 bytes: with 2 KiB,
 * 10,000 idle connections (a PING each per 10 s) took 2 MB/s from Node's
 * buffer pool, which kept V8's young generation at its largest and left the
 * server about 17 MB larger after 30 s. Busy connections grow theirs within
 * a few turns (see grow()).
 */
const MIN_SLAB = 256;
const MAX_SLAB = 64 * 1024;

/**
 * Outgoing side of a connection. Small frames are copied into a slab and
 * written once per event-loop turn (one write per frame measured 4-5x slower).
 * Messages larger than the fragment size are queued per stream and sent one
 * fragment per stream per round, paced by the socket's `drain`, so a 50 MB
 * result shares the connection with small calls instead of blocking it.
 */
export class FrameWriter {
  /** Largest payload per frame; set from the peer's limits after the handshake. */
  fragmentSize: number;
  /**
   * Applied at each flush to everything about to be written (the slab batch
   * and any fragment chunks); what it returns is written instead, as one
   * write or corked. The record layer of an encrypted connection seals each
   * batch here, so the cost of a cipher is paid once per event-loop turn,
   * not per frame. Undefined writes frames as they are.
   */
  output: WriterOutput | undefined = undefined;
  private readonly socket: FrameSocket;
  private readonly highWaterMark: number;
  private slab: Buffer | null = null;
  private slabSize = MIN_SLAB;
  private used = 0;
  private batchStart = 0;
  /** Chunks of the current batch, in order, ready to be written. */
  private readonly ready: Uint8Array[] = [];
  /** Large messages being fragmented out, per stream; kept in insertion order for round robin. */
  private bulk: Map<number, BulkMessage[]> | undefined;
  private scheduled = false;
  private waitingDrain = false;
  /** A write returned false and the socket has not emitted `drain` since: one is coming. */
  private drainPending = false;
  private closed = false;

  constructor(socket: FrameSocket, options: FrameWriterOptions = {}) {
    this.socket = socket;
    this.fragmentSize = options.fragmentSize ?? 64 * 1024;
    this.highWaterMark = options.highWaterMark ?? 256 * 1024;
    // A listener shared by all writers (see Connection's socket listeners).
    (socket as WriterSocket)[kWriter] = this;
    socket.on("drain", FrameWriter.onSocketDrain);
  }

  private static onSocketDrain(this: FrameSocket): void {
    const writer = (this as WriterSocket)[kWriter];
    writer.drainPending = false;
    if (!writer.waitingDrain) return;
    writer.waitingDrain = false;
    writer.flush();
  }

  private static flushLater(writer: FrameWriter): void {
    writer.flush();
  }

  /** Bytes of large messages still waiting to be fragmented out. */
  get queuedBulkBytes(): number {
    let total = 0;
    if (this.bulk === undefined) return 0;
    for (const queue of this.bulk.values()) for (const m of queue) total += m.data.length - m.offset;
    return total;
  }

  /** Queues one frame; `payload` is copied at once, so the caller may reuse it. */
  writeFrame(type: number, flags: number, streamId: number, payload?: Uint8Array): void {
    if (this.closed) return;
    const length = payload === undefined ? 0 : payload.length;
    const at = this.reserve(FRAME_HEADER_SIZE + length);
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, length, type, flags, streamId);
    if (length > 0) slab.set(payload as Uint8Array, at + FRAME_HEADER_SIZE);
    this.used = at + FRAME_HEADER_SIZE + length;
    this.schedule();
  }

  /** Queues one frame whose payload is `first` then `second`, copied at once (the caller need not join them). */
  writeFrameParts(type: number, flags: number, streamId: number, first: Uint8Array, second: Uint8Array): void {
    if (this.closed) return;
    const length = first.length + second.length;
    const at = this.reserve(FRAME_HEADER_SIZE + length);
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, length, type, flags, streamId);
    slab.set(first, at + FRAME_HEADER_SIZE);
    slab.set(second, at + FRAME_HEADER_SIZE + first.length);
    this.used = at + FRAME_HEADER_SIZE + length;
    this.schedule();
  }

  /** Whether large messages of `streamId` are still being fragmented out (a new message must queue behind them). */
  hasQueued(streamId: number): boolean {
    return this.bulk?.has(streamId) === true;
  }

  /**
   * Queues one message, fragmenting it if it is larger than the fragment size.
   * Messages of one stream keep their order. Pass `owned` when the caller
   * gives up `payload`; otherwise a large payload is copied. `flags` are the
   * message's processing flags, set on every fragment.
   */
  writeMessage(type: number, streamId: number, payload: Uint8Array, owned = false, flags = 0): void {
    if (this.closed) return;
    const queue = this.bulk?.get(streamId);
    if (queue === undefined && payload.length <= this.fragmentSize) {
      this.writeFrame(type, flags, streamId, payload);
      return;
    }
    const message: BulkMessage = { type, flags, data: owned ? payload : copyOf(payload), offset: 0 };
    if (queue !== undefined) {
      queue.push(message);
      this.schedule();
      return;
    }
    // The first fragment goes out in order with small frames: a peer sees
    // streams open in the order their ids were taken (ids must increase).
    const size = this.fragmentSize;
    this.writeFrame(type, flags | FrameFlag.FOLLOWS, streamId, message.data.subarray(0, size));
    message.offset = size;
    // Made on first use: most connections never send a message this large.
    (this.bulk ??= new Map()).set(streamId, [message]);
  }

  /** Drops queued messages of one stream (it was cancelled); a partly sent one is cut off. */
  dropStream(streamId: number): boolean {
    const queue = this.bulk?.get(streamId);
    if (queue === undefined) return false;
    this.bulk?.delete(streamId);
    // A message already partly on the wire is cut; the receiver discards its
    // fragments once the stream is gone.
    return (queue[0] as BulkMessage).offset > 0;
  }

  /** Writes what is queued now instead of at the end of the turn. */
  flush(): void {
    this.scheduled = false;
    if (this.closed || this.socket.destroyed) return;
    const bulk = this.bulk;
    if (bulk !== undefined && bulk.size > 0 && !this.waitingDrain) this.fillFragments(bulk);
    if (this.used > this.batchStart) {
      const batchBytes = this.used - this.batchStart;
      this.ready.push((this.slab as Buffer).subarray(this.batchStart, this.used));
      this.grow(batchBytes);
      this.batchStart = this.used;
      // A nearly full slab is done; so is the slab of a connection sending
      // little (an idle one would otherwise hold 2 KiB for good; small slabs
      // come cheaply from Node's buffer pool).
      const slab = this.slab as Buffer;
      if (batchBytes * 4 < MIN_SLAB) {
        this.dropSlab();
        this.slabSize = MIN_SLAB;
      } else if (slab.length - this.used < 256) this.dropSlab();
    }
    const ready = this.ready;
    if (ready.length > 0) {
      const chunks = this.output === undefined ? ready : this.output(ready);
      if (chunks.length === 1) this.send(chunks[0] as Uint8Array);
      else if (chunks.length > 1) {
        this.socket.cork();
        for (const chunk of chunks) this.send(chunk);
        this.socket.uncork();
      }
      ready.length = 0;
    }
    if (bulk !== undefined && bulk.size > 0 && !this.waitingDrain) {
      // Only wait for a `drain` the socket has promised: one whose own
      // high-water mark is above ours never emits it, and the rest of the
      // message would stall for good.
      if (this.drainPending && this.socket.writableLength >= this.highWaterMark) this.waitingDrain = true;
      else this.schedule();
    }
  }

  private send(chunk: Uint8Array): void {
    if (!this.socket.write(chunk)) this.drainPending = true;
  }

  /** Stops writing; queued frames are discarded. */
  close(): void {
    this.closed = true;
    this.bulk = undefined;
    this.ready.length = 0;
    this.slab = null;
  }

  private fillFragments(bulk: Map<number, BulkMessage[]>): void {
    let pending = this.socket.writableLength + (this.used - this.batchStart);
    const size = this.fragmentSize;
    // With no `drain` to come, one fragment per turn still goes out until the
    // socket reports backpressure (then `drain` paces the rest).
    let force = !this.drainPending;
    while (bulk.size > 0 && (pending < this.highWaterMark || force)) {
      force = false;
      // Each pass takes one fragment from the stream at the head of the map
      // and moves that stream to the back: round robin across streams.
      const [streamId, queue] = bulk.entries().next().value as [number, BulkMessage[]];
      const message = queue[0] as BulkMessage;
      const remaining = message.data.length - message.offset;
      const length = Math.min(remaining, size);
      const last = length === remaining;
      const at = this.reserve(FRAME_HEADER_SIZE);
      writeFrameHeader(this.slab as Buffer, at, length, message.type, last ? message.flags : message.flags | FrameFlag.FOLLOWS, streamId);
      this.used = at + FRAME_HEADER_SIZE;
      this.ready.push((this.slab as Buffer).subarray(this.batchStart, this.used));
      this.batchStart = this.used;
      this.ready.push(message.data.subarray(message.offset, message.offset + length));
      message.offset += length;
      pending += FRAME_HEADER_SIZE + length;
      bulk.delete(streamId);
      if (last) queue.shift();
      if (queue.length > 0) bulk.set(streamId, queue);
    }
  }

  /** Makes room for `n` bytes in the slab and returns where they start. */
  private reserve(n: number): number {
    const slab = this.slab;
    if (slab !== null && slab.length - this.used >= n) return this.used;
    const pending = this.used - this.batchStart;
    if (slab !== null && pending > 0 && pending + n <= MAX_SLAB) {
      // The batch moves to a larger slab instead of being split: one socket
      // write per turn, not a corked writev of two (measurably slower).
      this.slabSize = Math.min(MAX_SLAB, Math.max(this.slabSize * 2, pending + n));
      const larger = Buffer.allocUnsafe(this.slabSize);
      slab.copy(larger, 0, this.batchStart, this.used);
      this.slab = larger;
      this.used = pending;
      this.batchStart = 0;
      return pending;
    }
    if (slab !== null && pending > 0) this.ready.push(slab.subarray(this.batchStart, this.used));
    // Idle connections keep no slab, and busy ones grow theirs up to 64 KiB.
    this.slab = Buffer.allocUnsafe(Math.max(n, this.slabSize));
    this.used = 0;
    this.batchStart = 0;
    return 0;
  }

  private grow(batchBytes: number): void {
    if (batchBytes * 2 > this.slabSize && this.slabSize < MAX_SLAB) this.slabSize *= 2;
  }

  private dropSlab(): void {
    this.slab = null;
    this.used = 0;
    this.batchStart = 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(FrameWriter.flushLater, this);
  }
}

/** A copy of `bytes` in a new buffer, not zero-filled first as `slice()` is (which made large copies about twice as slow). */
function copyOf(bytes: Uint8Array): Buffer {
  const copy = Buffer.allocUnsafe(bytes.length);
  copy.set(bytes, 0);
  return copy;
}
