import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InboundStream, MAX_WINDOW_FACTOR, STREAM_BUFFER_BYTES } from "../../src/protocol/inbound-stream.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";
import { between, prng } from "./seeded-random.js";

/**
 * The sending side as the stream sees it: grants and abandons are recorded,
 * and credit is counted the way a sender counts it (the window, plus grants,
 * less items sent), so a test can check what the stream lets in.
 */
class Peer {
  readonly grants: number[] = [];
  abandoned = 0;
  sent = 0;
  taken = 0;
  readonly stream: InboundStream<number>;
  private readonly window: number;

  constructor(window: number, expectedItemBytes = 0) {
    this.window = window;
    this.stream = new InboundStream<number>(
      {
        grant: (n) => {
          assert.ok(Number.isInteger(n) && n > 0, `a grant of ${n}`);
          this.grants.push(n);
        },
        abandon: () => this.abandoned++,
      },
      window,
      expectedItemBytes,
    );
  }

  /** Sends the stream's opening grant, as a CREDIT with the CALL; returns it (0: none). */
  open(): number {
    const n = this.stream.openingGrant();
    if (n > 0) this.grants.push(n);
    return n;
  }

  get granted(): number {
    return this.grants.reduce((a, b) => a + b, 0);
  }

  /** What the sender may still send. */
  get credit(): number {
    return this.window + this.granted - this.sent;
  }

  /** Credit the sender holds plus items received and not taken. */
  get inFlight(): number {
    return this.window + this.granted - this.taken;
  }

  /** Sends one item of `bytes` bytes; returns whether the stream took it. */
  push(bytes: number): boolean {
    const ok = this.stream.push(this.sent, bytes);
    if (ok) this.sent++;
    return ok;
  }

  /** Sends `count` items in one ITEMS frame, each `bytes` bytes; the payload is 5 bytes of header more unless given. */
  pushAll(count: number, bytes: number, payload = 5 + count * bytes): boolean {
    const items = Array.from({ length: count }, (_, i) => this.sent + i);
    const ok = this.stream.pushAll(items, payload);
    if (ok) this.sent += count;
    return ok;
  }

  /** Takes one buffered item, checking it is the next in order. */
  async take(): Promise<void> {
    assert.ok(this.stream.buffered > 0, "an item is buffered");
    const result = await this.stream.next();
    assert.deepEqual(result, { done: false, value: this.taken });
    this.taken++;
  }
}

const error = new RpcError(ErrorCode.UNAVAILABLE, "connection lost");
const isError =
  (code: ErrorCode) =>
  (e: unknown): boolean => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, code);
    return true;
  };

/** Bytes per item from which the target stays at the window. */
const large = (window: number): number => STREAM_BUFFER_BYTES / window;

