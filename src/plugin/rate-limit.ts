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

/**
 * Call middleware limiting the rate of calls (and channel opens) with token
 * buckets: each call takes one token; a bucket holds `capacity` tokens and
 * gets `refillPerSecond` back per second. A call finding its bucket empty is
 * refused with RESOURCE_EXHAUSTED "rate limit exceeded for <key>; retry in N
 * ms" and data `{ retryAfterMs }`. Buckets are per IP by default, per method
 * with `perMethod`, per both with both, and one for the whole server with
 * `perIp: false` and no `perMethod`.
 */
export function rateLimit(options: RateLimitOptions): CallMiddleware {
  const capacity = checkCount(options?.capacity, "rateLimit capacity");
  if (capacity === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, "rateLimit capacity must be an integer > 0, got 0");
  const refill = options.refillPerSecond;
  if (typeof refill !== "number" || !Number.isFinite(refill) || refill <= 0) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `rateLimit refillPerSecond must be a number > 0, got ${String(refill)}`);
  }
  const perMethod = options.perMethod === true;
  const perIp = options.perIp ?? !perMethod;
  const maxBuckets = checkCount(options.maxBuckets ?? 10_000, "rateLimit maxBuckets");
  const buckets = new Map<string, Bucket>();
  return (ctx, next) => {
    const parts: string[] = [];
    if (perIp) parts.push(ctx.peer.family === "unix" ? "unix" : ctx.peer.address);
    if (perMethod) parts.push(ctx.method);
    const key = parts.length === 0 ? "server" : parts.join(" ");
    const now = performance.now();
    let bucket = buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: capacity, at: now };
      if (buckets.size >= maxBuckets) {
        const oldest = buckets.keys().next();
        if (oldest.done !== true) buckets.delete(oldest.value);
      }
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
}
