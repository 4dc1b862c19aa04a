import { ErrorCode, RpcError } from "./rpc-error.js";

/** What an {@link InboundStream} tells the side that feeds it. */
export interface InboundHost {
  /** The consumer took `n` items: grant the sender `n` more (send CREDIT). */
  grant(n: number): void;
  /** The consumer stopped early (`break`, `return()`): abandon the stream. */
  abandon(): void;
}

const DONE: IteratorResult<never> = { done: true, value: undefined };

/**
 * Bytes of small items a stream may have in flight (granted or buffered)
 * beyond its window. With items of 20 bytes a window of 256 lets a fast
 * producer send only one turn's worth before it waits for a grant; room for
 * more keeps both ends busy (measured: one stream of small items went from
 * about 250k to 470k items/s with 4,096 in flight).
 */
export const STREAM_BUFFER_BYTES = 256 * 1024;
/** A stream never has more than this many times its window in flight. */
export const MAX_WINDOW_FACTOR = 16;

/**
 * The receiving end of a stream of items, consumed with `for await`. The
 * sender starts with `window` items of credit, and grants go out as the
 * consumer takes items, in batches of at least half the current target, so
 * a consumer that stops reading stops the producer. The target is the
 * window, raised for small items so that up to {@link STREAM_BUFFER_BYTES}
 * of them (at most {@link MAX_WINDOW_FACTOR} windows) are in flight, and
 * lowered again when items grow: what a stalled consumer holds is bounded
 * by the window or by the byte budget, whichever is larger.
 */
export class InboundStream<T = unknown> implements AsyncIterableIterator<T> {
  private readonly host: InboundHost;
  private readonly window: number;
  /** Buffered items from {@link head} on, then those of the arrays in {@link later}. */
  private queue: T[] = [];
  private head = 0;
  /** Arrays of items taken whole from ITEMS frames that came while {@link queue} still had items. */
  private later: T[][] | undefined;
  /** Items in {@link later}. */
  private laterCount = 0;
  /** Items the sender may still send without a new grant. */
  private outstanding: number;
  /** Items in flight (granted, or received and not taken) to aim for. */
  private target: number;
  /** Running average of the items' encoded size, in bytes; 0 before the first. */
  private itemBytes = 0;
  private ended = false;
  private failure: RpcError | undefined;
  private waiting: { resolve(r: IteratorResult<T>): void; reject(e: RpcError): void } | undefined;

  /**
   * `expectedItemBytes` is what the items of this stream are expected to
   * measure on average (0, the default: unknown): the stream then aims at
   * the target such items get from the start, and {@link openingGrant} says
   * how much credit that needs beyond the window.
   */
  constructor(host: InboundHost, window: number, expectedItemBytes = 0) {
    this.host = host;
    this.window = window;
    this.outstanding = window;
    this.target = window;
    if (expectedItemBytes > 0) this.measure(expectedItemBytes, 1);
  }

  /**
   * Credit to grant before any item has come, with the CALL that opens the
   * stream: what brings the items in flight from the window up to the
   * target (see the constructor). Counted as granted; 0 when the target is
   * the window, or once the stream has started.
   */
  openingGrant(): number {
    if (this.closed) return 0;
    const grant = this.target - this.outstanding - this.buffered;
    if (grant <= 0) return 0;
    this.outstanding += grant;
    return grant;
  }

  /** The running average of the items' encoded size, in bytes: before the first item, the expected size (0 if none). */
  get averageItemBytes(): number {
    return this.itemBytes;
  }

  /** Items received and not yet consumed. */
  get buffered(): number {
    return this.queue.length - this.head + this.laterCount;
  }

  /** Whether no more items will come (ended, failed or abandoned). */
  get closed(): boolean {
    return this.ended || this.failure !== undefined;
  }

  /**
   * Adds an item from the sender (`bytes`: its encoded size). Returns false, taking nothing, when the
   * sender has no credit left: it broke flow control.
   */
  push(item: T, bytes: number): boolean {
    if (this.closed) return true;
    if (this.outstanding === 0) return false;
    this.outstanding--;
    this.measure(bytes, 1);
    const waiting = this.waiting;
    if (waiting !== undefined) {
      this.waiting = undefined;
      this.took(1);
      waiting.resolve({ done: false, value: item });
    } else if (this.later === undefined) this.queue.push(item);
    else {
      (this.later[this.later.length - 1] as T[]).push(item);
      this.laterCount++;
    }
    return true;
  }

