import { FrameType, frameTypeName } from "../protocol/frame.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import { errorFromBody } from "../protocol/wire-messages.js";

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
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  /** Only calls with a signal pay for this closure. */
  private onAbort: (() => void) | undefined;

  constructor(connection: Connection, streamId: number, method: string, timeoutMs: number | undefined, signal: AbortSignal | undefined) {
    this.connection = connection;
    this.streamId = streamId;
    this.method = method;
    this.signal = signal;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    if (timeoutMs !== undefined) {
      this.timer = setTimeout(() => {
        this.giveUp(new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${method}: deadline of ${timeoutMs} ms exceeded`));
      }, timeoutMs);
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
      else {
        this.connection.cancelStream(this.streamId);
        this.reject(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: unexpected ${frameTypeName(type)} frame on a unary call`));
      }
    } catch (error) {
      this.reject(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    }
  }

  onReset(error: RpcError): void {
    if (this.done) return;
    this.settle();
    this.reject(error);
  }

  private giveUp(error: RpcError): void {
    if (this.done) return;
    this.settle();
    this.connection.cancelStream(this.streamId);
    this.reject(error);
  }

  private settle(): void {
    this.done = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.onAbort !== undefined) this.signal?.removeEventListener("abort", this.onAbort);
    this.connection.removeStream(this.streamId);
  }
}
