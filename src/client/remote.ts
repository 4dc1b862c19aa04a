import { encodeCallPayload } from "../protocol/call-payload.js";
import type { Connection } from "../protocol/connection.js";
import { FrameType } from "../protocol/frame.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { CallKind } from "../protocol/wire-messages.js";
import type { CallOptions } from "./call-options.js";
import { type ServerStream, StreamingCall } from "./streaming-call.js";
import { startUnary } from "./unary-call.js";

/**
 * The other end of one connection, as a handler sees it (`this.remote`):
 * call the functions it registered, read its streams, or send it events. A
 * server handler reaches the client that called it; a client handler, the
 * server. Both ends can serve, as with patio's brokers; calls back open
 * streams from the server's side (even ids).
 */
export class Remote {
  private readonly connection: Connection;
  private readonly window: number;

  constructor(connection: Connection) {
    this.connection = connection;
    this.window = connection.streamWindow;
  }

  /** The connection's id (the server's name for it). */
  get connectionId(): string {
    return this.connection.id;
  }

  /** Whether the connection is still open. */
  get isOpen(): boolean {
    return this.connection.isOpen;
  }

  /** Calls a function the other end registered; as `Client.call`. */
  call<R = unknown>(method: string, args: readonly unknown[] = [], options: CallOptions = {}): Promise<R> {
    const streamId = this.open(method);
    if (streamId instanceof RpcError) return Promise.reject(streamId);
    return startUnary(this.connection, streamId, method, args, options.timeout, options.timeout, options, undefined) as Promise<R>;
  }

  /** Reads a stream from the other end; as `Client.stream`. */
  stream<T = unknown>(method: string, args: readonly unknown[] = [], options: CallOptions = {}): ServerStream<T> {
    const call = new StreamingCall(method, args, options, options.timeout, "stream", this.window);
    const streamId = this.open(method);
    if (streamId instanceof RpcError) call.reject(streamId);
    else {
      try {
        call.bind(this.connection, streamId);
      } catch (error) {
        this.connection.removeStream(streamId);
        call.reject(RpcError.from(error, ErrorCode.INVALID_ARGUMENT));
      }
    }
    return call as ServerStream<T>;
  }

  /**
   * Sends an event: the other end's listeners for `event` run with `args`;
   * nothing comes back. Throws INVALID_ARGUMENT if `args` cannot be encoded,
   * UNAVAILABLE if the connection is gone.
   */
  emit(event: string, ...args: unknown[]): void {
    const streamId = this.open(event);
    if (streamId instanceof RpcError) throw streamId;
    const connection = this.connection;
    const payload = encodeCallPayload(connection.codec, event, undefined, undefined, args, undefined, CallKind.EVENT);
    connection.send(FrameType.CALL, streamId, payload, true);
  }

  private open(what: string): number | RpcError {
    if (!this.connection.isOpen) return new RpcError(ErrorCode.UNAVAILABLE, `${what}: the connection is closed`);
    const streamId = this.connection.nextStreamId();
    return streamId < 0 ? new RpcError(ErrorCode.UNAVAILABLE, `${what}: the connection has no stream ids left`) : streamId;
  }
}
