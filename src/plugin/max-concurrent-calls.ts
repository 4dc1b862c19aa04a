import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { CallMiddleware } from "../server/call-middleware.js";
import { checkCount } from "./option-checks.js";

/** Options of {@link maxConcurrentCalls}. */
export interface MaxConcurrentCallsOptions {
  /** Most calls (and channel opens) running at once on one connection, counted while their handler runs. Required. */
  max: number;
}

/** What {@link maxConcurrentCalls} returns: the call middleware, with its options and a way to change them. */
export interface MaxConcurrentCalls extends CallMiddleware {
  /** The options in force. */
  readonly options: Readonly<MaxConcurrentCallsOptions>;
  /**
   * Changes `max`; it applies to the next call. Lowering it below the calls
   * running on a connection stops none of them: new calls there are refused
   * until enough have finished. Throws INVALID_ARGUMENT on a bad value,
   * changing nothing.
   */
  configure(options: Partial<MaxConcurrentCallsOptions>): void;
}

/**
 * Call middleware limiting the calls whose handlers run at once on each
 * connection; past `max` a call is refused with RESOURCE_EXHAUSTED
 * "too many concurrent calls on this connection (limit N)" and data
 * `{ limit }`. A call counts from the middleware until its handler has
 * returned (a streaming call: until it returned its iterable; a channel:
 * until its handler returned). Unlike the `maxConcurrentStreams` limit, this
 * is a server-side policy the client is not told about in the handshake.
 */
export function maxConcurrentCalls(options: MaxConcurrentCallsOptions): MaxConcurrentCalls {
  let current: Readonly<MaxConcurrentCallsOptions> = Object.freeze({ max: checkCount(options?.max, "maxConcurrentCalls max") });
  const running = new Map<string, number>();
  const middleware: CallMiddleware = async (ctx, next) => {
    const id = ctx.connectionId;
    const now = running.get(id) ?? 0;
    const max = current.max;
    if (now >= max) {
      throw new RpcError(ErrorCode.RESOURCE_EXHAUSTED, `too many concurrent calls on this connection (limit ${max})`, { limit: max });
    }
    running.set(id, now + 1);
    try {
      return await next();
    } finally {
      const left = (running.get(id) ?? 1) - 1;
      if (left === 0) running.delete(id);
      else running.set(id, left);
    }
  };
  return Object.defineProperties(middleware, {
    options: { get: () => current, enumerable: true },
    configure: {
      value: (update: Partial<MaxConcurrentCallsOptions>): void => {
        current = Object.freeze({ max: checkCount(update.max ?? current.max, "maxConcurrentCalls max") });
      },
    },
  }) as MaxConcurrentCalls;
}
