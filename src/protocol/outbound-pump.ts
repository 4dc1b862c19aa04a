import { MAX_CREDIT } from "./credit.js";
import type { RpcError } from "./rpc-error.js";

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
  private wake: (() => void) | undefined;
  private stopped = false;
  private sent = 0;

  constructor(sink: PumpSink, source: AsyncIterable<unknown> | Iterable<unknown>, credit: number) {
    this.sink = sink;
    this.source = source;
    this.credit = credit;
  }

  /** Adds credit from a CREDIT frame. */
  grant(n: number): void {
    this.credit = Math.min(MAX_CREDIT, this.credit + n);
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Stops pulling and closes the source iterator; nothing more is sent. */
  stop(_reason?: RpcError): void {
    if (this.stopped) return;
    this.stopped = true;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
    this.closeIterator();
  }

  /** Runs until the source ends, fails or the pump is stopped. Never rejects. */
  async run(): Promise<void> {
    let iterator: AsyncIterator<unknown> | Iterator<unknown>;
    try {
      const source = this.source as Partial<AsyncIterable<unknown> & Iterable<unknown>>;
      const asyncIterator = source[Symbol.asyncIterator];
      iterator =
        asyncIterator !== undefined ? asyncIterator.call(source) : (source[Symbol.iterator] as () => Iterator<unknown>).call(source);
    } catch (error) {
      this.sink.error(error);
      return;
    }
    this.iterator = iterator;
    if (this.stopped) {
      this.closeIterator();
      return;
    }
    try {
      for (;;) {
        // Stopped while the last item was sent: its source has been closed.
        if (this.stopped) return;
        // The next item is pulled before the credit for it is there: the
        // source runs at most one item ahead of a stalled receiver, and a
        // source that has finished ends the stream without waiting for
        // credit it will not use (PROTOCOL.md §5.8).
        const step = await iterator.next();
        if (this.stopped) return;
        if (step.done === true) {
          this.stopped = true;
          this.sink.end();
          return;
        }
        while (this.credit === 0 && !this.stopped) await new Promise<void>((resolve) => (this.wake = resolve));
        if (this.stopped) return;
        this.credit--;
        this.sink.item(step.value, this.sent++);
      }
    } catch (error) {
      if (this.stopped) return;
      this.stopped = true;
      this.sink.error(error);
      // A source that threw is finished; one whose item failed to send is not.
      this.closeIterator();
    }
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