describe("InboundStream credit", () => {
  it("refuses, taking nothing, an item pushed beyond the credit", async () => {
    const peer = new Peer(4);
    for (let i = 0; i < 4; i++) assert.equal(peer.push(large(4)), true);
    assert.equal(peer.push(large(4)), false);
    assert.equal(peer.stream.buffered, 4);
    // Half the window taken: granted back.
    await peer.take();
    assert.deepEqual(peer.grants, []);
    await peer.take();
    assert.deepEqual(peer.grants, [2]);
    assert.equal(peer.push(large(4)), true);
    assert.equal(peer.push(large(4)), true);
    assert.equal(peer.push(large(4)), false);
    assert.equal(peer.stream.buffered, 4);
  });

  it("refuses, delivering none, an ITEMS frame of more items than the credit", async () => {
    const peer = new Peer(4);
    assert.equal(peer.pushAll(5, large(4)), false, "5 items on a credit of 4");
    assert.equal(peer.stream.buffered, 0);
    assert.equal(peer.push(large(4)), true);
    assert.equal(peer.pushAll(4, large(4)), false, "4 items on a credit of 3");
    assert.equal(peer.stream.buffered, 1);
    assert.equal(peer.pushAll(3, large(4)), true, "3 items on a credit of 3");
    assert.equal(peer.stream.buffered, 4);
    assert.equal(peer.pushAll(1, large(4)), false, "1 item on no credit");
    assert.equal(peer.push(large(4)), false);
    for (let i = 0; i < 4; i++) await peer.take();
    assert.deepEqual(peer.grants, [2, 2]);
    assert.equal(peer.stream.buffered, 0);
  });

  it("keeps the items in flight at the window for items of STREAM_BUFFER_BYTES / window or more, granting at half of it", async () => {
    for (const bytes of [large(8), large(8) + 1, 1024 * 1024]) {
      const peer = new Peer(8);
      for (let i = 0; i < 8; i++) assert.equal(peer.push(bytes), true);
      for (let i = 0; i < 3; i++) await peer.take();
      assert.deepEqual(peer.grants, [], `${bytes} bytes: no grant for a shortfall under half the window`);
      await peer.take();
      assert.deepEqual(peer.grants, [4], `${bytes} bytes: the shortfall is half the window`);
      // Steady state: the sender uses all its credit, the consumer takes everything.
      for (let round = 0; round < 20; round++) {
        while (peer.credit > 0) assert.equal(peer.push(bytes), true);
        assert.ok(peer.inFlight <= 8, `${bytes} bytes: ${peer.inFlight} in flight`);
        while (peer.stream.buffered > 0) await peer.take();
      }
      assert.ok(
        peer.grants.every((g) => g === 4),
        `${bytes} bytes: grants ${peer.grants.join(",")}`,
      );
    }
  });

  it("raises the target for small items to MAX_WINDOW_FACTOR windows, never letting more in flight", async () => {
    for (const batch of [1, 7, 64]) {
      const window = 16;
      const cap = MAX_WINDOW_FACTOR * window;
      const peer = new Peer(window);
      let most = 0;
      for (let round = 0; round < 30; round++) {
        while (peer.credit > 0) {
          const n = Math.min(batch, peer.credit);
          assert.equal(n === 1 ? peer.push(10) : peer.pushAll(n, 10), true);
        }
        assert.equal(peer.push(10), false, "no credit left");
        most = Math.max(most, peer.inFlight);
        assert.ok(peer.inFlight <= cap, `batch ${batch}: ${peer.inFlight} in flight`);
        // Take a random-ish share, checking after each item.
        const takes = round % 3 === 0 ? peer.stream.buffered : Math.ceil(peer.stream.buffered / 3);
        for (let i = 0; i < takes; i++) {
          const grants = peer.grants.length;
          await peer.take();
          assert.ok(peer.inFlight <= cap, `batch ${batch}: ${peer.inFlight} in flight`);
          if (peer.grants.length > grants) {
            assert.equal(peer.inFlight, cap, "a grant restores the target");
            assert.ok((peer.grants.at(-1) as number) * 2 >= cap, "grants are at least half the target");
          } else
            assert.ok(
              peer.inFlight * 2 > cap,
              `batch ${batch}: a shortfall of half the target (${peer.inFlight} in flight) was not granted`,
            );
        }
      }
      assert.equal(most, cap, `batch ${batch}: the target is reached`);
    }
  });

  it("aims for STREAM_BUFFER_BYTES of mid-sized items when that is between 1 and MAX_WINDOW_FACTOR windows, alone or in ITEMS", async () => {
    const window = 256;
    const target = Math.floor(STREAM_BUFFER_BYTES / 100);
    assert.ok(target > window && target < MAX_WINDOW_FACTOR * window);
    for (const perFrame of [1, 64]) {
      const peer = new Peer(window);
      let most = 0;
      for (let round = 0; round < 10; round++) {
        while (peer.credit > 0) {
          const n = Math.min(perFrame, peer.credit);
          // Items of 100 bytes: the size counted is the frame's payload over its items.
          assert.equal(perFrame === 1 ? peer.push(100) : peer.pushAll(n, 100, 100 * n), true);
        }
        while (peer.stream.buffered > 0) {
          await peer.take();
          most = Math.max(most, peer.inFlight);
        }
      }
      assert.equal(most, target, `${perFrame} per frame`);
    }
  });

  it("lowers the target again when the items grow", async () => {
    const window = 16;
    const peer = new Peer(window);
    let small = 0;
    for (let round = 0; round < 5; round++) {
      while (peer.credit > 0) assert.equal(peer.pushAll(Math.min(50, peer.credit), 8), true);
      small = Math.max(small, peer.inFlight);
      while (peer.stream.buffered > 0) await peer.take();
    }
    assert.equal(small, MAX_WINDOW_FACTOR * window, "small items: 16 windows in flight");
    // Now items of 1 MiB: what is granted from here on keeps the window at most in flight.
    let most = 0;
    let grantsBefore = peer.grants.length;
    for (let round = 0; round < 40; round++) {
      while (peer.credit > 0) assert.equal(peer.push(1024 * 1024), true);
      while (peer.stream.buffered > 0) {
        await peer.take();
        if (peer.grants.length > grantsBefore) most = Math.max(most, peer.inFlight);
        grantsBefore = peer.grants.length;
      }
    }
    assert.ok(most > 0, "grants went on");
    assert.ok(most <= window, `${most} in flight after a grant for large items`);
  });

  it("grants up front the target of the expected item size, counted as credit, and keeps to that target after", async () => {
    const window = 16;
    const cases = [
      { bytes: 10, target: MAX_WINDOW_FACTOR * window },
      { bytes: STREAM_BUFFER_BYTES / (4 * window), target: 4 * window },
      { bytes: large(window), target: window },
      { bytes: 1024 * 1024, target: window },
    ];
    for (const { bytes, target } of cases) {
      const peer = new Peer(window, bytes);
      assert.equal(peer.stream.averageItemBytes, bytes, "the expectation stands for the average until items come");
      assert.equal(peer.open(), target - window, `${bytes}-byte items`);
      assert.equal(peer.stream.openingGrant(), 0, "granted once");
      assert.equal(peer.credit, target);
      for (let round = 0; round < 6; round++) {
        while (peer.credit > 0) assert.equal(peer.push(bytes), true);
        assert.equal(peer.push(bytes), false, `${bytes}-byte items: nothing beyond the credit`);
        assert.equal(peer.inFlight, target);
        while (peer.stream.buffered > 0) {
          await peer.take();
          assert.ok(peer.inFlight <= target, `${bytes}-byte items: ${peer.inFlight} in flight`);
        }
      }
    }
  });

  it("has no opening grant without an expected size, once items have come, or once closed", async () => {
    assert.equal(new Peer(16).open(), 0);
    const started = new Peer(16, 10);
    assert.equal(started.push(10), true);
    await started.take();
    // The first take granted what the target lacked: nothing is left to grant up front.
    assert.equal(started.grants.length, 1);
    assert.equal(started.open(), 0);
    const ended = new Peer(16, 10);
    ended.stream.end();
    assert.equal(ended.open(), 0);
    const failed = new Peer(16, 10);
    failed.stream.fail(error);
    assert.equal(failed.open(), 0);
  });

  it("holds credit, buffer and order through seeded random pushes, ITEMS and takes", async () => {
    for (let seed = 1; seed <= 200; seed++) {
      const rand = prng(seed);
      const window = between(rand, 1, 64);
      const cap = MAX_WINDOW_FACTOR * window;
      const peer = new Peer(window);
      const ops = between(rand, 10, 400);
      for (let op = 0; op < ops; op++) {
        const r = rand();
        const bytes = rand() < 0.5 ? between(rand, 1, 64) : rand() < 0.8 ? between(rand, 65, 20_000) : between(rand, 20_001, 2_000_000);
        const where = `seed ${seed}, op ${op} (window ${window})`;
        if (r < 0.35) {
          const credit = peer.credit;
          assert.equal(peer.push(bytes), credit > 0, `${where}: push on a credit of ${credit}`);
        } else if (r < 0.65) {
          const credit = peer.credit;
          const buffered = peer.stream.buffered;
          const count = between(rand, 1, Math.max(1, credit + (rand() < 0.2 ? 3 : 0)));
          assert.equal(peer.pushAll(count, bytes), count <= credit, `${where}: ${count} items on a credit of ${credit}`);
          if (count > credit) assert.equal(peer.stream.buffered, buffered, `${where}: a refused ITEMS delivers none`);
        } else {
          const n = Math.min(peer.stream.buffered, between(rand, 1, 50));
          for (let i = 0; i < n; i++) await peer.take();
        }
        assert.equal(peer.stream.buffered, peer.sent - peer.taken, `${where}: buffered`);
        assert.ok(peer.inFlight <= cap, `${where}: ${peer.inFlight} in flight`);
        assert.ok(peer.credit >= 0, `${where}: credit ${peer.credit}`);
        // Liveness: with nothing buffered the sender must be able to send.
        if (peer.stream.buffered === 0) assert.ok(peer.credit > 0, `${where}: nothing buffered and no credit`);
      }
    }
  });
});

