import { FrameType } from "../protocol/frame.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import type { Metadata } from "../protocol/wire-messages.js";
import type { CallContext, PeerInfo } from "./call-context.js";
import { serverChannels } from "./diagnostics.js";

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 0x7fff_ffff;

/** What a {@link ServerCall} needs from the connection it arrived on. */
export interface CallHost {
  readonly connection: Connection;
  readonly peer: PeerInfo;
  readonly connectionMetadata: Metadata;
  /** Whether thrown non-RpcError messages reach the caller (else "internal error"). */
  readonly exposeErrors: boolean;
}

/**
 * One unary call on the server: the handler's `this` (its {@link CallContext})
 * and the receiving end of its stream. It answers exactly once: result,
 * error, or nothing when the caller cancelled or the connection dropped.
 */
export class ServerCall implements CallContext, StreamReceiver {
  readonly method: string;
  readonly metadata: Metadata;
  readonly deadline: number | undefined;
  readonly streamId: number;
  private readonly host: CallHost;
  private controller: AbortController | undefined;
  private abortReason: RpcError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(host: CallHost, streamId: number, method: string, metadata: Metadata, timeoutMs: number | undefined) {
    this.host = host;
    this.streamId = streamId;
    this.method = method;
    this.metadata = metadata;
    if (timeoutMs === undefined) this.deadline = undefined;
    else {
      this.deadline = Date.now() + timeoutMs;
      this.arm(timeoutMs, timeoutMs);
    }
  }

  get peer(): PeerInfo {
    return this.host.peer;
  }

  get connectionId(): string {
    return this.host.connection.id;
  }

  get connectionMetadata(): Metadata {
    return this.host.connectionMetadata;
  }

  /** Created on first use: most handlers never look, and a controller per call is not free. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  /** Whether the call was answered or abandoned. */
  get finished(): boolean {
    return this.done;
  }

  /** Sends the handler's result. */
  succeed(value: unknown): void {
    if (this.done) return;
    if (typeof value === "object" && value !== null && Symbol.asyncIterator in value) {
      this.fail(
        new RpcError(ErrorCode.UNIMPLEMENTED, `${this.method} returned an async iterable; this server version has no streaming results`),
      );
      return;
    }
    this.finish();
    try {
      this.host.connection.sendValue(FrameType.RESULT, this.streamId, value);
    } catch (error) {
      const reason =
        error instanceof RpcError && error.code === ErrorCode.RESOURCE_EXHAUSTED
          ? error
          : new RpcError(ErrorCode.INTERNAL, `${this.method}: result cannot be sent: ${(error as Error).message}`);
      this.host.connection.sendError(this.streamId, reason);
    }
  }

  /** Sends an error: an RpcError as it is; anything else as INTERNAL. */
  fail(error: unknown): void {
    if (this.done) return;
    this.finish();
    this.host.connection.sendError(this.streamId, this.toRpcError(error));
  }

  onMessage(type: number): void {
    if (type === FrameType.CANCEL) {
      this.abort(new RpcError(ErrorCode.CANCELLED, `${this.method}: cancelled by the caller`));
      this.finish();
      return;
    }
    const error = new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: unexpected frame type ${type} on a unary call`);
    this.abort(error);
    this.fail(error);
  }

  onReset(error: RpcError): void {
    this.abort(error);
    this.done = true;
    clearTimeout(this.timer);
  }

  /**
   * Timeouts go up to the CALL head's uint32 (49.7 days), past setTimeout's
   * 24.8-day range, where it would fire after 1 ms: long ones are waited out
   * in steps.
   */
  private arm(left: number, timeoutMs: number): void {
    const step = Math.min(left, MAX_TIMER_MS);
    this.timer = setTimeout(() => (left > step ? this.arm(left - step, timeoutMs) : this.expire(timeoutMs)), step);
    this.timer.unref();
  }

  private expire(timeoutMs: number): void {
    const error = new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${this.method}: deadline of ${timeoutMs} ms exceeded`);
    this.abort(error);
    this.fail(error);
  }

  private abort(reason: RpcError): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }

  private finish(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.host.connection.removeStream(this.streamId);
  }

  private toRpcError(error: unknown): RpcError {
    if (error instanceof RpcError) return error;
    if (serverChannels.handlerError.hasSubscribers) {
      serverChannels.handlerError.publish({ method: this.method, connectionId: this.connectionId, error });
    }
    if (!this.host.exposeErrors) return new RpcError(ErrorCode.INTERNAL, "internal error");
    return new RpcError(ErrorCode.INTERNAL, error instanceof Error ? error.message : String(error));
  }
}
