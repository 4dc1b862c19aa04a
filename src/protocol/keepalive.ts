/** Keepalive settings of one side. */
export interface KeepaliveOptions {
  /** Milliseconds between PINGs. Default 10,000. */
  interval: number;
  /** A peer from which nothing arrived for this long is dropped. Default 30,000. */
  timeout: number;
}

/** What a {@link Keepalive} drives. */
export interface KeepaliveHost {
  sendPing(data: Buffer): void;
  onSilent(silentMs: number): void;
}

/** Default keepalive: a PING every 10 s, drop after 30 s of silence. */
export const DEFAULT_KEEPALIVE: KeepaliveOptions = { interval: 10_000, timeout: 30_000 };

/**
 * One interval timer per connection; no per-frame clock reads. Incoming bytes
 * only set a flag, which each tick turns into "silent for 0 ms" or adds an
 * interval to the silence. PINGs carry the send time so PONGs measure RTT.
 */
export class Keepalive {
  /** Last measured round-trip time in ms, or undefined before the first PONG. */
  rtt: number | undefined;
  /** Set by the connection on every chunk received. */
  active = true;
  private silentMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly host: KeepaliveHost;
  private readonly options: KeepaliveOptions;

  constructor(host: KeepaliveHost, options: KeepaliveOptions) {
    this.host = host;
    this.options = options;
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.options.interval);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Sends a PING now (also used to measure RTT on demand). */
  ping(): void {
    const data = Buffer.allocUnsafe(8);
    data.writeDoubleBE(performance.now(), 0);
    this.host.sendPing(data);
  }

  /** Handles a PONG's echoed payload. */
  onPong(data: Buffer): void {
    if (data.length !== 8) return;
    const sent = data.readDoubleBE(0);
    const rtt = performance.now() - sent;
    if (Number.isFinite(rtt) && rtt >= 0) this.rtt = rtt;
  }

  private tick(): void {
    if (this.active) {
      this.active = false;
      this.silentMs = 0;
    } else {
      this.silentMs += this.options.interval;
      if (this.silentMs >= this.options.timeout) {
        this.stop();
        this.host.onSilent(this.silentMs);
        return;
      }
    }
    this.ping();
  }
}
