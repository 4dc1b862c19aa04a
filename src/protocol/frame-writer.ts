import { FRAME_HEADER_SIZE, FrameFlag, FrameType, writeFrameHeader } from "./frame.js";

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

/** Encodes a value straight into a buffer; see {@link FrameWriter.writeItemInPlace}. */
export interface InPlaceEncoder {
  /** Writes `value` into `target` from `offset`, before `end`; returns the bytes written, or -1 if it cannot (then nothing is used). */
  encodeInto(value: unknown, target: Buffer, offset: number, end: number): number;
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
/** An ITEMS payload starts with a MessagePack array32 header (0xdd, count:u32be), so items can be appended in place. */
const ITEMS_HEADER_SIZE = 5;
/**
 * A batch of items this large is written at once instead of at the end of
 * the turn: a producer with plenty of credit fills a turn with thousands of
 * items, and the reader, which would otherwise get them all at the end, can
 * start on the first ones (and grant more credit) while the rest are made.
 */
export const EARLY_FLUSH_BYTES = 16 * 1024;
const ARRAY32 = 0xdd;

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
  /**
   * Where the frame of the last item written sits in the slab while it is
   * still the batch's last frame (so more items of its stream can join it);
   * -1 otherwise.
   */
  private itemAt = -1;
  private itemStream = 0;
  /** Items in that frame: 1 is an ITEM, more an ITEMS. */
  private itemCount = 0;

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
    this.itemAt = -1;
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
    this.itemAt = -1;
    const length = first.length + second.length;
    const at = this.reserve(FRAME_HEADER_SIZE + length);
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, length, type, flags, streamId);
    slab.set(first, at + FRAME_HEADER_SIZE);
    slab.set(second, at + FRAME_HEADER_SIZE + first.length);
    this.used = at + FRAME_HEADER_SIZE + length;
    this.schedule();
  }

  /**
   * Queues one encoded item of a stream (copied at once). When the frame
   * written just before is an item of the same stream, the item joins it:
   * that frame becomes (or stays) an ITEMS frame whose payload is a
   * MessagePack array, up to `maxItems` items and `maxBytes` of payload.
   * Otherwise it goes out as an ITEM, which later items may join in turn,
   * so a lone item costs nothing extra. Returns false, queuing nothing, when
   * the item must go as an ordinary message instead: it is too large to
   * share a frame, or large messages of the stream are still queued ahead.
   */
  writeItem(streamId: number, item: Uint8Array, maxItems: number, maxBytes: number): boolean {
    if (this.closed) return true;
    const length = item.length;
    if (length + ITEMS_HEADER_SIZE > maxBytes || this.hasQueued(streamId)) return false;
    let at = this.itemAt;
    if (at >= 0 && this.itemStream === streamId && this.itemCount < maxItems) {
      const count = this.itemCount;
      const grows = count === 1 ? ITEMS_HEADER_SIZE + length : length;
      const payloadLength = this.used - at - FRAME_HEADER_SIZE;
      if (payloadLength + grows <= maxBytes && this.makeRoom(grows)) {
        at = this.itemAt;
        const slab = this.slab as Buffer;
        const payloadAt = at + FRAME_HEADER_SIZE;
        if (count === 1) {
          // The lone ITEM becomes an ITEMS: its value moves behind the array header.
          slab.copyWithin(payloadAt + ITEMS_HEADER_SIZE, payloadAt, this.used);
          slab[payloadAt] = ARRAY32;
          slab[at + 4] = FrameType.ITEMS;
          this.used += ITEMS_HEADER_SIZE;
        }
        slab.set(item, this.used);
        this.used += length;
        this.itemCount = count + 1;
        slab.writeUInt32BE(count + 1, payloadAt + 1);
        slab.writeUInt32BE(payloadLength + grows, at);
        if (this.used - this.batchStart >= EARLY_FLUSH_BYTES) this.flush();
        return true;
      }
    }
    this.writeFrame(FrameType.ITEM, 0, streamId, item);
    this.itemAt = this.used - FRAME_HEADER_SIZE - length;
    this.itemStream = streamId;
    this.itemCount = 1;
    return true;
  }

  /**
   * {@link writeItem} for a value not yet encoded: `encoder` writes it
   * straight into the outgoing batch, so a small item costs no buffer, view
   * or copy of its own. Returns false, queuing nothing, when that is not
   * possible here (no room left in the slab, a value the encoder cannot
   * write, large messages of the stream queued ahead): the caller then
   * encodes the item and uses {@link writeItem}.
   */
  writeItemInPlace(streamId: number, encoder: InPlaceEncoder, value: unknown, maxItems: number, maxBytes: number): boolean {
    const slab = this.slab;
    if (this.closed || slab === null || this.hasQueued(streamId)) return false;
    const at = this.itemAt;
    if (at >= 0 && this.itemStream === streamId && this.itemCount < maxItems) {
      const count = this.itemCount;
      const payloadAt = at + FRAME_HEADER_SIZE;
      // A lone ITEM becomes an ITEMS: the new item goes after room for the array header.
      const start = count === 1 ? this.used + ITEMS_HEADER_SIZE : this.used;
      const length = encoder.encodeInto(value, slab, start, Math.min(slab.length, payloadAt + maxBytes));
      if (length < 0) return false;
      if (count === 1) {
        slab.copyWithin(payloadAt + ITEMS_HEADER_SIZE, payloadAt, this.used);
        slab[payloadAt] = ARRAY32;
        slab[at + 4] = FrameType.ITEMS;
      }
      this.used = start + length;
      this.itemCount = count + 1;
      slab.writeUInt32BE(count + 1, payloadAt + 1);
      slab.writeUInt32BE(this.used - payloadAt, at);
      if (this.used - this.batchStart >= EARLY_FLUSH_BYTES) this.flush();
      return true;
    }
    const payloadAt = this.used + FRAME_HEADER_SIZE;
    if (payloadAt >= slab.length) return false;
    // Alone, an item must leave room for the array header to be batchable (as in writeItem).
    const length = encoder.encodeInto(value, slab, payloadAt, Math.min(slab.length, payloadAt + maxBytes - ITEMS_HEADER_SIZE));
    if (length < 0) return false;
    writeFrameHeader(slab, this.used, length, FrameType.ITEM, 0, streamId);
    this.itemAt = this.used;
    this.itemStream = streamId;
    this.itemCount = 1;
    this.used = payloadAt + length;
    this.schedule();
    return true;
  }

  /**
   * Makes `n` more bytes available right after the batch's last frame without
   * splitting the batch; false when the batch would outgrow the largest slab.
   */
  private makeRoom(n: number): boolean {
    const slab = this.slab as Buffer;
    if (slab.length - this.used >= n) return true;
    if (this.used - this.batchStart + n > MAX_SLAB) return false;
    this.reserve(n);
    return this.itemAt >= 0;
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
    this.itemAt = -1;
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
    this.itemAt = -1;
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
      if (this.itemAt >= 0) this.itemAt -= this.batchStart;
      this.slab = larger;
      this.used = pending;
      this.batchStart = 0;
      return pending;
    }
    if (slab !== null && pending > 0) this.ready.push(slab.subarray(this.batchStart, this.used));
    this.itemAt = -1;
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
