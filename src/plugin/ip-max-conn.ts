import { ErrorCode } from "../protocol/rpc-error.js";
import type { ConnectionMiddleware, IncomingConnection } from "../server/connection-middleware.js";
import { parsePeerAddress } from "./ip-range.js";
import { checkCount, checkDuration } from "./option-checks.js";

/** Options of {@link ipMaxConn}. */
export interface IpMaxConnOptions {
  /** Most connections per client IP address: at a time, or within `window`. Default 128. */
  max: number;
  /**
   * 0 (the default): `max` limits the connections one IP address has open at
   * once. Above 0: `max` limits the connections one IP address opens within
   * any `window` milliseconds (a sliding window, a connection rate), whether
   * or not they are still open.
   */
  window: number;
}

/** The middleware {@link ipMaxConn} returns, with its run-time controls. */
export interface IpMaxConn extends ConnectionMiddleware {
  /** The options in force. */
  readonly options: Readonly<IpMaxConnOptions>;
  /**
   * What `address` has used of its `max`: its open connections (window 0),
   * or the connections it opened within the last `window` ms.
   */
  count(address: string): number;
  /**
   * Changes the options given; they apply to new connections at once, open
   * ones stay. Open connections are always tracked, so switching to
   * `window: 0` judges by them at once; connection times are kept only
   * while `window` is above 0, so switching to a window starts with none.
   * Throws INVALID_ARGUMENT on a bad value, changing nothing.
   */
  configure(options: Partial<IpMaxConnOptions>): void;
}

/**
 * Connection middleware limiting connections per client IP address, as
 * Python rap's `ip_max_conn`: at most `max` open at once from one address
 * (`window: 0`, the default), or at most `max` opened within any `window`
 * ms. Past it, the connection is refused with RESOURCE_EXHAUSTED naming the
 * address. A connection counts once this middleware passes it on; one
 * refused here or by a later middleware does not count, in either mode.
 * IPv4 clients of a dual-stack listener count as their IPv4 address. Unix
 * socket connections are not limited.
 *
 * ```ts
 * server.useConnection(ipMaxConn({ max: 20 }));              // 20 open per address
 * server.useConnection(ipMaxConn({ max: 100, window: 60_000 })); // 100 new per address per minute
 * ```
 */
export function ipMaxConn(options: Partial<IpMaxConnOptions> = {}): IpMaxConn {
  let current = validate({ max: options.max ?? 128, window: options.window ?? 0 });
  /** Open connections per address (both modes). */
  const open = new Map<string, number>();
  /** When each address's recent connections were admitted, oldest first (window mode only). */
  const opened = new Map<string, number[]>();
  let lastSweep = performance.now();

  /** `key`'s connection times within the window, dropping older ones. */
  const recent = (key: string, now: number): number[] => {
    const times = opened.get(key);
    if (times === undefined) return [];
    let old = 0;
    while (old < times.length && (times[old] as number) <= now - current.window) old++;
    if (old > 0) times.splice(0, old);
    if (times.length === 0) opened.delete(key);
    return times;
  };
  /** Forgets addresses that have not connected within a window: bounds memory under many distinct clients. */
  const sweep = (now: number): void => {
    if (now - lastSweep < current.window) return;
    lastSweep = now;
    for (const key of [...opened.keys()]) recent(key, now);
  };
  const keyOf = (address: string): string => parsePeerAddress(address)?.toString() ?? address;

  const middleware = (conn: IncomingConnection, next: () => Promise<void>): Promise<void> => {
    if (conn.peer.family === "unix") return next();
    const key = keyOf(conn.peer.address);
    const { max, window } = current;
    if (window > 0) {
      const now = performance.now();
      sweep(now);
      const times = recent(key, now);
      if (times.length >= max) {
        const retryAfter = times.length > 0 ? Math.max(1, Math.ceil((times[0] as number) + window - now)) : window;
        conn.reject(ErrorCode.RESOURCE_EXHAUSTED, `too many connections from ${key}: at most ${max} within ${window} ms`, {
          limit: max,
          window,
          retryAfter,
        });
      }
      times.push(now);
      if (times.length === 1) opened.set(key, times);
      conn.onClose(() => {
        if (conn.admitted) return;
        // Refused further down the chain (or closed before it was
        // admitted): it was never opened, so it does not use up the window.
        const list = opened.get(key);
        const at = list?.lastIndexOf(now) ?? -1;
        if (list !== undefined && at >= 0) {
          list.splice(at, 1);
          if (list.length === 0) opened.delete(key);
        }
      });
    } else if ((open.get(key) ?? 0) >= max) {
      conn.reject(ErrorCode.RESOURCE_EXHAUSTED, `too many connections from ${key}: at most ${max} at a time`, { limit: max });
    }
    open.set(key, (open.get(key) ?? 0) + 1);
    conn.onClose(() => {
      const left = (open.get(key) ?? 1) - 1;
      if (left > 0) open.set(key, left);
      else open.delete(key);
    });
    return next();
  };
  return Object.defineProperties(middleware, {
    options: { get: () => current, enumerable: true },
    count: {
      value: (address: string): number => {
        const key = keyOf(address);
        return current.window > 0 ? recent(key, performance.now()).length : (open.get(key) ?? 0);
      },
    },
    configure: {
      value: (update: Partial<IpMaxConnOptions>): void => {
        const updated = validate({ max: update.max ?? current.max, window: update.window ?? current.window });
        if (updated.window === 0) opened.clear();
        current = updated;
      },
    },
  }) as IpMaxConn;
}

function validate(options: IpMaxConnOptions): Readonly<IpMaxConnOptions> {
  return Object.freeze({
    max: checkCount(options.max, "ipMaxConn max"),
    window: checkDuration(options.window, "ipMaxConn window"),
  });
}
