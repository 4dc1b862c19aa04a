import diagnostics from "node:diagnostics_channel";
import type { Socket } from "node:net";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { PeerInfo } from "./call-context.js";

/**
 * What a connection middleware knows about a new connection. The chain runs
 * as soon as the socket is accepted, before the client's HELLO is read: the
 * cheapest point to turn a connection away, and the one connection limits
 * need. So there is no handshake metadata here (check credentials per call,
 * where `CallContext.connectionMetadata` has them). Bytes the client sends
 * meanwhile wait in the socket until the chain has admitted it.
 */
export interface IncomingConnection {
  /** The client's address, port and family. IPv4 clients of a dual-stack listener appear as `::ffff:a.b.c.d` (family IPv6). */
  readonly peer: PeerInfo;
  /** Local address the connection came in on (`127.0.0.1`, `::ffff:127.0.0.1`), or the socket path for Unix sockets. */
  readonly localAddress: string;
  /** Local port the connection came in on; 0 for Unix sockets. */
  readonly localPort: number;
  /** The listener it came in on, as `Server.addresses` lists it (`127.0.0.1:4000`, `[::]:4000`, `unix:/path`). */
  readonly listener: string;
  /** True once the whole chain has admitted the connection. */
  readonly admitted: boolean;
  /** True once the connection has closed, for whatever reason (refused, handshake failed, client left, server closed). */
  readonly closed: boolean;
  /** Aborted when the connection closes, with the close reason (an RpcError): for middleware doing slow work. */
  readonly signal: AbortSignal;
  /**
   * Calls `listener` once when the connection closes, whether it was admitted
   * or refused (see `admitted`); at once (in a microtask) if it already has.
   * This is where counters are given back. Exceptions thrown by `listener`
   * are ignored.
   */
  onClose(listener: (reason: RpcError) => void): void;
  /**
   * Refuses the connection: the client gets ERROR `code`, `message` (and
   * `data`) on stream 0 and the connection closes. Throws the RpcError, so
   * `conn.reject(...)` ends the middleware like `throw` would; the refusal
   * stands even if that throw is caught. No effect once the chain has settled.
   */
  reject(code: ErrorCode, message: string, data?: unknown): never;
}

/**
 * A connection middleware: runs on every accepted connection, in the order
 * added, before the handshake. Call `next()` (and return or await its
 * promise) to pass the connection on; throw (an {@link RpcError}, or through
 * `conn.reject`) to refuse it. `next()` resolves once every later middleware
 * has passed the connection on, and rejects with their refusal (or, if the
 * connection has closed meanwhile, with the reason it closed, without
 * running the rest of the chain).
 *
 * The connection is admitted once every middleware has called `next()` and
 * every middleware's promise has settled without an error. It is refused
 * when any of them throws (its RpcError goes to the client; anything else as
 * INTERNAL "internal error", or its message with `exposeErrors`), calls
 * `next()` twice (INTERNAL), or returns without calling `next()`
 * (PERMISSION_DENIED "connection refused"). Do not await the connection's
 * end in a middleware: that holds up admission until the handshake timeout
 * closes it. Use `conn.onClose` instead.
 */
export type ConnectionMiddleware = (conn: IncomingConnection, next: () => Promise<void>) => Promise<void> | void;

/** The message published on {@link connectionRefusedChannel}. */
export interface ConnectionRefusedMessage {
  readonly peer: PeerInfo;
  /** The listener the connection came in on. */
  readonly listener: string;
  /** The code and message the client was sent. */
  readonly code: ErrorCode;
  readonly message: string;
  /** What the middleware threw (an RpcError, or the original error behind an INTERNAL refusal). */
  readonly error: unknown;
}

/**
 * `rapt:server:connection-refused`: a connection middleware refused a
 * connection. Messages are {@link ConnectionRefusedMessage}s.
 */
export const connectionRefusedChannel = diagnostics.channel("rapt:server:connection-refused");

const noop = (): void => {};

/** A rejected promise that does not count as unhandled when the middleware drops it. */
function handledRejection(error: RpcError): Promise<void> {
  const promise = Promise.reject(error);
  promise.catch(noop);
  return promise;
}

/**
 * The server's side of {@link IncomingConnection}, and the runner of the
 * middleware chain for it. Internal: the server creates one per accepted
 * connection when it has connection middleware.
 */
export class IncomingConnectionState implements IncomingConnection {
  readonly peer: PeerInfo;
  readonly localAddress: string;
  readonly localPort: number;
  readonly listener: string;
  admitted = false;
  closed = false;
  private closeReason: RpcError | undefined;
  private listeners: Array<(reason: RpcError) => void> = [];
  private controller: AbortController | undefined;
  /** A refusal that stands even if the middleware swallowed its throw. */
  private forced: RpcError | undefined;
  private settled = false;

