/**
 * Keepalive settings of one side. Every `interval` ms the side checks
 * whether anything arrived from the peer since the last check; only when
 * nothing did does it send a PING (gRPC's semantics), so a connection with
 * traffic carries no PINGs.
 */
export interface KeepaliveOptions {
  /** Milliseconds between checks of the peer's silence; a PING goes out at a check that finds the peer silent. Default 10,000. */
  interval: number;
  /** A peer from which nothing arrived for this long is dropped. Default 30,000. */
  timeout: number;
}

/** What a {@link Keepalive} drives. */
export interface KeepaliveHost {
  /** Sends a PING with this payload; `data` is reused by the next PING, so copy it to keep it. */
  sendPing(data: Buffer): void;
  onSilent(silentMs: number): void;
  /** A tick threw (sending the PING failed); the keepalive has stopped. */
  onKeepaliveError(error: unknown): void;
}

/** Default keepalive: a PING after 10 s without traffic from the peer, drop after 30 s of silence. */
export const DEFAULT_KEEPALIVE: KeepaliveOptions = { interval: 10_000, timeout: 30_000 };

/**
 * The payload of every PING: the host copies it at once (the frame writer
 * does), so one buffer serves all PINGs instead of 8 bytes of Node's buffer
 * pool each, which 10,000 idle connections turned into steady garbage.
 */
const pingData = Buffer.alloc(8);

/** A PING payload carrying the send time; valid until the next call. */
export function pingPayload(): Buffer {
  pingData.writeDoubleBE(performance.now(), 0);
  return pingData;
}

/** The round trip a PONG echoing {@link pingPayload} measures, or undefined for any other PONG. */
export function rttOfPong(data: Buffer): number | undefined {
  if (data.length !== 8) return undefined;
  const rtt = performance.now() - data.readDoubleBE(0);
  return Number.isFinite(rtt) && rtt >= 0 ? rtt : undefined;
}

/** A keepalive's silence value meaning "something arrived since the last tick". */
export const HEARD = -1;

/**
 * What a {@link KeepaliveClock} ticks: a {@link Keepalive}, or a Connection,
 * which keeps its keepalive state in fields of its own (an object more per
 * connection cost an idle server about 70 bytes each).
 */
export interface KeepaliveSubject {
  /** Which of its clock's slots ticks it; -1 while stopped. */
  keepaliveSlot: number;
  /** One interval has passed. */
  keepaliveTick(): void;
  /** {@link keepaliveTick} threw; the subject has been removed from its clock. */
  keepaliveFailed(error: unknown): void;
}

/**
 * One tick of a keepalive whose peer has been silent for `silence` ms, or
 * {@link HEARD}; returns the new silence. A PING goes out when the peer has
 * been silent for the interval: a live peer's PONG then arrives before the
 * next tick and resets the silence, so it is never dropped; a dead peer's
 * silence grows by an interval a tick and reaches the timeout within
 * timeout + interval of its last bytes, when the subject is stopped and
 * `host.onSilent` called. When the timeout is not past one interval, the
 * next silent tick would already drop the peer, before a PING sent then
 * could be answered: then every tick PINGs.
 */
export function tickKeepalive(subject: KeepaliveSubject, silence: number, options: KeepaliveOptions, host: KeepaliveHost): number {
  const { interval, timeout } = options;
  if (silence === HEARD) {
    if (interval < timeout) return 0;
    silence = 0;
  } else {
    silence += interval;
    if (silence >= timeout) {
      KeepaliveClock.of(interval).remove(subject);
      host.onSilent(silence);
      return silence;
    }
  }
  host.sendPing(pingPayload());
  return silence;
}

/**
 * Keepalive of one connection; no per-frame clock reads. Incoming bytes only
 * set a flag, which each tick turns into "silent for 0 ms" or adds an
 * interval to the silence. A tick that finds the peer silent sends a PING
 * (the peer's PONG ends the silence); one that finds activity sends nothing,
 * as the peer is evidently alive (see {@link tickKeepalive}). PINGs carry
 * the send time so PONGs measure RTT. Ticks come from a
 * {@link KeepaliveClock} shared by every connection with the same interval,
 * not from a timer each. (rapt's Connection keeps the same state in its own
 * fields.)
 */
