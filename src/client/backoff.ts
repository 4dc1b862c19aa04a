/** Reconnect backoff settings. */
export interface BackoffOptions {
  /** First delay in ms. Default 100. */
  initialDelay?: number;
  /** Cap on the delay in ms. Default 10,000. */
  maxDelay?: number;
  /** Growth per failed attempt. Default 1.6 (as gRPC). */
  multiplier?: number;
  /** Random spread as a fraction of the delay, +/-. Default 0.2. */
  jitter?: number;
}

/** Capped exponential backoff with jitter, so clients of a restarted server do not reconnect in lockstep. */
export class Backoff {
  private readonly initial: number;
  private readonly max: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private current: number;

  constructor(options: BackoffOptions = {}) {
    this.initial = options.initialDelay ?? 100;
    this.max = options.maxDelay ?? 10_000;
    this.multiplier = options.multiplier ?? 1.6;
    this.jitter = options.jitter ?? 0.2;
    this.current = this.initial;
  }

  /** The delay before the next attempt; each call grows the following one up to the cap. */
  next(): number {
    const base = this.current;
    this.current = Math.min(this.max, this.current * this.multiplier);
    const spread = base * this.jitter * (Math.random() * 2 - 1);
    return Math.max(0, Math.round(base + spread));
  }

  /** Back to the initial delay (after a successful connection). */
  reset(): void {
    this.current = this.initial;
  }
}