describe("InboundStream delivery", () => {
  it("gives a waiting next() the first item of an ITEMS frame and the rest in order", async () => {
    const peer = new Peer(4);
    const waiting = peer.stream.next();
    assert.equal(peer.pushAll(4, large(4)), true);
    assert.deepEqual(await waiting, { done: false, value: 0 });
    peer.taken++;
    // The three queued behind it count as in flight: no grant yet.
    assert.deepEqual(peer.grants, []);
    assert.equal(peer.stream.buffered, 3);
    for (let i = 0; i < 3; i++) await peer.take();
    assert.deepEqual(peer.grants, [2, 2]);
  });

  it("gives a waiting next() a pushed item", async () => {
    const peer = new Peer(2);
    const waiting = peer.stream.next();
    assert.equal(peer.push(large(2)), true);
    assert.deepEqual(await waiting, { done: false, value: 0 });
    assert.equal(peer.stream.buffered, 0);
    assert.deepEqual(peer.grants, [1]);
  });

  it("refuses a second next() while one is waiting", async () => {
    const peer = new Peer(2);
    const waiting = peer.stream.next();
    await assert.rejects(peer.stream.next(), isError(ErrorCode.FAILED_PRECONDITION));
    peer.push(1);
    assert.deepEqual(await waiting, { done: false, value: 0 });
  });

  it("ends after the buffered items", async () => {
    const peer = new Peer(8);
    peer.pushAll(3, 10);
    peer.stream.end();
    assert.equal(peer.stream.closed, true);
    assert.equal(peer.stream.push(99, 10), true, "an item after the end is ignored");
    assert.equal(peer.stream.buffered, 3);
    const got: number[] = [];
    for await (const value of peer.stream) got.push(value);
    assert.deepEqual(got, [0, 1, 2]);
    assert.deepEqual(await peer.stream.next(), { done: true, value: undefined });
    assert.deepEqual(peer.grants, [], "no grants once the sender is done");
    assert.equal(peer.abandoned, 0);
  });

  it("resolves a waiting next() as done at the end", async () => {
    const peer = new Peer(8);
    const waiting = peer.stream.next();
    peer.stream.end();
    assert.deepEqual(await waiting, { done: true, value: undefined });
  });

  it("fails after the buffered items, and keeps failing", async () => {
    const peer = new Peer(8);
    peer.push(10);
    peer.pushAll(2, 10);
    peer.stream.fail(error);
    peer.stream.end();
    peer.stream.fail(new RpcError(ErrorCode.INTERNAL, "a second failure"));
    assert.equal(peer.stream.pushAll([7, 8], 20), true, "items after the failure are ignored");
    for (let i = 0; i < 3; i++) await peer.take();
    await assert.rejects(peer.stream.next(), (e) => e === error);
    await assert.rejects(peer.stream.next(), (e) => e === error);
  });

  it("rejects a waiting next() when the stream fails", async () => {
    const peer = new Peer(8);
    const waiting = peer.stream.next();
    peer.stream.fail(error);
    await assert.rejects(waiting, (e) => e === error);
  });

  it("abandons on return(): drops the buffered items, tells the host once, grants nothing more", async () => {
    const peer = new Peer(4);
    peer.pushAll(4, 10);
    await peer.take();
    const grants = peer.grants.length;
    assert.deepEqual(await peer.stream.return(), { done: true, value: undefined });
    assert.equal(peer.abandoned, 1);
    assert.equal(peer.stream.buffered, 0);
    assert.equal(peer.stream.closed, true);
    assert.deepEqual(await peer.stream.next(), { done: true, value: undefined });
    assert.equal(peer.stream.push(5, 10), true, "late items are ignored");
    assert.equal(peer.stream.buffered, 0);
    await peer.stream.return();
    assert.equal(peer.abandoned, 1, "abandoned once");
    assert.equal(peer.grants.length, grants);
  });

  it("ends a next() still waiting when the consumer calls return()", async () => {
    const peer = new Peer(4);
    const waiting = peer.stream.next();
    assert.deepEqual(await peer.stream.return(), { done: true, value: undefined });
    assert.deepEqual(await waiting, { done: true, value: undefined });
    assert.equal(peer.abandoned, 1);
  });

  it("takes an empty ITEMS list as nothing, and keeps granting after it", async () => {
    const peer = new Peer(4);
    assert.equal(peer.stream.pushAll([], 0), true);
    for (let i = 0; i < 8; i++) {
      assert.equal(peer.push(10), true);
      await peer.take();
    }
    assert.ok(peer.granted >= 4, `granted ${peer.granted} after 8 items with a window of 4`);
  });

  it("abandons when a for await loop breaks, and not after the end", async () => {
    const peer = new Peer(4);
    peer.pushAll(3, 10);
    for await (const value of peer.stream) if (value === 1) break;
    assert.equal(peer.abandoned, 1);
    const ended = new Peer(4);
    ended.push(10);
    ended.stream.end();
    await ended.stream.return();
    assert.equal(ended.abandoned, 0, "a finished stream is not abandoned");
  });
});