  constructor(socket: Socket, peer: PeerInfo, listener: string) {
    this.peer = peer;
    this.listener = listener;
    if (peer.family === "unix") {
      this.localAddress = peer.address;
      this.localPort = 0;
    } else {
      this.localAddress = socket.localAddress ?? "";
      this.localPort = socket.localPort ?? 0;
    }
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.closed) this.controller.abort(this.closeReason);
    }
    return this.controller.signal;
  }

  onClose(listener: (reason: RpcError) => void): void {
    if (!this.closed) {
      this.listeners.push(listener);
      return;
    }
    const reason = this.closeReason as RpcError;
    queueMicrotask(() => {
      try {
        listener(reason);
      } catch {
        // Documented: a close listener cannot affect anything any more.
      }
    });
  }

  reject(code: ErrorCode, message: string, data?: unknown): never {
    const error = new RpcError(code, message, data);
    if (!this.settled) this.forced ??= error;
    throw error;
  }

  /** The connection has closed: tells the close listeners and aborts `signal`. */
  markClosed(reason: RpcError): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.controller?.abort(reason);
    const listeners = this.listeners;
    this.listeners = [];
    for (const listener of listeners) {
      try {
        listener(reason);
      } catch {
        // Documented: ignored.
      }
    }
  }

  /**
   * Runs `chain` on this connection. Resolves with undefined when the
   * connection is admitted, or with what refused it (the thrown value as it
   * was, for diagnostics). Never rejects. With `exposeErrors`, a thrown
   * non-RpcError refuses with its own message instead of "internal error".
   */
  async run(chain: readonly ConnectionMiddleware[], exposeErrors = false): Promise<{ refusal: RpcError; thrown: unknown } | undefined> {
    // Every middleware's own promise, by position in the chain: a middleware
    // that calls next() without returning it must not let the connection in
    // while the rest of the chain is still deciding.
    const levels: Array<Promise<void>> = [];
    let reachedEnd = false;
    const step = (index: number): Promise<void> => {
      if (index === chain.length) {
        reachedEnd = true;
        return Promise.resolve();
      }
      const middleware = chain[index] as ConnectionMiddleware;
      let called = false;
      const next = (): Promise<void> => {
        if (this.closed) return handledRejection(this.closeReason as RpcError);
        if (this.settled) {
          return handledRejection(
            new RpcError(ErrorCode.INTERNAL, `connection middleware #${index + 1} called next() after the chain had finished`),
          );
        }
        if (called) {
          const error = new RpcError(ErrorCode.INTERNAL, `connection middleware #${index + 1} called next() more than once`);
          this.forced ??= error;
          return handledRejection(error);
        }
        called = true;
        return step(index + 1);
      };
      let level: Promise<void>;
      try {
        level = Promise.resolve(middleware(this, next));
      } catch (error) {
        level = Promise.reject(error);
      }
      level.catch(noop);
      levels[index] = level;
      return level;
    };
    step(0);
    // A level exists only once the one before it called next(), so the
    // array has no holes; more levels may start while earlier ones settle.
    let results: Array<PromiseSettledResult<void>> = [];
    while (results.length < levels.length) results = await Promise.allSettled([...levels]);
    this.settled = true;
    // The outermost error wins, as it would propagate out of a koa chain.
    const rejected = results.find((result) => result.status === "rejected");
    const failed = rejected !== undefined;
    const thrown: unknown = rejected?.reason;
    if (failed) return { refusal: this.forced ?? toRefusal(thrown, exposeErrors), thrown };
    if (this.forced !== undefined) return { refusal: this.forced, thrown: this.forced };
    if (!reachedEnd) {
      const refusal = new RpcError(ErrorCode.PERMISSION_DENIED, "connection refused");
      return { refusal, thrown: refusal };
    }
    // Closed meanwhile (handshake timeout, shutdown): never admitted.
    if (!this.closed) this.admitted = true;
    return undefined;
  }
}

/** What the client is told for a thrown value: an RpcError as it is, anything else as INTERNAL. */
function toRefusal(thrown: unknown, exposeErrors: boolean): RpcError {
  if (thrown instanceof RpcError) return thrown;
  const message = exposeErrors ? (thrown instanceof Error ? thrown.message : String(thrown)) : "internal error";
  return new RpcError(ErrorCode.INTERNAL, message, undefined, { cause: thrown });
}
