import { type BulkBufferPool, bulkBuffers } from "./bulk-buffer-pool.js";
import { FRAME_HEADER_SIZE, FrameFlag, writeFrameHeader } from "./frame.js";
import { ITEMS_HEADER_SIZE, ItemBatch } from "./item-batch.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

/** What a {@link FrameWriter} needs of a socket. */
export interface FrameSocket {
  write(chunk: Uint8Array): boolean;
  cork(): void;
  uncork(): void;
  /**
   * Bytes given to `write` and not yet written. Once it is 0 the socket
   * reads none of the chunks it was given any more (as Node's sockets: the
   * kernel has copied them), and the writer reuses their memory.
   */
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
  /** Where the copies of large messages come from and go back to once written. Default the process-wide {@link bulkBuffers}. */
  pool?: BulkBufferPool;
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

/**
 * Who owns the bytes given to {@link FrameWriter.writeMessage}: the caller
 * (`"borrowed"`: the writer copies them if it keeps them past the call),
 * the writer (`"owned"`), or the writer with memory from its pool
 * (`"pooled"`: the whole of a {@link BulkBufferPool} buffer, given back once
 * written).
 */
export type MessageBytes = "borrowed" | "owned" | "pooled";

interface BulkMessage {
  type: number;
  /** Processing flags every fragment carries (FOLLOWS is added to all but the last). */
  flags: number;
  data: Uint8Array;
  offset: number;
  /** `data` came from the writer's pool: given back once the socket has taken all of it. */
  pooled: boolean;
}

const kWriter = Symbol("rapt.frameWriter");
type WriterSocket = FrameSocket & { [kWriter]: FrameWriter };

/**
 * The slab a quiet connection starts a batch in. Small, because an idle
 * connection's batches are lone PINGs and PONGs of 18 bytes: with 2 KiB,
 * 10,000 idle connections (then a PING each per 10 s) took 2 MB/s from Node's
 * buffer pool, which kept V8's young generation at its largest and left the
 * server about 17 MB larger after 30 s. Busy connections grow theirs within
 * a few turns (see grow()).
 */
const MIN_SLAB = 256;
const MAX_SLAB = 64 * 1024;
/** Payload bytes {@link FrameWriter.writeFrameInPlace} makes room for before it tries (a larger value gets what the slab has). */
const IN_PLACE_ROOM = 256;
/** Batch buffers a writer keeps for reuse (see FrameWriter's `spares`). */
const MAX_SPARE_BATCHES = 16;
/** The most payload one ITEMS frame carries (within the peer's limits). */
export const MAX_BATCH_BYTES = 16 * 1024;
/**
 * Once the turn's outgoing bytes reach this, a batch that closes because it
 * is full writes them at once instead of at the end of the turn: a producer
 * with plenty of credit fills a turn with thousands of items, and the
 * reader, which would otherwise get them all at the end, can start on the
 * first ones (and grant more credit) while the rest are made.
 */
export const EARLY_FLUSH_BYTES = 8 * 1024;

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
  private readonly pool: BulkBufferPool;
  /**
   * Memory of pooled messages whose last fragment went to the socket; given
   * back to the pool once the socket holds nothing unwritten (see {@link giveBack}).
   */
  private sent: ArrayBuffer[] | undefined;
  private slab: Buffer | null = null;
  private slabSize = MIN_SLAB;
  private used = 0;
  private batchStart = 0;
  /**
   * Chunks of the current batch, in order, ready to be written. Made on
   * first use and given back with the slab by a quiet connection, as an
   * idle one would otherwise hold an empty array for good.
   */
  private ready: Uint8Array[] | undefined;
  /** Large messages being fragmented out, per stream; kept in insertion order for round robin. */
  private bulk: Map<number, BulkMessage[]> | undefined;
  private scheduled = false;
  /** A value is being encoded straight into the slab past `used` (see {@link writeFrameInPlace}). */
  private encodingInPlace = false;
  private waitingDrain = false;
  /** A write returned false and the socket has not emitted `drain` since: one is coming. */
  private drainPending = false;
  private closed = false;
  /** Items waiting per stream, written into the slab as one frame each (see {@link writeItem}); made on first use. */
  private batches: Map<number, ItemBatch> | undefined;
  /** The batch items were last added to: a stream's next item usually goes there, without a Map lookup. */
  private lastBatch: ItemBatch | undefined;
  /**
   * Batch buffers kept for the next batches, one per stream that had a
   * batch (up to {@link MAX_SPARE_BATCHES}); dropped by a flush that wrote
   * no batch. Reusing the same buffers also reuses the DataViews the
   * encoder keeps per buffer: with one spare, 16 channels echoing on a
   * connection made 15 new buffers and views per turn (3.4% of the
   * server's time in StringSlots.viewFor).
   */
  private spares: Buffer[] | undefined;
  private batchesWritten = 0;

