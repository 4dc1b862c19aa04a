import { MAX_CREDIT } from "./credit.js";
import type { RpcError } from "./rpc-error.js";

/**
 * Items a pump sends in one go before it lets the event loop turn. A pump
 * with credit runs in one chain of microtasks, in which its connection
 * reads nothing: a CREDIT frame the receiver sent early was seen only once
 * the credit ran out (then always a wait, of a turn at least), and other
 * connections waited for the whole window. About a millisecond of small
 * items; the turn's own cost (an epoll call, the turn's timers and
 * immediates) was not measured apart, but one stream gained 10-37% with it
 * (4 alternating pairs), its credit waits falling from 3.1 to 0.4-1.0 per
 * 10,000 items.
 */
export const ITEMS_PER_TURN = 1024;

/** Where an {@link OutboundPump} sends what it pulls. */
export interface PumpSink {
  /**
   * Send one item (ITEM); `sent` is the number of items sent before it. May
   * throw (unencodable, too large): the pump then fails.
   */
  item(value: unknown, sent: number): void;
  /** The source is exhausted (END). */
  end(): void;
  /** The source threw, or an item could not be sent. */
  error(error: unknown): void;
}

/**
 * Pulls a source (async) iterable and sends its values as items, no faster
 * than the receiver's credit allows: with no credit left it holds the one
 * item it pulled and stops pulling, so a generator on the far side of a
 * stalled consumer runs at most one item ahead, and one that has finished
 * ends the stream with no credit left.
 * Stopping calls the iterator's `return()`, which runs a generator's
 * `finally` once its current `await` settles (handlers pass their
 * AbortSignal to what they await so that happens at once).
 */
export class OutboundPump {
  private readonly sink: PumpSink;
  private readonly source: AsyncIterable<unknown> | Iterable<unknown>;
  private credit: number;
  private iterator: AsyncIterator<unknown> | Iterator<unknown> | undefined;
  private stopped = false;
  private sent = 0;
  /** The item pulled while there was no credit for it, sent when credit comes. */
  private held: IteratorResult<unknown> | undefined;
  /** A resume is queued for {@link held}. */
  private resuming = false;
  /** Resolves the promise {@link run} returned. */
  private settle: (() => void) | undefined;
  /** Items sent since the event loop last turned (see {@link ITEMS_PER_TURN}). */
  private sentThisTurn = 0;
  // Made once per pump: a `then` callback per item, where an `await` in a
  // loop resumed an async function per item (callgrind, an async generator
  // drained 10,000 items at a time: about 13% fewer instructions per item).
  private readonly onStep = (step: IteratorResult<unknown>): void => {
    if (this.take(step)) this.pull();
  };
  private readonly onRejected = (error: unknown): void => {
    this.failed(error);
  };
  private readonly pullNextTurn = (): void => {
    this.pull();
  };
  private readonly resume = (): void => {
    this.resuming = false;
    const held = this.held;
    if (held === undefined) return;
    this.held = undefined;
    if (this.take(held)) this.pull();
  };

  constructor(sink: PumpSink, source: AsyncIterable<unknown> | Iterable<unknown>, credit: number) {
    this.sink = sink;
    this.source = source;
    this.credit = credit;
  }

  /** Adds credit from a CREDIT frame. */
  grant(n: number): void {
    this.credit = Math.min(MAX_CREDIT, this.credit + n);
    // The held item goes out after the CREDIT frame's handler, not inside it.
    if (this.held !== undefined && !this.resuming) {
      this.resuming = true;
      queueMicrotask(this.resume);
    }
  }

  /** Stops pulling and closes the source iterator; nothing more is sent. */
  stop(_reason?: RpcError): void {
    if (this.stopped) return;
    this.stopped = true;
    this.closeIterator();
    // Waiting for credit: nothing else will finish the run. A pending pull finishes it when it settles.
    if (this.held !== undefined) {
      this.held = undefined;
      this.finished();
    }
  }

  /**
   * Runs until the source ends, fails or the pump is stopped; the promise
   * settles then, and never rejects. An async source is pulled one item at
   * a time; a sync one (or an async one whose `next()` returns a plain
   * result) is pulled in a loop for as long as there is credit.
   */
  run(): Promise<void> {
    let iterator: AsyncIterator<unknown> | Iterator<unknown>;
    try {
      const source = this.source as Partial<AsyncIterable<unknown> & Iterable<unknown>>;
      const asyncIterator = source[Symbol.asyncIterator];
      iterator =
        asyncIterator !== undefined ? asyncIterator.call(source) : (source[Symbol.iterator] as () => Iterator<unknown>).call(source);
    } catch (error) {
      this.sink.error(error);
      return Promise.resolve();
    }
    this.iterator = iterator;
    if (this.stopped) {
      this.closeIterator();
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.settle = resolve;
      this.pull();
    });
  }

  /** Pulls until an item is pending (async source), credit runs out, or the pump stops. */
  private pull(): void {
    const iterator = this.iterator as Iterator<unknown>;
    for (;;) {
      // Stopped while the last item was sent: its source has been closed.
      if (this.stopped) {
        this.finished();
        return;
      }
      if (this.sentThisTurn >= ITEMS_PER_TURN) {
        // setImmediate runs after the I/O of this turn or the next: CREDIT frames are read before the pump goes on.
        this.sentThisTurn = 0;
        setImmediate(this.pullNextTurn);
        return;
      }
      // The next item is pulled before the credit for it is there: the
      // source runs at most one item ahead of a stalled receiver, and a
      // source that has finished ends the stream without waiting for
      // credit it will not use (PROTOCOL.md §5.8).
      let step: unknown;
      try {
        step = iterator.next();
      } catch (error) {
        this.failed(error);
        return;
      }
      if (step instanceof Promise) {
        (step as Promise<IteratorResult<unknown>>).then(this.onStep, this.onRejected);
        return;
      }
      if (typeof (step as { then?: unknown } | null)?.then === "function") {
        // Another thenable: adopted as `await` would.
        Promise.resolve(step as PromiseLike<IteratorResult<unknown>>).then(this.onStep, this.onRejected);
        return;
      }
      if (!this.take(step as IteratorResult<unknown>)) return;
    }
  }

  /** Sends, holds or ends on one pulled step; true when the next may be pulled now. */
  private take(step: IteratorResult<unknown>): boolean {
    // Stopped while it was pulled: the source has been closed, the item is dropped.
    if (this.stopped) {
      this.finished();
      return false;
    }
    try {
      if (step.done === true) {
        this.stopped = true;
        this.sink.end();
        this.finished();
        return false;
      }
      if (this.credit === 0) {
        this.held = step;
        return false;
      }
      this.credit--;
      this.sentThisTurn++;
      this.sink.item(step.value, this.sent++);
      return true;
    } catch (error) {
      // Not a result object, or the item could not be sent.
      this.failed(error);
      return false;
    }
  }

  private failed(error: unknown): void {
    if (this.stopped) {
      this.finished();
      return;
    }
    this.stopped = true;
    try {
      this.sink.error(error);
    } finally {
      // A source that threw is finished; one whose item failed to send is not.
      this.closeIterator();
      this.finished();
    }
  }

  private finished(): void {
    const settle = this.settle;
    this.settle = undefined;
    settle?.();
  }

  private closeIterator(): void {
    const iterator = this.iterator;
    if (iterator?.return === undefined) return;
    try {
      const closing = iterator.return();
      if (closing instanceof Promise) closing.catch(() => {});
    } catch {
      // A source whose return() throws has nothing left to clean up here.
    }
  }
}