  /**
   * Adds the items of one ITEMS frame, in order (`bytes`: the frame's
   * payload size), taking the array itself: the caller gives it up. Returns
   * false, taking none, when they are more than the sender's credit.
   */
  pushAll(items: T[], bytes: number): boolean {
    const count = items.length;
    if (this.closed || count === 0) return true;
    if (count > this.outstanding) return false;
    this.outstanding -= count;
    this.measure(bytes, count);
    const waiting = this.waiting;
    // A waiting consumer has taken everything: the queue is empty.
    const first = waiting === undefined ? 0 : 1;
    if (first < count) {
      // The array becomes the queue (or waits behind it), not copied item by item.
      if (this.head === this.queue.length && this.later === undefined) {
        this.queue = items;
        this.head = first;
      } else {
        (this.later ??= []).push(items);
        this.laterCount += count;
      }
    }
    if (first === 1) {
      const value = items[0] as T;
      // The array may now be the queue: it does not keep the item it hands over.
      items[0] = undefined as T;
      this.waiting = undefined;
      // After the rest are queued, so the grant counts them as in flight.
      this.took(1);
      (waiting as { resolve(r: IteratorResult<T>): void }).resolve({ done: false, value });
    }
    return true;
  }

  /** The sender finished; the consumer sees the end after the buffered items. */
  end(): void {
    if (this.closed) return;
    this.ended = true;
    if (this.waiting !== undefined && this.buffered === 0) {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting.resolve(DONE);
    }
  }

  /** The stream failed; the consumer gets `error` after the buffered items. */
  fail(error: RpcError): void {
    if (this.closed) return;
    this.failure = error;
    if (this.waiting !== undefined && this.buffered === 0) {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting.reject(error);
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.queue.length) {
      const item = this.queue[this.head] as T;
      this.queue[this.head] = undefined as T;
      this.head++;
      if (this.head === this.queue.length) this.nextArray();
      this.took(1);
      return Promise.resolve({ done: false, value: item });
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve(DONE);
    if (this.waiting !== undefined) {
      return Promise.reject(new RpcError(ErrorCode.FAILED_PRECONDITION, "stream is already being read: await each next() before the next"));
    }
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** The consumer stops early: buffered items are dropped and the stream is abandoned. */
  return(): Promise<IteratorResult<T>> {
    if (!this.closed) {
      this.ended = true;
      this.queue = [];
      this.head = 0;
      this.later = undefined;
      this.laterCount = 0;
      this.host.abandon();
    }
    // A next() still waiting (a consumer calling return() without awaiting it) ends too.
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.resolve(DONE);
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  /** The queue is used up: the next array waiting in {@link later} takes its place. */
  private nextArray(): void {
    const later = this.later;
    const next = later?.shift();
    if (next === undefined) {
      this.queue = [];
      this.head = 0;
      return;
    }
    this.laterCount -= next.length;
    if ((later as T[][]).length === 0) this.later = undefined;
    this.queue = next;
    this.head = 0;
  }

  /** Folds `count` items of `bytes` in all into the size average and moves the target. */
  private measure(bytes: number, count: number): void {
    const size = bytes / count;
    // A quick average: a stream whose items grow lowers its target within a few frames.
    this.itemBytes = this.itemBytes === 0 ? size : this.itemBytes + (size - this.itemBytes) / 4;
    const fits = Math.floor(STREAM_BUFFER_BYTES / Math.max(1, this.itemBytes));
    this.target = Math.max(this.window, Math.min(fits, this.window * MAX_WINDOW_FACTOR));
  }

  /** The consumer took `n` items: grant what brings the items in flight back to the target, once that is at least half of it. */
  private took(n: number): void {
    if (this.closed || n === 0) return;
    const inFlight = this.outstanding + this.buffered;
    const grant = this.target - inFlight;
    if (grant > 0 && grant * 2 >= this.target) {
      this.outstanding += grant;
      this.host.grant(grant);
    }
  }
}
