import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Keepalive, type KeepaliveHost } from "../../src/protocol/keepalive.js";

const INTERVAL = 20;
/** Guards every wait: a keepalive that never fires fails the test instead of hanging it. */
const WAIT_LIMIT_MS = 5000;

/** A fake host recording what the keepalive does, with a way to wait for it. */
class FakeHost implements KeepaliveHost {
  readonly pings: Buffer[] = [];
  readonly silent: number[] = [];
  readonly errors: unknown[] = [];
  /** Runs on each PING (for example to simulate the peer's traffic). */
  onPing: ((data: Buffer) => void) | undefined;
  private wake: (() => void) | undefined;

  sendPing(data: Buffer): void {
    // The keepalive reuses its PING payload.
    this.pings.push(Buffer.from(data));
    this.onPing?.(data);
    this.wake?.();
  }

  onSilent(silentMs: number): void {
    this.silent.push(silentMs);
    this.wake?.();
  }

  onKeepaliveError(error: unknown): void {
    this.errors.push(error);
    this.wake?.();
  }

  async until(done: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_LIMIT_MS;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
}

describe("Keepalive", () => {
  it("PINGs only after a silent interval, never while the peer is heard from", () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: 10, timeout: 30 });
    // Driven by hand: tick() is what the clock calls once per interval.
    keepalive.tick();
    assert.equal(host.pings.length, 0, "the start counts as activity");
    keepalive.tick();
    assert.equal(host.pings.length, 1, "a PING after an interval of silence");
    keepalive.active = true;
    keepalive.tick();
    assert.equal(host.pings.length, 1, "no PING after an interval with traffic (the PONG)");
    for (let i = 0; i < 20; i++) {
      keepalive.active = true;
      keepalive.tick();
    }
    assert.equal(host.pings.length, 1, "no PING while traffic keeps arriving");
    keepalive.tick();
    keepalive.tick();
    assert.equal(host.pings.length, 3, "a PING on each silent tick");
    assert.deepEqual(host.silent, []);
    keepalive.tick();
    assert.deepEqual(host.silent, [30], "dropped once the silence reaches the timeout");
    assert.equal(host.pings.length, 3, "no PING on the tick that drops");
  });

  it("with a timeout not past the interval, PINGs on every tick, so an answering peer is never dropped", () => {
    for (const timeout of [10, 5]) {
      const host = new FakeHost();
      const keepalive = new Keepalive(host, { interval: 10, timeout });
      for (let i = 0; i < 10; i++) {
        keepalive.tick();
        assert.equal(host.pings.length, i + 1, `timeout ${timeout}: a PING on tick ${i + 1}`);
        // The peer's PONG arrives before the next tick.
        keepalive.active = true;
      }
      assert.deepEqual(host.silent, []);
      // A peer that stops answering is dropped on the next tick.
      keepalive.tick();
      keepalive.tick();
      assert.deepEqual(host.silent, [10], `timeout ${timeout}`);
    }
  });

  it("with a timeout under two intervals, PINGs on the first silent tick, in time for the PONG", () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: 10, timeout: 15 });
    for (let i = 0; i < 10; i++) {
      keepalive.tick();
      keepalive.tick();
      keepalive.active = true;
    }
    assert.equal(host.pings.length, 10, "every other tick, as the PONGs come back");
    assert.deepEqual(host.silent, []);
    keepalive.tick();
    keepalive.tick();
    keepalive.tick();
    assert.deepEqual(host.silent, [20]);
  });

  it("keeps PINGing a quiet peer that answers, 8-byte PINGs, and a PONG echoing one sets rtt", async () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: INTERVAL, timeout: 10_000 });
    host.onPing = () => {
      keepalive.active = true;
    };
    assert.equal(keepalive.rtt, undefined);
    keepalive.start();
    try {
      await host.until(() => host.pings.length >= 3, "three PINGs");
      for (const ping of host.pings) assert.equal(ping.length, 8);
      keepalive.onPong(host.pings[0] as Buffer);
      const rtt = keepalive.rtt;
      assert.ok(rtt !== undefined && Number.isFinite(rtt) && rtt >= 0, `rtt ${rtt}`);
      assert.deepEqual(host.silent, []);
    } finally {
      keepalive.stop();
    }
  });

  it("ignores PONGs that are not its own 8-byte PINGs", () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: INTERVAL, timeout: 100 });
    keepalive.onPong(Buffer.alloc(0));
    keepalive.onPong(Buffer.alloc(7));
    keepalive.onPong(Buffer.alloc(9));
    assert.equal(keepalive.rtt, undefined);
    // A send time in the future, or not a number, gives no negative or NaN rtt.
    const future = Buffer.alloc(8);
    future.writeDoubleBE(performance.now() + 1e9, 0);
    keepalive.onPong(future);
    const nan = Buffer.alloc(8);
    nan.writeDoubleBE(Number.NaN, 0);
    keepalive.onPong(nan);
    assert.equal(keepalive.rtt, undefined);
    // ping() on demand sends one PING whose echo measures rtt.
    keepalive.ping();
    assert.equal(host.pings.length, 1);
    keepalive.onPong(host.pings[0] as Buffer);
    assert.ok((keepalive.rtt ?? -1) >= 0);
  });

  it("declares a host silent after the timeout and stops", async () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: INTERVAL, timeout: 3 * INTERVAL });
    keepalive.start();
    try {
      await host.until(() => host.silent.length > 0, "onSilent");
      // Tick 1 consumes the initial activity; ticks 2 and 3 count 20 and 40 ms; tick 4 reaches 60.
      assert.deepEqual(host.silent, [3 * INTERVAL]);
      assert.equal(host.pings.length, 2, "a PING on each silent tick before the last");
      // Stopped: no PINGs and no second onSilent afterwards.
      await sleep(4 * INTERVAL);
      assert.equal(host.pings.length, 2);
      assert.deepEqual(host.silent, [3 * INTERVAL]);
    } finally {
      keepalive.stop();
    }
  });

  it("never declares a host silent while it answers every PING", async () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: INTERVAL, timeout: 2 * INTERVAL });
    host.onPing = () => {
      keepalive.active = true;
    };
    keepalive.start();
    try {
      await host.until(() => host.pings.length >= 8, "eight PINGs");
      assert.deepEqual(host.silent, []);
    } finally {
      keepalive.stop();
    }
  });

  it("resets the silence count when something arrives", async () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: INTERVAL, timeout: 3 * INTERVAL });
    // Activity every other tick: silence never gets past one interval.
    host.onPing = () => {
      if (host.pings.length % 2 === 0) keepalive.active = true;
    };
    keepalive.start();
    try {
      await host.until(() => host.pings.length >= 8, "eight PINGs");
      assert.deepEqual(host.silent, []);
    } finally {
      keepalive.stop();
    }
  });

  it("stop() stops every timer, also after start() twice", async () => {
    const host = new FakeHost();
    const keepalive = new Keepalive(host, { interval: INTERVAL, timeout: INTERVAL });
    keepalive.start();
    keepalive.start();
    keepalive.stop();
    await sleep(5 * INTERVAL);
    assert.deepEqual(host.pings, []);
    assert.deepEqual(host.silent, []);
    // It can be started again, and stopped again.
    keepalive.start();
    await host.until(() => host.pings.length >= 1, "a PING after restart");
    keepalive.stop();
    const count = host.pings.length;
    await sleep(5 * INTERVAL);
    assert.equal(host.pings.length, count);
    assert.deepEqual(host.silent, []);
  });

  it("shares one clock per interval, spreading keepalives over its slots so they do not all PING in one turn", async () => {
    const hosts = Array.from({ length: 32 }, () => new FakeHost());
    const keepalives = hosts.map((host) => new Keepalive(host, { interval: 40, timeout: 10_000 }));
    /** For each keepalive, the clock tick (a setImmediate-separated turn) of its first PING. */
    const firstTurn: number[] = [];
    let turn = 0;
    let counting = true;
    const countTurns = (): void => {
      turn++;
      if (counting) setImmediate(countTurns);
    };
    setImmediate(countTurns);
    hosts.forEach((host, i) => {
      host.onPing = () => {
        firstTurn[i] ??= turn;
      };
    });
    for (const keepalive of keepalives) keepalive.start();
    try {
      await (hosts[0] as FakeHost).until(() => hosts.every((host) => host.pings.length >= 2), "two PINGs from every keepalive");
      // Spread: the 32 first PINGs fell in more than one turn (8 slots, 5 ms apart).
      assert.ok(new Set(firstTurn).size > 1, `first PINGs in turns ${[...new Set(firstTurn)].join(", ")}`);
    } finally {
      counting = false;
      for (const keepalive of keepalives) keepalive.stop();
    }
    const counts = hosts.map((host) => host.pings.length);
    await sleep(100);
    assert.deepEqual(
      hosts.map((host) => host.pings.length),
      counts,
      "no PING after stop()",
    );
  });

  it("a host that throws on a tick is told and stopped; the others keep ticking", async () => {
    const failing = new FakeHost();
    let throws = 0;
    failing.sendPing = () => {
      throws++;
      throw new Error("host broke");
    };
    const healthy = new FakeHost();
    const a = new Keepalive(failing, { interval: 1, timeout: 10_000 });
    const b = new Keepalive(healthy, { interval: 1, timeout: 10_000 });
    a.start();
    b.start();
    try {
      await healthy.until(() => healthy.pings.length >= 5, "PINGs of the healthy keepalive");
      assert.equal(failing.errors.length, 1);
      assert.match(String((failing.errors[0] as Error).message), /host broke/);
      assert.equal(throws, 1, "the failing keepalive stopped after its first failure");
    } finally {
      a.stop();
      b.stop();
    }
  });
});
