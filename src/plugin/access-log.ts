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

/** What {@link accessLog} returns: the call middleware, with its options and a way to change them. */
export interface AccessLog extends CallMiddleware {
  /** The options in force. */
  readonly options: Readonly<AccessLogOptions>;
  /** Changes the writer; records of calls that end from now on go to it. Throws INVALID_ARGUMENT on a bad value, changing nothing. */
  configure(options: Partial<AccessLogOptions>): void;
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
export function accessLog(options: AccessLogOptions): AccessLog {
  let current = settle(options);
  const middleware: CallMiddleware = async (ctx, next) => {
    const start = performance.now();
    let code: "OK" | ErrorCode = "OK";
    try {
      return await next();
    } catch (error) {
      code = error instanceof RpcError ? error.code : ErrorCode.INTERNAL;
      throw error;
    } finally {
      try {
        current.write({
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
  return Object.defineProperties(middleware, {
    options: { get: () => current, enumerable: true },
    configure: {
      value: (update: Partial<AccessLogOptions>): void => {
        current = settle({ ...current, ...update });
      },
    },
  }) as AccessLog;
}

function settle(options: AccessLogOptions): Readonly<AccessLogOptions> {
  const write = options?.write;
  if (typeof write !== "function") throw new RpcError(ErrorCode.INVALID_ARGUMENT, "accessLog write must be a function (record) => void");
  return Object.freeze({ write });
}