  constructor(socket: FrameSocket, options: FrameWriterOptions = {}) {
    this.socket = socket;
    this.fragmentSize = options.fragmentSize ?? 64 * 1024;
    this.highWaterMark = options.highWaterMark ?? 256 * 1024;
    this.pool = options.pool ?? bulkBuffers;
    // A listener shared by all writers (see Connection's socket listeners).
    (socket as WriterSocket)[kWriter] = this;
    socket.on("drain", FrameWriter.onSocketDrain);
  }

  private static onSocketDrain(this: FrameSocket): void {
    const writer = (this as WriterSocket)[kWriter];
    writer.drainPending = false;
    // `drain` comes when the socket holds nothing unwritten.
    if (writer.sent !== undefined) writer.giveBack();
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
    if (this.batches !== undefined) this.closeBatchOf(streamId);
    const length = payload === undefined ? 0 : payload.length;
    const at = this.reserve(FRAME_HEADER_SIZE + length);
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, length, type, flags, streamId);
    if (length > 0) slab.set(payload as Uint8Array, at + FRAME_HEADER_SIZE);
    this.used = at + FRAME_HEADER_SIZE + length;
    this.schedule();
  }

  /**
   * Queues one unfragmented frame (flags 0) whose payload is `prefix`
   * (copied; may be empty) then `value`, which `encoder` writes straight
   * into the outgoing batch: no buffer, view or copy of its own, which for a
   * small RESULT or CALL cost as much as encoding it. The payload may take
   * up to `maxPayload` bytes. Returns false, queuing nothing, when that is
   * not possible (a value the encoder cannot write, more than `maxPayload`
   * or than the batch has room for, large messages of the stream queued
   * ahead): the caller then encodes the value and queues it as usual.
   */
  writeFrameInPlace(
    type: number,
    streamId: number,
    encoder: InPlaceEncoder,
    prefix: Uint8Array,
    value: unknown,
    maxPayload: number,
  ): boolean {
    if (this.closed || this.hasQueued(streamId)) return false;
    if (this.batches !== undefined) this.closeBatchOf(streamId);
    // Room for a small payload at least; a larger one gets what the slab has left.
    const at = this.reserve(FRAME_HEADER_SIZE + prefix.length + IN_PLACE_ROOM);
    const slab = this.slab as Buffer;
    const start = at + FRAME_HEADER_SIZE;
    const end = Math.min(slab.length, start + maxPayload);
    if (start + prefix.length > end) return false;
    if (prefix.length > 0) slab.set(prefix, start);
    // The value is encoded into the batch before it is counted: anything else
    // written now (by a getter reading the value) would overwrite it, so
    // that is refused (see reserve) and a flush waits for the turn's end.
    let length: number;
    this.encodingInPlace = true;
    try {
      length = encoder.encodeInto(value, slab, start + prefix.length, end);
    } finally {
      this.encodingInPlace = false;
    }
    // Closed meanwhile (by a getter), or the encoder gave up.
    if (length < 0 || this.slab !== slab || this.used !== at) return false;
    const payload = prefix.length + length;
    writeFrameHeader(slab, at, payload, type, 0, streamId);
    this.used = start + payload;
    this.schedule();
    return true;
  }

  /** Queues one frame whose payload is `first` then `second`, copied at once (the caller need not join them). */
  writeFrameParts(type: number, flags: number, streamId: number, first: Uint8Array, second: Uint8Array): void {
    if (this.closed) return;
    if (this.batches !== undefined) this.closeBatchOf(streamId);
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
   * Queues one encoded item of a stream (copied at once). Items of a stream
   * queued before the end of the turn, with no other frame of that stream
   * between them, leave as one frame: an ITEM when alone, else an ITEMS
   * frame whose payload is a MessagePack array of them, of at most
   * `maxItems` items and `maxBytes` (and {@link MAX_BATCH_BYTES}) of
   * payload. Items of other streams may come in between; they gather in
   * batches of their own. Returns false, queuing nothing, when the item
   * must go as an ordinary message instead: it is too large to share a
   * frame, or large messages of the stream are still queued ahead.
   * `maxItems` and `eager` apply to the batch this item opens: an eager
   * batch is written to the socket as soon as it is full, so the first
   * items of a stream reach a waiting receiver before the turn ends.
   */
  writeItem(streamId: number, item: Uint8Array, maxItems: number, maxBytes: number, eager = false): boolean {
    if (this.closed) return true;
    const cap = Math.min(maxBytes, MAX_BATCH_BYTES) - ITEMS_HEADER_SIZE;
    const length = item.length;
    if (length > cap || this.hasQueued(streamId)) return false;
    let batch = this.batchOf(streamId);
    if (batch !== undefined && (batch.count >= batch.limit || batch.used + length > cap)) {
      this.closeBatch(batch, true);
      batch = undefined;
    }
    batch ??= this.openBatch(streamId, maxItems, eager);
    batch.reserve(length, cap);
    batch.bytes.set(item, batch.used);
    batch.used += length;
    batch.count++;
    this.added(batch, cap);
    return true;
  }

  /**
   * {@link writeItem} for a value not yet encoded: `encoder` writes it
   * straight into the stream's batch, so a small item costs no buffer, view
   * or copy of its own. Returns false, queuing nothing, when that is not
   * possible (a value the encoder cannot write, one that does not fit the
   * batch, large messages of the stream queued ahead): the caller then
   * encodes the item and uses {@link writeItem}.
   */
  writeItemInPlace(streamId: number, encoder: InPlaceEncoder, value: unknown, maxItems: number, maxBytes: number, eager = false): boolean {
    if (this.closed || this.hasQueued(streamId)) return false;
    const cap = Math.min(maxBytes, MAX_BATCH_BYTES) - ITEMS_HEADER_SIZE;
    let batch = this.batchOf(streamId);
    if (batch !== undefined && batch.count >= batch.limit) {
      this.closeBatch(batch, true);
      batch = undefined;
    }
    batch ??= this.openBatch(streamId, maxItems, eager);
    let length = encoder.encodeInto(value, batch.bytes, batch.used, Math.min(batch.bytes.length, cap));
    if (length < 0 && batch.bytes.length < cap) {
      // Perhaps only the buffer was short: once more with all the room the batch may have.
      batch.reserve(cap - batch.used, cap);
      length = encoder.encodeInto(value, batch.bytes, batch.used, cap);
    }
    if (length < 0) {
      if (batch.count === 0) this.dropBatch(batch);
      return false;
    }
    batch.used += length;
    batch.count++;
    this.added(batch, cap);
    return true;
  }

  private batchOf(streamId: number): ItemBatch | undefined {
    const last = this.lastBatch;
    if (last !== undefined && last.streamId === streamId) return last;
    return this.batches?.get(streamId);
  }

  private openBatch(streamId: number, maxItems: number, eager: boolean): ItemBatch {
    const batch = new ItemBatch(streamId, this.spares?.pop(), maxItems, eager);
    (this.batches ??= new Map()).set(streamId, batch);
    this.lastBatch = batch;
    this.schedule();
    return batch;
  }

  /** A batch that is full (by count, or by bytes: nothing more fits) goes into the slab now. */
  private added(batch: ItemBatch, cap: number): void {
    // Usually the batch already is the last one: a store of it again would pay a write barrier per item.
    if (this.lastBatch !== batch) this.lastBatch = batch;
    if (batch.count >= batch.limit || batch.used >= cap) this.closeBatch(batch, true);
  }

  /** Writes the stream's batch, if it has one, before another frame of the stream. */
  private closeBatchOf(streamId: number): void {
    const batch = this.batchOf(streamId);
    if (batch !== undefined) this.closeBatch(batch, false);
  }

  /**
   * Writes a batch into the slab. When it closes because it is `full`, and
   * it is eager or the turn's bytes have reached {@link EARLY_FLUSH_BYTES},
   * they are written to the socket at once.
   */
  private closeBatch(batch: ItemBatch, full: boolean): void {
    this.emitBatch(batch);
    this.dropBatch(batch);
    if (full && (batch.eager || this.used - this.batchStart >= EARLY_FLUSH_BYTES)) this.flush();
  }

  private emitBatch(batch: ItemBatch): void {
    if (batch.count === 0) return;
    const size = batch.frameSize;
    const at = this.reserve(size);
    batch.writeFrame(this.slab as Buffer, at);
    this.used = at + size;
    this.batchesWritten++;
  }

  private dropBatch(batch: ItemBatch): void {
    this.batches?.delete(batch.streamId);
    if (this.lastBatch === batch) this.lastBatch = undefined;
    const spares = (this.spares ??= []);
    if (spares.length < MAX_SPARE_BATCHES) spares.push(batch.bytes);
  }

  /** Whether large messages of `streamId` are still being fragmented out (a new message must queue behind them). */
  hasQueued(streamId: number): boolean {
    return this.bulk?.has(streamId) === true;
  }

  /**
   * Queues one message, fragmenting it if it is larger than the fragment size.
   * Messages of one stream keep their order. `bytes` says who owns
   * `payload` ({@link MessageBytes}): a borrowed large payload is copied.
   * `flags` are the message's processing flags, set on every fragment.
   */
  writeMessage(type: number, streamId: number, payload: Uint8Array, bytes: MessageBytes = "borrowed", flags = 0): void {
    if (this.closed) return;
    if (payload.length <= this.fragmentSize && !this.hasQueued(streamId)) {
      this.writeFrame(type, flags, streamId, payload);
      if (bytes === "pooled") this.pool.give(payload.buffer as ArrayBuffer);
      return;
    }
    if (bytes !== "borrowed") {
      this.queueMessage({ type, flags, data: payload, offset: 0, pooled: bytes === "pooled" }, streamId);
      return;
    }
    const pooled = payload.length > this.fragmentSize;
    this.queueMessage({ type, flags, data: this.copy(payload, undefined), offset: 0, pooled }, streamId);
  }

  /**
   * {@link writeMessage} for a message of two parts, `first` (borrowed: a
   * CALL's head) then `second` (its arguments, of any {@link MessageBytes}),
   * so the caller need not join them: the first fragment is written from
   * both, and an owned or pooled `second` is sent from without a copy.
   */
  writeMessageParts(type: number, streamId: number, first: Uint8Array, second: Uint8Array, bytes: MessageBytes = "borrowed"): void {
    if (this.closed) return;
    const length = first.length + second.length;
    const size = this.fragmentSize;
    const queued = this.hasQueued(streamId);
    if (length <= size && !queued) {
      this.writeFrameParts(type, 0, streamId, first, second);
      if (bytes === "pooled") this.pool.give(second.buffer as ArrayBuffer);
      return;
    }
    if (queued || first.length >= size) {
      // Rare (a new call's stream has nothing queued; a head is small): join them.
      const joined = this.copy(second, first);
      if (bytes === "pooled") this.pool.give(second.buffer as ArrayBuffer);
      this.queueMessage({ type, flags: 0, data: joined, offset: 0, pooled: length > size }, streamId);
      return;
    }
    const data = bytes === "borrowed" ? this.copy(second, undefined) : second;
    // The head goes out whole in the first fragment, queued now.
    const firstData = size - first.length;
    if (this.batches !== undefined) this.closeBatchOf(streamId);
    this.writeFragment(type, FrameFlag.FOLLOWS, streamId, first, data.subarray(0, firstData));
    this.schedule();
    const pooled = bytes === "pooled" || (bytes === "borrowed" && second.length > size);
    this.startBulk(streamId, { type, flags: 0, data, offset: firstData, pooled });
  }

  /**
   * A copy of `prefix` (if any) then `payload`, which the writer owns: from
   * the pool when it is to be fragmented (the pool is given it back once
   * written), else a buffer of its own.
   */
  private copy(payload: Uint8Array, prefix: Uint8Array | undefined): Uint8Array {
    const at = prefix === undefined ? 0 : prefix.length;
    const length = at + payload.length;
    // A small message queued behind a large one gets a copy of its own, not pooled memory.
    const data = length > this.fragmentSize ? this.pool.take(length).subarray(0, length) : Buffer.allocUnsafe(length);
    if (prefix !== undefined) data.set(prefix, 0);
    data.set(payload, at);
    return data;
  }

  private queueMessage(message: BulkMessage, streamId: number): void {
    const queue = this.bulk?.get(streamId);
    if (queue !== undefined) {
      queue.push(message);
      this.schedule();
      return;
    }
    // The first fragment goes out in order with small frames: a peer sees
    // streams open in the order their ids were taken (ids must increase).
    const size = this.fragmentSize;
    if (this.batches !== undefined) this.closeBatchOf(streamId);
    this.writeFragment(message.type, message.flags | FrameFlag.FOLLOWS, streamId, undefined, message.data.subarray(0, size));
    message.offset = size;
    this.startBulk(streamId, message);
  }

  /**
   * Queues a frame of `head` (copied, if any) then `data`, a view of a large
   * message's memory written from where it is, not copied into the batch:
   * the batch so far, the frame header and head go to the ready chunks, then
   * `data`, so frames keep their order. The memory must stay as it is until
   * the socket has written it (see {@link giveBack}).
   */
  private writeFragment(type: number, flags: number, streamId: number, head: Uint8Array | undefined, data: Uint8Array): void {
    const headLength = head === undefined ? 0 : head.length;
    const at = this.reserve(FRAME_HEADER_SIZE + headLength);
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, headLength + data.length, type, flags, streamId);
    if (head !== undefined) slab.set(head, at + FRAME_HEADER_SIZE);
    this.used = at + FRAME_HEADER_SIZE + headLength;
    const ready = (this.ready ??= []);
    ready.push(slab.subarray(this.batchStart, this.used));
    this.batchStart = this.used;
    ready.push(data);
  }

  /** Queues the rest of a message whose first fragment is written. */
  private startBulk(streamId: number, message: BulkMessage): void {
    // Made on first use: most connections never send a message this large.
    (this.bulk ??= new Map()).set(streamId, [message]);
    this.schedule();
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
    if (this.encodingInPlace) {
      this.schedule();
      return;
    }
    this.scheduled = false;
    const batches = this.batches;
    if (batches !== undefined && batches.size > 0 && !this.closed) {
      for (const batch of batches.values()) this.emitBatch(batch);
      for (const batch of batches.values()) this.dropBatch(batch);
      batches.clear();
    }
    // A connection that has stopped streaming gives its batch buffers back.
    if (this.batchesWritten === 0) this.spares = undefined;
    this.batchesWritten = 0;
    if (this.closed || this.socket.destroyed) return;
    const bulk = this.bulk;
    if (bulk !== undefined && bulk.size > 0 && !this.waitingDrain) this.fillFragments(bulk);
    if (this.used > this.batchStart) {
      const batchBytes = this.used - this.batchStart;
      (this.ready ??= []).push((this.slab as Buffer).subarray(this.batchStart, this.used));
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
    if (ready !== undefined && ready.length > 0) {
      const chunks = this.output === undefined ? ready : this.output(ready);
      if (chunks.length === 1) this.send(chunks[0] as Uint8Array);
      else if (chunks.length > 1) {
        this.socket.cork();
        for (const chunk of chunks) this.send(chunk);
        this.socket.uncork();
      }
      ready.length = 0;
    }
    if (this.sent !== undefined && this.socket.writableLength === 0) this.giveBack();
    if (this.slab === null) this.ready = undefined;
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
    this.batches = undefined;
    this.lastBatch = undefined;
    this.spares = undefined;
    this.bulk = undefined;
    this.ready = undefined;
    this.slab = null;
    // Not given back: the socket may still be writing from them.
    this.sent = undefined;
  }

  /** Gives the pool the memory of every pooled message written since the last time; only when the socket holds nothing unwritten. */
  private giveBack(): void {
    const sent = this.sent as ArrayBuffer[];
    this.sent = undefined;
    for (const memory of sent) this.pool.give(memory);
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
      const flags = last ? message.flags : message.flags | FrameFlag.FOLLOWS;
      this.writeFragment(message.type, flags, streamId, undefined, message.data.subarray(message.offset, message.offset + length));
      message.offset += length;
      pending += FRAME_HEADER_SIZE + length;
      bulk.delete(streamId);
      if (last) {
        queue.shift();
        if (message.pooled) (this.sent ??= []).push(message.data.buffer as ArrayBuffer);
      }
      if (queue.length > 0) bulk.set(streamId, queue);
    }
  }

  /** Makes room for `n` bytes in the slab and returns where they start. */
  private reserve(n: number): number {
    if (this.encodingInPlace) {
      throw new RpcError(
        ErrorCode.FAILED_PRECONDITION,
        "a value being sent wrote to its own connection while it was encoded (a getter or proxy that sends): not supported",
      );
    }
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
    if (slab !== null && pending > 0) (this.ready ??= []).push(slab.subarray(this.batchStart, this.used));
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
