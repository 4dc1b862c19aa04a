import { ErrorCode, RpcError } from "./rpc-error.js";

/** Options of a {@link ReplayCache}. */
export interface ReplayCacheOptions {
  /** Most nonces remembered at once; past it, new ones are refused instead of stored. */
  maxEntries: number;
  /** How long after its timestamp a nonce must be remembered, in ms: the receiver's timestamp tolerance. */
  windowMs: number;
}

/**
 * The nonces of authenticated handshake proofs seen within the timestamp
 * window (one per encrypted connection: records need none, their sequence
 * numbers stop replays), with bounded memory. A proof is only valid while
 * its timestamp is within ±`windowMs` of the receiver's clock, so its nonce
 * need only be remembered until `timestamp + windowMs`; after that the
 * timestamp check rejects a replay on its own. Entries are grouped in
 * one-second buckets by that expiry and dropped a bucket at a time, so
 * eviction costs nothing per entry. When `maxEntries` live nonces are held,
 * {@link remember} throws RESOURCE_EXHAUSTED rather than grow.
 */
export class ReplayCache {
  private readonly options: ReplayCacheOptions;
  /** Nonce (as a latin1 string of its bytes) to the second its entry expires in. */
  private readonly seen = new Map<string, number>();
  private readonly buckets = new Map<number, string[]>();
  /** Every bucket before this second has been dropped. */
  private swept = 0;

  constructor(options: ReplayCacheOptions) {
    this.options = options;
  }

  /** Nonces held now. */
  get size(): number {
    return this.seen.size;
  }

  /** Whether `nonce` was remembered and has not expired by `now` (ms since the epoch). */
  has(nonce: string, now: number): boolean {
    const expires = this.seen.get(nonce);
    return expires !== undefined && expires >= Math.floor(now / 1000);
  }

  /**
   * Remembers `nonce` of a message stamped `timestamp` until the window has
   * passed it. Throws RESOURCE_EXHAUSTED, storing nothing, when the cache is full.
   */
  remember(nonce: string, timestamp: number, now: number): void {
    this.sweep(now);
    if (this.seen.size >= this.options.maxEntries) {
      throw new RpcError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `replay cache is full: ${this.options.maxEntries} nonces seen within the ${this.options.windowMs} ms timestamp window; the handshake is refused`,
        { limit: this.options.maxEntries },
      );
    }
    // Rounded up: an entry is dropped only once its whole second has passed.
    const expires = Math.ceil((timestamp + this.options.windowMs) / 1000);
    this.seen.set(nonce, expires);
    const bucket = this.buckets.get(expires);
    if (bucket === undefined) this.buckets.set(expires, [nonce]);
    else bucket.push(nonce);
  }

  /** Drops every bucket whose second is over. */
  private sweep(now: number): void {
    const second = Math.floor(now / 1000);
    if (second <= this.swept) return;
    this.swept = second;
    // At most about 2 x windowMs / 1000 buckets are live: a scan of the keys
    // is cheap, and it copes with clocks that jump.
    for (const [expires, nonces] of this.buckets) {
      if (expires >= second) continue;
      for (const nonce of nonces) if (this.seen.get(nonce) === expires) this.seen.delete(nonce);
      this.buckets.delete(expires);
    }
  }

  /** Forgets everything. */
  clear(): void {
    this.seen.clear();
    this.buckets.clear();
  }
}
