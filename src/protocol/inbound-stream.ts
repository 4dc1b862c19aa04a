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
 * The receiving end of a stream of items, consumed with `for await`. It holds
 * at most `window` items: the sender may send only that many before it is
 * granted more, and grants are sent as the consumer takes items (in batches
 * of half the window, as RSocket's REQUEST_N is typically used), so a
 * consumer that stops reading stops the producer.
 */
export class InboundStream<T = unknown> implements AsyncIterableIterator<T> {
  private readonly host: InboundHost;
  private readonly window: number;
  private queue: T[] = [];
  private head = 0;
  /** Items the sender may still send without a new grant. */
  private outstanding: number;
  /** Items taken since the last grant. */
  private taken = 0;
  private ended = false;
  private failure: RpcError | undefined;
  private waiting: { resolve(r: IteratorResult<T>): void; reject(e: RpcError): void } | undefined;

  constructor(host: InboundHost, window: number) {
    this.host = host;
    this.window = window;
    this.outstanding = window;
  }

  /** Items received and not yet consumed. */
  get buffered(): number {
    return this.queue.length - this.head;
  }

  /** Whether no more items will come (ended, failed or abandoned). */
  get closed(): boolean {
    return this.ended || this.failure !== undefined;
  }

  /**
   * Adds an item from the sender. Returns false, taking nothing, when the
   * sender has no credit left: it broke flow control.
   */
  push(item: T): boolean {
    if (this.closed) return true;
    if (this.outstanding === 0) return false;
    this.outstanding--;
    const waiting = this.waiting;
    if (waiting !== undefined) {
      this.waiting = undefined;
      this.took(1);
      waiting.resolve({ done: false, value: item });
    } else this.queue.push(item);
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
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
      }
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
      this.host.abandon();
    }
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  private took(n: number): void {
    if (this.closed) return;
    this.taken += n;
    if (this.taken * 2 >= this.window) {
      const grant = this.taken;
      this.taken = 0;
      this.outstanding += grant;
      this.host.grant(grant);
    }
  }
}
