import { ErrorCode } from "../protocol/rpc-error.js";
import type { ConnectionMiddleware, IncomingConnection } from "../server/connection-middleware.js";
import { checkCount, checkDuration } from "./option-checks.js";

/** Options of {@link connLimit}. */
export interface ConnLimitOptions {
  /** Most connections open at once (those this middleware passed on and that have not closed). Default 1024. */
  max: number;
  /**
   * Milliseconds during which every new connection is refused once one was
   * refused for being past `max`, even if connections have closed meanwhile.
   * Refusals during the block do not extend it. Default 0: no block, a
   * connection is admitted as soon as one closes.
   */
  blockTime: number;
}

/** The middleware {@link connLimit} returns, with its run-time controls. */
export interface ConnLimit extends ConnectionMiddleware {
  /** The options in force. */
  readonly options: Readonly<ConnLimitOptions>;
  /** Connections this middleware passed on that have not closed yet. */
  readonly open: number;
  /** Milliseconds left of the current block; 0 when connections are not blocked. */
  readonly blockedFor: number;
  /**
   * Changes the options given; both apply at once. Lowering `max` below
   * `open` closes nothing: new connections are refused until enough have
   * closed. A block in progress is measured with the new `blockTime` from
   * when it began (so `blockTime: 0` lifts it). Throws INVALID_ARGUMENT on a
   * bad value, changing nothing.
   */
  configure(options: Partial<ConnLimitOptions>): void;
}

/**
 * Connection middleware limiting the connections open on the server at
 * once, as Python rap's `conn_limit`. Past `max`, a new connection is
 * refused with RESOURCE_EXHAUSTED and, with `blockTime`, every new
 * connection is refused for `blockTime` ms after that, however many have
 * closed. A connection counts from the moment this middleware passes it on
 * until it closes; one refused here, or by a later middleware, does not
 * count once it has closed. Each call makes an independent counter: add the
 * same one to several servers to limit them together.
 *
 * ```ts
 * const limit = connLimit({ max: 1000, blockTime: 5000 });
 * server.useConnection(limit);
 * limit.configure({ max: 2000 }); // at run time
 * ```
 */
export function connLimit(options: Partial<ConnLimitOptions> = {}): ConnLimit {
  let current: Readonly<ConnLimitOptions> = validate({ max: options.max ?? 1024, blockTime: options.blockTime ?? 0 });
  let open = 0;
  /** When the current block began (performance.now()), or undefined. */
  let blockedAt: number | undefined;
  const blockLeft = (now: number): number => {
    if (blockedAt === undefined) return 0;
    const left = blockedAt + current.blockTime - now;
    if (left > 0) return left;
    blockedAt = undefined;
    return 0;
  };
  const middleware = (conn: IncomingConnection, next: () => Promise<void>): Promise<void> => {
    const now = performance.now();
    const { max, blockTime } = current;
    const left = Math.ceil(blockLeft(now));
    if (left > 0) {
      conn.reject(
        ErrorCode.RESOURCE_EXHAUSTED,
        `connection refused: the server reached its connection limit (${max}); new connections are refused for another ${left} ms`,
        { limit: max, retryAfter: left },
      );
    }
    if (open >= max) {
      if (blockTime > 0) blockedAt = now;
      conn.reject(
        ErrorCode.RESOURCE_EXHAUSTED,
        `connection refused: the server has reached its connection limit (${max})`,
        blockTime > 0 ? { limit: max, retryAfter: blockTime } : { limit: max },
      );
    }
    open++;
    conn.onClose(() => {
      open--;
    });
    return next();
  };
  return Object.defineProperties(middleware, {
    options: { get: () => current, enumerable: true },
    open: { get: () => open, enumerable: true },
    blockedFor: { get: () => Math.ceil(blockLeft(performance.now())), enumerable: true },
    configure: {
      value: (update: Partial<ConnLimitOptions>): void => {
        current = validate({ max: update.max ?? current.max, blockTime: update.blockTime ?? current.blockTime });
      },
    },
  }) as ConnLimit;
}

function validate(options: ConnLimitOptions): Readonly<ConnLimitOptions> {
  return Object.freeze({
    max: checkCount(options.max, "connLimit max"),
    blockTime: checkDuration(options.blockTime, "connLimit blockTime"),
  });
}
