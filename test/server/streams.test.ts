import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, type ServerStream } from "../../src/client/index.js";
import { type CallContext, RpcError, Server } from "../../src/server/index.js";
import { MAX_WINDOW_FACTOR } from "../../src/protocol/inbound-stream.js";
import { deferred, rejectsWith, waitFor, within } from "../integration/helpers.js";

/** Server streams over loopback: items, flow control, early endings, errors. */
describe("server streams", () => {
  const WINDOW = 16;
  const server = new Server({ keepalive: false });
  let client: Client;
  let pulled = 0;
  let finallyRan = deferred<string>();

  const service = {
    async *count(n: number): AsyncGenerator<number> {
      for (let i = 0; i < n; i++) yield i;
    },
    async *endless(this: CallContext, padding = 0): AsyncGenerator<number | string> {
      try {
        for (let i = 0; ; i++) {
          pulled++;
          yield padding === 0 ? i : `${i}`.padEnd(padding, ".");
        }
      } finally {
        finallyRan.resolve(`endless finally, signal ${this.signal.aborted ? "aborted" : "not aborted"}`);
      }
    },
    async *slow(this: CallContext): AsyncGenerator<string> {
      try {
        yield "first";
        // Awaiting something slow: the abort must end the wait, not the timer.
        await sleep(60_000, undefined, { signal: this.signal });
        yield "never";
      } finally {
        finallyRan.resolve(`slow finally: ${(this.signal.reason as RpcError | undefined)?.code}`);
      }
    },
    async *failing(): AsyncGenerator<number> {
      yield 1;
      yield 2;
      throw new RpcError("FAILED_PRECONDITION", "ran out", { at: 2 });
    },
    async *big(n: number, size: number): AsyncGenerator<string> {
      for (let i = 0; i < n; i++) yield String(i % 10).repeat(size);
    },
    add: (a: number, b: number): number => a + b,
  };

  before(async () => {
    server.register("s", service);
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address, { keepalive: false, limits: { streamWindow: WINDOW } });
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("delivers every item in order with for await, from client.stream and the typed proxy", async () => {
    const items: number[] = [];
    for await (const n of client.stream<number>("s.count", [200])) items.push(n);
    assert.deepEqual(
      items,
      Array.from({ length: 200 }, (_, i) => i),
    );
    const s = client.proxy<typeof service>("s");
    const typed: ServerStream<number> = s.count(3);
    const fromProxy: number[] = [];
    for await (const n of typed) fromProxy.push(n);
    assert.deepEqual(fromProxy, [0, 1, 2]);
    // The same proxy still does unary calls.
    assert.equal(await s.add(2, 3), 5);
  });

  it("an empty stream ends at once", async () => {
    const items: number[] = [];
    for await (const n of client.stream<number>("s.count", [0])) items.push(n);
    assert.deepEqual(items, []);
  });

  it("a stalled consumer stops the producer: small items at most 16 windows, and it stays there", async () => {
    pulled = 0;
    finallyRan = deferred<string>();
    const iterator = client.stream<number>("s.endless")[Symbol.asyncIterator]();
    assert.deepEqual(await iterator.next(), { done: false, value: 0 });
    await sleep(150);
    const first = pulled;
    // Small items raise the credit past the window (to keep a fast producer
    // busy), never past MAX_WINDOW_FACTOR windows (plus the one item taken);
    // the pump holds one item it may not send yet (so a finished generator
    // ends the stream without more credit).
    assert.ok(first <= WINDOW * MAX_WINDOW_FACTOR + 2, `producer pulled ${first} items with a window of ${WINDOW}`);
    await sleep(300);
    assert.equal(pulled, first, "the producer kept pulling while the consumer was stalled");
    // Reading resumes the flow.
    for (let i = 1; i <= 3 * first; i++) assert.deepEqual(await iterator.next(), { done: false, value: i });
    assert.ok(pulled > first);
    await iterator.return?.();
    assert.match(await within(finallyRan.promise, 2000, "generator finally"), /endless finally/);
  });

  it("a stalled consumer of large items holds the producer at the window", async () => {
    pulled = 0;
    finallyRan = deferred<string>();
    // 64 KiB items: four fill the stream's byte budget, so the credit stays at the window.
    const iterator = client.stream<string>("s.endless", [64 * 1024])[Symbol.asyncIterator]();
    assert.equal(((await iterator.next()).value as string).length, 64 * 1024);
    await sleep(150);
    const first = pulled;
    assert.ok(first >= WINDOW && first <= WINDOW + 1, `producer pulled ${first} items with a window of ${WINDOW}`);
    await sleep(200);
    assert.equal(pulled, first, "the producer kept pulling while the consumer was stalled");
    for (let i = 1; i <= 2 * WINDOW; i++) assert.ok(((await iterator.next()).value as string).startsWith(`${i}.`));
    await iterator.return?.();
    assert.match(await within(finallyRan.promise, 2000, "generator finally"), /endless finally/);
  });

  it("break in the client's loop cancels the call and runs the generator's finally", async () => {
    finallyRan = deferred<string>();
    let seen = 0;
    for await (const n of client.stream<number>("s.endless")) {
      seen = n;
      if (n === 10) break;
    }
    assert.equal(seen, 10);
    assert.equal(await within(finallyRan.promise, 2000, "generator finally"), "endless finally, signal aborted");
  });

  it("a generator cancelled while awaiting something slow runs its finally promptly", async () => {
    finallyRan = deferred<string>();
    for await (const item of client.stream<string>("s.slow")) {
      assert.equal(item, "first");
      break;
    }
    assert.equal(await within(finallyRan.promise, 2000, "slow generator finally"), "slow finally: CANCELLED");
  });

  it("an AbortSignal cancels a stream: the loop throws CANCELLED and the server's generator ends", async () => {
    finallyRan = deferred<string>();
    const controller = new AbortController();
    const items: string[] = [];
    const reading = (async () => {
      for await (const item of client.stream<string>("s.slow", [], { signal: controller.signal })) {
        items.push(item);
        controller.abort();
      }
    })();
    await within(rejectsWith(reading, "CANCELLED"), 2000, "cancelled stream");
    assert.deepEqual(items, ["first"]);
    assert.equal(await within(finallyRan.promise, 2000, "slow generator finally"), "slow finally: CANCELLED");
  });

  it("a deadline ends a stream with DEADLINE_EXCEEDED on both sides", async () => {
    finallyRan = deferred<string>();
    const items: string[] = [];
    const reading = (async () => {
      for await (const item of client.stream<string>("s.slow", [], { timeout: 200 })) items.push(item);
    })();
    await within(rejectsWith(reading, "DEADLINE_EXCEEDED"), 2000, "expired stream");
    assert.deepEqual(items, ["first"]);
    assert.equal(await within(finallyRan.promise, 2000, "slow generator finally"), "slow finally: DEADLINE_EXCEEDED");
  });

  it("an error thrown by the generator reaches the client after the items already sent", async () => {
    const items: number[] = [];
    const reading = (async () => {
      for await (const n of client.stream<number>("s.failing")) items.push(n);
    })();
    const error = await rejectsWith(reading, "FAILED_PRECONDITION", "ran out");
    assert.deepEqual(error.data, { at: 2 });
    assert.deepEqual(items, [1, 2]);
  });

  it("large items are fragmented and interleave with unary calls", async () => {
    const sizes: number[] = [];
    const reading = (async () => {
      for await (const item of client.stream<string>("s.big", [8, 300_000])) sizes.push(item.length);
    })();
    const quick = await Promise.all(Array.from({ length: 20 }, (_, i) => client.call("s.add", [i, 1])));
    assert.deepEqual(
      quick,
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    await reading;
    assert.deepEqual(sizes, Array(8).fill(300_000));
  });

  it("await on a streaming method and iteration of a unary one fail with FAILED_PRECONDITION", async () => {
    await rejectsWith(client.call("s.count", [3]), "FAILED_PRECONDITION", /streams its result/);
    // A proxy call is both: awaited only once its whole stream (and END) has arrived, the same error.
    const late = client.proxy<typeof service>("s").count(3) as unknown as PromiseLike<unknown>;
    await new Promise((resolve) => setTimeout(resolve, 100));
    await rejectsWith(Promise.resolve(late), "FAILED_PRECONDITION", /s\.count streams its result/);
    const iterate = async (): Promise<void> => {
      for await (const _ of client.stream("s.add", [1, 2])) assert.fail("no items expected");
    };
    await rejectsWith(iterate(), "FAILED_PRECONDITION", /returns a single result/);
    // A stream to an unknown method fails from the loop with NOT_FOUND.
    const unknown = async (): Promise<void> => {
      for await (const _ of client.stream("s.nope")) assert.fail("no items expected");
    };
    await rejectsWith(unknown(), "NOT_FOUND", '"s.nope"');
  });

  it("many concurrent streams on one connection each get all their items", async () => {
    const streams = Array.from({ length: 50 }, async (_, k) => {
      let total = 0;
      for await (const n of client.stream<number>("s.count", [k + 50])) total += n;
      return total;
    });
    const totals = await Promise.all(streams);
    totals.forEach((total, k) => assert.equal(total, ((k + 50) * (k + 49)) / 2));
  });

  it("a cancelled stream's server state is released", async () => {
    for (let i = 0; i < 20; i++) {
      for await (const _ of client.stream("s.endless")) break;
    }
    await waitFor(() => server.connectionCount === 1, 2000, "one connection");
    assert.equal(await client.call("s.add", [1, 1]), 2);
  });
});
