import { FrameType, frameTypeName } from "../protocol/frame.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import { assertMetadata, errorFromBody } from "../protocol/wire-messages.js";
import { encodeCallPrefix } from "../protocol/call-payload.js";
import type { CallOptions } from "./call-options.js";
import { LongTimer } from "./long-timer.js";

/** Re-issues a call the server never processed (refused by its GOAWAY); provided by the client. */
export interface UnprocessedRetry {
  retry(
    method: string,
    args: readonly unknown[],
    options: CallOptions,
    timeoutMs: number | undefined,
    totalTimeoutMs: number | undefined,
  ): Promise<unknown>;
}

/**
 * The client's end of one unary call: settles its promise exactly once, from
 * RESULT, ERROR, the deadline, the caller's AbortSignal or a lost connection,
 * and tells the server (CANCEL) when the client gives up first.
 */
export class UnaryCall implements StreamReceiver {
  readonly promise: Promise<unknown>;
  private resolve!: (value: unknown) => void;
  private reject!: (error: RpcError) => void;
  private readonly connection: Connection;
  private readonly streamId: number;
  private readonly method: string;
  private readonly signal: AbortSignal | undefined;
  private timer: LongTimer | undefined;
  private done = false;
  /** Only calls with a signal pay for this closure. */
  private onAbort: (() => void) | undefined;
  /** Set while a transparent retry is still allowed. */
  private readonly retrier: UnprocessedRetry | undefined;
  private readonly args: readonly unknown[];
  private readonly options: CallOptions;
  private readonly totalTimeoutMs: number | undefined;
  private readonly deadlineAt: number | undefined;

  /**
   * `timeoutMs` is what is left of the call's timeout once it has a
   * connection; errors name `totalTimeoutMs`, the timeout the caller gave
   * (not a fraction of a millisecond left after the wait).
   */
  constructor(
    connection: Connection,
    streamId: number,
    method: string,
    timeoutMs: number | undefined,
    totalTimeoutMs: number | undefined,
    args: readonly unknown[],
    options: CallOptions,
    retrier: UnprocessedRetry | undefined,
  ) {
    const signal = options.signal;
    this.connection = connection;
    this.streamId = streamId;
    this.method = method;
    this.signal = signal;
    this.args = args;
    this.options = options;
    this.retrier = retrier;
    this.totalTimeoutMs = totalTimeoutMs;
    this.deadlineAt = timeoutMs === undefined || retrier === undefined ? undefined : performance.now() + timeoutMs;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    if (timeoutMs !== undefined) {
      this.timer = new LongTimer(timeoutMs, () => {
        this.expire(new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${method}: deadline of ${totalTimeoutMs} ms exceeded`));
      });
    }
    if (signal !== undefined) {
      this.onAbort = () => {
        const reason = signal.reason as unknown;
        this.giveUp(
          reason instanceof RpcError && reason.code === ErrorCode.CANCELLED
            ? reason
            : new RpcError(ErrorCode.CANCELLED, `${method}: cancelled by the caller`, undefined, { cause: reason }),
        );
      };
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
  }

  onMessage(type: number, payload: Buffer): void {
    if (this.done) return;
    this.settle();
    try {
      if (type === FrameType.RESULT) this.resolve(this.connection.codec.decode(payload));
      else if (type === FrameType.ERROR) this.reject(errorFromBody(this.connection.codec.decode(payload)));
      else if (type === FrameType.ITEM || type === FrameType.ITEMS || type === FrameType.END) {
        this.connection.cancelStream(this.streamId);
        this.reject(
          new RpcError(
            ErrorCode.FAILED_PRECONDITION,
            `${this.method} streams its result: use client.stream() or iterate it with for await`,
          ),
        );
      } else {
        this.connection.cancelStream(this.streamId);
        this.reject(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: unexpected ${frameTypeName(type)} frame on a unary call`));
      }
    } catch (error) {
      this.reject(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    }
  }

  onReset(error: RpcError, notProcessed?: boolean): void {
    if (this.done) return;
    this.settle();
    if (notProcessed === true && this.retrier !== undefined) {
      // The server's GOAWAY says it never started this call: send it again,
      // once, on another connection, within what is left of the deadline.
      const left = this.deadlineAt === undefined ? undefined : Math.max(0, this.deadlineAt - performance.now());
      this.retrier.retry(this.method, this.args, this.options, left, this.totalTimeoutMs).then(this.resolve, this.reject);
      return;
    }
    this.reject(error);
  }

  private giveUp(error: RpcError): void {
    if (this.done) return;
    this.settle();
    this.connection.cancelStream(this.streamId);
    this.reject(error);
  }

  /**
   * The deadline passed. The server was sent the timeout with the CALL and
   * expires the call itself at about the same moment, so its handler's signal
   * aborts with DEADLINE_EXCEEDED; a CANCEL would race that timer and (as it
   * left first) make the handler see CANCELLED instead. Only a CALL cut off
   * mid-message needs CANCEL: the server never saw it whole, so it has no
   * deadline running and holds its fragments.
   */
  private expire(error: RpcError): void {
    if (this.done) return;
    this.settle();
    if (this.connection.dropStream(this.streamId)) this.connection.sendEmpty(FrameType.CANCEL, this.streamId);
    this.reject(error);
  }

  private settle(): void {
    this.done = true;
    this.timer?.clear();
    if (this.onAbort !== undefined) this.signal?.removeEventListener("abort", this.onAbort);
    this.connection.removeStream(this.streamId);
  }
}

/**
 * Sends a unary CALL on `streamId` of `connection` and returns its result:
 * the one path for client calls, session calls and calls back over a
 * server's connection ({@link Remote}). Never throws; every problem rejects.
 */
export function startUnary(
  connection: Connection,
  streamId: number,
  method: string,
  args: readonly unknown[],
  timeout: number | undefined,
  totalTimeout: number | undefined,
  options: CallOptions,
  retrier: UnprocessedRetry | undefined,
  session?: number,
): Promise<unknown> {
  const limit = connection.peerLimits?.maxConcurrentStreams ?? Number.POSITIVE_INFINITY;
  if (connection.streamCount >= limit) {
    return Promise.reject(
      new RpcError(ErrorCode.RESOURCE_EXHAUSTED, `${method}: the peer allows ${limit} concurrent calls per connection`),
    );
  }
  let prefix: Buffer;
  let encodedArgs: Uint8Array | undefined;
  try {
    const metadata = options.metadata === undefined ? undefined : assertMetadata(options.metadata);
    const timeoutMs = timeout === undefined ? undefined : Math.ceil(timeout);
    prefix = encodeCallPrefix(connection.codec, method, timeoutMs, metadata, undefined, undefined, session);
    // Plain arguments go straight into the outgoing batch. The CALL is only
    // queued (written at the end of the turn), so its stream is registered
    // below before any answer can be read.
    if (!connection.sendInPlace(FrameType.CALL, streamId, prefix, args)) {
      // A view of the shared encoder's buffer: nothing may encode until sendParts has copied it.
      encodedArgs = connection.codec.encodeShared(args);
    }
  } catch (error) {
    return Promise.reject(RpcError.from(error, ErrorCode.INVALID_ARGUMENT));
  }
  const call = new UnaryCall(connection, streamId, method, timeout, totalTimeout, args, options, retrier);
  connection.addStream(streamId, call);
  if (encodedArgs === undefined) return call.promise;
  try {
    connection.sendParts(FrameType.CALL, streamId, prefix, encodedArgs);
  } catch (error) {
    call.onReset(RpcError.from(error, ErrorCode.INTERNAL));
  }
  return call.promise;
}