export class Keepalive implements KeepaliveSubject {
  /** Last measured round-trip time in ms, or undefined before the first PONG. */
  rtt: number | undefined;
  /** Set by the connection on every chunk received. */
  active = true;
  keepaliveSlot = -1;
  private silentMs = 0;
  private readonly host: KeepaliveHost;
  private readonly options: KeepaliveOptions;

  constructor(host: KeepaliveHost, options: KeepaliveOptions) {
    this.host = host;
    this.options = options;
  }

  /** Which of its clock's slots ticks this keepalive; -1 while stopped. */
  get slot(): number {
    return this.keepaliveSlot;
  }

  start(): void {
    if (this.keepaliveSlot >= 0) return;
    KeepaliveClock.of(this.options.interval).add(this);
  }

  stop(): void {
    if (this.keepaliveSlot < 0) return;
    KeepaliveClock.of(this.options.interval).remove(this);
  }

  /** Sends a PING now (also used to measure RTT on demand). */
  ping(): void {
    this.host.sendPing(pingPayload());
  }

  /** Handles a PONG's echoed payload. */
  onPong(data: Buffer): void {
    const rtt = rttOfPong(data);
    if (rtt !== undefined) this.rtt = rtt;
  }

  /** A tick threw: stops, and tells the host. */
  fail(error: unknown): void {
    this.stop();
    this.host.onKeepaliveError(error);
  }

  keepaliveFailed(error: unknown): void {
    this.host.onKeepaliveError(error);
  }

  /** One interval has passed (called by the clock); see {@link tickKeepalive}. */
  tick(): void {
    const heard = this.active;
    // Before the PING: the host may hear from the peer while sending it.
    this.active = false;
    this.silentMs = tickKeepalive(this, heard ? HEARD : this.silentMs, this.options, this.host);
  }

  keepaliveTick(): void {
    this.tick();
  }
}

/** Slots of a clock: each keepalive ticks in one, and one slot ticks per interval / SLOTS. */
const SLOTS = 8;

/**
 * One timer for every keepalive of one interval. A timer (and its closure)
 * per connection cost an idle server about 250 bytes each; one timer ticking
 * thousands of keepalives at once would send thousands of PINGs in one turn,
 * so keepalives are spread over {@link SLOTS} slots, one of which ticks every
 * `interval / SLOTS` ms: each keepalive still ticks once per interval.
 */
export class KeepaliveClock {
  private static readonly clocks = new Map<number, KeepaliveClock>();
  private readonly interval: number;
  private readonly slots: Set<KeepaliveSubject>[];
  private size = 0;
  private next = 0;
  private added = 0;
  private timer: NodeJS.Timeout | undefined;

  private constructor(interval: number) {
    this.interval = interval;
    // Below SLOTS ms a slot would tick less often than the interval asks.
    const count = interval >= SLOTS ? SLOTS : 1;
    this.slots = Array.from({ length: count }, () => new Set<KeepaliveSubject>());
  }

  /** The clock of `interval` ms, made on first use. */
  static of(interval: number): KeepaliveClock {
    let clock = KeepaliveClock.clocks.get(interval);
    if (clock === undefined) {
      clock = new KeepaliveClock(interval);
      KeepaliveClock.clocks.set(interval, clock);
    }
    return clock;
  }

  add(keepalive: KeepaliveSubject): void {
    // Round robin keeps the slots even as connections come and go.
    const slot = this.added++ % this.slots.length;
    keepalive.keepaliveSlot = slot;
    (this.slots[slot] as Set<KeepaliveSubject>).add(keepalive);
    if (this.size++ === 0) {
      this.timer = setInterval(() => this.tick(), this.interval / this.slots.length);
      this.timer.unref();
    }
  }

  remove(keepalive: KeepaliveSubject): void {
    if (keepalive.keepaliveSlot < 0 || !(this.slots[keepalive.keepaliveSlot] as Set<KeepaliveSubject>).delete(keepalive)) return;
    keepalive.keepaliveSlot = -1;
    if (--this.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      KeepaliveClock.clocks.delete(this.interval);
    }
  }

  private tick(): void {
    const slot = this.slots[this.next] as Set<KeepaliveSubject>;
    this.next = (this.next + 1) % this.slots.length;
    // A keepalive that stops while ticking (its peer went silent) leaves the
    // set during the loop, which a Set allows.
    for (const keepalive of slot) {
      try {
        keepalive.keepaliveTick();
      } catch (error) {
        // Its own connection deals with it; the others still tick.
        this.remove(keepalive);
        keepalive.keepaliveFailed(error);
      }
    }
  }
}
