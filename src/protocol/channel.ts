import { MAX_CREDIT } from "./credit.js";
import { InboundStream } from "./inbound-stream.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

/** How and why a channel closed; what {@link Channel.closed} resolves with. */
export interface ChannelClose {
  /** The reason given to `close()`, or the error's message; "" for none. */
  readonly reason: string;
  /** Set when the channel ended abnormally: the handler threw, the connection dropped, a deadline. */
  readonly error?: RpcError;
  /** Which end closed it. */
  readonly by: "local" | "remote";
}

/** The frames a {@link Channel} sends; each end supplies its own (its final frame differs). */
export interface ChannelTransport {
  item(value: unknown): void;
  end(): void;
  credit(n: number): void;
  /** The local end closes: the server sends RESULT(reason), the client CANCEL(reason). */
  close(reason: string): void;
  /** Resolves when the socket can take more, or undefined when it can now. */
  whenWritable(): Promise<void> | undefined;
}

interface PendingSend {
  message: unknown;
  resolve(): void;
  reject(error: RpcError): void;
}

/**
 * A duplex, websocket-like channel, the same at both ends: `send()` messages,
 * read the other end's with `for await`, half-close with `end()`, close with
 * a reason. Flow-controlled both ways with the streams' credit: `send()`
 * resolves once the message may go (credit and socket drain), so a fast
 * sender cannot exhaust the receiver's memory.
 */
export class Channel<Send = unknown, Receive = unknown> implements AsyncIterable<Receive> {
  /** The channel's name (the method it was opened on). */
  readonly name: string;
  /** Resolves once when the channel closes, from either end or by failure. */
  readonly closed: Promise<ChannelClose>;
  private transport: ChannelTransport | undefined;
  private credit = 0;
  private readonly queue: PendingSend[] = [];
  private flushing = false;
  private readonly inbound: InboundStream<Receive>;
  private ended = false;
  private closeInfo: ChannelClose | undefined;
  private resolveClosed!: (info: ChannelClose) => void;

  /** `window` is how many messages this end buffers before the other must wait. */
  constructor(name: string, window: number) {
    this.name = name;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.inbound = new InboundStream<Receive>(
      {
        grant: (n) => {
          if (this.closeInfo === undefined) this.transport?.credit(n);
        },
        // Not reached: the channel's iterators never call return() on it.
        abandon: () => {},
      },
      window,
    );
  }

  /** Whether the channel is closed. */
  get isClosed(): boolean {
    return this.closeInfo !== undefined;
  }

  /**
   * Sends one message. Resolves when it is handed to the connection (credit
   * and socket permitting); rejects with FAILED_PRECONDITION after `end()` or
   * close, and with the close's error if the channel fails while it waits.
   */
  send(message: Send): Promise<void> {
    if (this.closeInfo !== undefined) return Promise.reject(this.closedError());
    if (this.ended) return Promise.reject(new RpcError(ErrorCode.FAILED_PRECONDITION, `channel ${this.name}: send after end()`));
    if (this.queue.length === 0 && this.transport !== undefined && this.credit > 0 && this.transport.whenWritable() === undefined) {
      this.credit--;
      return this.deliver(message);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      void this.flush();
    });
  }

  /** Half-close: no more messages from this end (after those queued); the other end can still send. */
  end(): void {
    if (this.ended || this.closeInfo !== undefined) return;
    this.ended = true;
    if (this.queue.length === 0) this.transport?.end();
  }

  /** Closes the channel with an optional reason; the other end's `closed` resolves with it. */
  close(reason = ""): void {
    if (this.closeInfo !== undefined) return;
    this.transport?.close(reason);
    this.finish({ reason, by: "local" });
  }

  /**
   * Reads the other end's messages. Leaving the loop (`break`, `return`)
   * stops reading, not the channel: a later loop goes on from the next
   * message. Use `close()` to close.
   */
  [Symbol.asyncIterator](): AsyncIterator<Receive> {
    const inbound = this.inbound;
    return {
      next: () => inbound.next(),
      return: () => Promise.resolve({ done: true, value: undefined }),
    };
  }

  // --- driven by the end's call object ---

  /** The channel is open on a connection; the other end accepts `peerWindow` messages before granting more. */
  attach(transport: ChannelTransport, peerWindow: number): void {
    this.transport = transport;
    this.credit = peerWindow;
    if (this.closeInfo !== undefined) return;
    void this.flush();
    if (this.ended && this.queue.length === 0) transport.end();
  }

  /** A message from the other end (`bytes`: its encoded size). Returns false if it came without credit. */
  receive(message: Receive, bytes: number): boolean {
    return this.inbound.push(message, bytes);
  }

  /** Messages from the other end that came in one ITEMS frame. Returns false, taking none, if they exceed the credit. */
  receiveAll(messages: Receive[], bytes: number): boolean {
    return this.inbound.pushAll(messages, bytes);
  }

  /** The other end half-closed. */
  receiveEnd(): void {
    this.inbound.end();
  }

  /** The other end granted more credit. */
  grant(n: number): void {
    this.credit = Math.min(MAX_CREDIT, this.credit + n);
    void this.flush();
  }

  /** The channel closed from the other end or failed; nothing more is sent. */
  closeFromRemote(info: ChannelClose): void {
    this.finish(info);
  }

  private deliver(message: unknown): Promise<void> {
    try {
      (this.transport as ChannelTransport).item(message);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(RpcError.from(error, ErrorCode.INVALID_ARGUMENT));
    }
  }

  /** Sends queued messages in order while credit and the socket allow. */
  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.queue.length > 0 && this.transport !== undefined && this.closeInfo === undefined && this.credit > 0) {
        const writable = this.transport.whenWritable();
        if (writable !== undefined) {
          await writable;
          continue;
        }
        const pending = this.queue.shift() as PendingSend;
        this.credit--;
        this.deliver(pending.message).then(pending.resolve, pending.reject);
      }
      if (this.ended && this.queue.length === 0 && this.closeInfo === undefined) this.transport?.end();
    } finally {
      this.flushing = false;
    }
  }

  private finish(info: ChannelClose): void {
    if (this.closeInfo !== undefined) return;
    this.closeInfo = info;
    const error = this.closedError();
    for (const pending of this.queue.splice(0)) pending.reject(error);
    if (info.error !== undefined) this.inbound.fail(info.error);
    else this.inbound.end();
    this.resolveClosed(info);
  }

  private closedError(): RpcError {
    const info = this.closeInfo as ChannelClose;
    if (info.error !== undefined) return info.error;
    const why = info.reason === "" ? "" : `: ${info.reason}`;
    return new RpcError(
      ErrorCode.FAILED_PRECONDITION,
      `channel ${this.name} was closed by the ${info.by === "local" ? "local" : "other"} end${why}`,
    );
  }
}
