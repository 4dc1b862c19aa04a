import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { CallMiddleware } from "../server/call-middleware.js";
import { checkCount } from "./option-checks.js";

/** Options of {@link rateLimit}. */
export interface RateLimitOptions {
  /** Tokens a bucket holds: the burst allowed. Required, integer > 0. */
  capacity: number;
  /** Tokens added to each bucket per second. Required, > 0. */
  refillPerSecond: number;
  /** One bucket per client IP address (Unix peers share one). Default true unless `perMethod` is set. */
  perIp?: boolean;
  /** One bucket per method (with `perIp`: per IP and method). Default false. */
  perMethod?: boolean;
  /** Most buckets kept; the least recently used is dropped past it. Default 10,000. */
  maxBuckets?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** The options a {@link rateLimit} is running with, defaults filled in. */
export type RateLimitSettings = Readonly<Required<RateLimitOptions>>;

/** What {@link rateLimit} returns: the call middleware, with its options and a way to change them. */
export interface RateLimit extends CallMiddleware {
  /** The options in force. */
  readonly options: RateLimitSettings;
  /** Buckets held now. */
  readonly buckets: number;
  /**
   * Changes the options given; they apply to the next call. Buckets keep
   * their tokens (no more than a lowered `capacity`); a lowered `maxBuckets`
   * drops the least recently used at once; changing `perIp` or `perMethod`
   * starts every bucket afresh, as the keys change. Throws INVALID_ARGUMENT
   * on a bad value, changing nothing.
   */
  configure(options: Partial<RateLimitOptions>): void;
}

/**
 * Call middleware limiting the rate of calls (and channel opens) with token
 * buckets: each call takes one token; a bucket holds `capacity` tokens and
 * gets `refillPerSecond` back per second. A call finding its bucket empty is
 * refused with RESOURCE_EXHAUSTED "rate limit exceeded for <key>; retry in N
 * ms" and data `{ retryAfterMs }`. Buckets are per IP by default, per method
 * with `perMethod`, per both with both, and one for the whole server with
 * `perIp: false` and no `perMethod`.
 *
 * ```ts
 * const limit = rateLimit({ capacity: 20, refillPerSecond: 10 });
 * server.useCall(limit);
 * limit.configure({ refillPerSecond: 50 }); // at run time
 * ```
 */
export function rateLimit(options: RateLimitOptions): RateLimit {
  let current = settle(options);
  const buckets = new Map<string, Bucket>();
  const trim = (max: number): void => {
    for (const key of buckets.keys()) {
      if (buckets.size <= max) break;
      buckets.delete(key);
    }
  };
  const middleware: CallMiddleware = (ctx, next) => {
    const { capacity, refillPerSecond: refill, perIp, perMethod, maxBuckets } = current;
    const parts: string[] = [];
    if (perIp) parts.push(ctx.peer.family === "unix" ? "unix" : ctx.peer.address);
    if (perMethod) parts.push(ctx.method);
    const key = parts.length === 0 ? "server" : parts.join(" ");
    const now = performance.now();
    let bucket = buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: capacity, at: now };
      trim(maxBuckets - 1);
    } else {
      bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * refill);
      bucket.at = now;
      buckets.delete(key);
    }
    // Re-inserted: the map's order is least recently used first.
    buckets.set(key, bucket);
    if (bucket.tokens < 1) {
      const retryAfterMs = Math.ceil(((1 - bucket.tokens) / refill) * 1000);
      throw new RpcError(ErrorCode.RESOURCE_EXHAUSTED, `rate limit exceeded for ${key}; retry in ${retryAfterMs} ms`, { retryAfterMs });
    }
    bucket.tokens -= 1;
    return next();
  };
  return Object.defineProperties(middleware, {
    options: { get: () => current, enumerable: true },
    buckets: { get: () => buckets.size, enumerable: true },
    configure: {
      value: (update: Partial<RateLimitOptions>): void => {
        const next = settle({ ...current, ...update });
        if (next.perIp !== current.perIp || next.perMethod !== current.perMethod) buckets.clear();
        current = next;
        trim(next.maxBuckets);
      },
    },
  }) as RateLimit;
}

/** Checks `options` and fills in the defaults; INVALID_ARGUMENT names a bad one. */
function settle(options: RateLimitOptions): RateLimitSettings {
  const capacity = checkCount(options?.capacity, "rateLimit capacity");
  if (capacity === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, "rateLimit capacity must be an integer > 0, got 0");
  const refillPerSecond = options.refillPerSecond;
  if (typeof refillPerSecond !== "number" || !Number.isFinite(refillPerSecond) || refillPerSecond <= 0) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `rateLimit refillPerSecond must be a number > 0, got ${String(refillPerSecond)}`);
  }
  const perMethod = options.perMethod === true;
  const perIp = options.perIp ?? !perMethod;
  const maxBuckets = checkCount(options.maxBuckets ?? 10_000, "rateLimit maxBuckets");
  return Object.freeze({ capacity, refillPerSecond, perIp, perMethod, maxBuckets });
}
