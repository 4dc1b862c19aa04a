import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { CallMiddleware } from "../server/call-middleware.js";
import type { PeerInfo } from "../server/call-context.js";

/** One record of {@link accessLog}, written when a call has been answered (or refused). */
export interface AccessLogRecord {
  readonly method: string;
  readonly kind: "call" | "channel";
  readonly peer: PeerInfo;
  readonly connectionId: string;
  /** Milliseconds from the middleware's start to the handler's outcome (for a stream: until the handler returned its iterable). */
  readonly durationMs: number;
  /** "OK", or the error code the caller was sent. */
  readonly code: "OK" | ErrorCode;
}

/** Options of {@link accessLog}. */
export interface AccessLogOptions {
  /** Receives each record. What it throws is ignored. Required. */
  write: (record: AccessLogRecord) => void;
}

/**
 * Call middleware writing one {@link AccessLogRecord} per call, streaming
 * call and channel open, with its outcome and duration. Add it first to see
 * the refusals of later middleware too.
 *
 * ```ts
 * server.useCall(accessLog({ write: (r) => console.log(JSON.stringify(r)) }));
 * ```
 */
export function accessLog(options: AccessLogOptions): CallMiddleware {
  const write = options?.write;
  if (typeof write !== "function") throw new RpcError(ErrorCode.INVALID_ARGUMENT, "accessLog write must be a function (record) => void");
  return async (ctx, next) => {
    const start = performance.now();
    let code: "OK" | ErrorCode = "OK";
    try {
      return await next();
    } catch (error) {
      code = error instanceof RpcError ? error.code : ErrorCode.INTERNAL;
      throw error;
    } finally {
      try {
        write({
          method: ctx.method,
          kind: ctx.kind,
          peer: ctx.peer,
          connectionId: ctx.connectionId,
          durationMs: performance.now() - start,
          code,
        });
      } catch {
        // Documented: a failing log writer does not fail the call.
      }
    }
  };
}
