import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "../../src/client/index.js";
import { type CallContext, Server } from "../../src/server/index.js";
import { MAX_WINDOW_FACTOR } from "../../src/protocol/inbound-stream.js";
import { deferred, rejectsWith, within } from "../integration/helpers.js";

async function* numbers(n: number, onPull?: () => void): AsyncGenerator<number> {
  for (let i = 1; i <= n; i++) {
    onPull?.();
    yield i;
  }
}

/** Client streams (an AsyncIterable argument) and bidirectional streams over loopback. */
describe("client streams", () => {
  const WINDOW = 8;
  const server = new Server({ keepalive: false, limits: { streamWindow: WINDOW } });
  let client: Client;
  const stalled = deferred<void>();
  let release = deferred<void>();

  const service = {
    async sum(values: AsyncIterable<number>): Promise<number> {
      let total = 0;
      for await (const v of values) total += v;
      return total;
    },
    async *double(values: AsyncIterable<number>): AsyncGenerator<number> {
      for await (const v of values) yield v * 2;
    },
    async label(prefix: string, values: AsyncIterable<string>, suffix: string): Promise<string> {
      const parts: string[] = [];
      for await (const v of values) parts.push(v);
      return `${prefix}${parts.join(",")}${suffix}`;
    },
    /** Reads one item, then waits: the client must stop sending at the window. */
    async slowReader(values: AsyncIterable<number>): Promise<number> {
      const iterator = values[Symbol.asyncIterator]();
      const first = await iterator.next();
      stalled.resolve();
      await release.promise;
      let total = first.value as number;
      for (let step = await iterator.next(); step.done !== true; step = await iterator.next()) total += step.value;
      return total;
    },
    /** Returns without reading its input. */
    async ignore(_values: AsyncIterable<number>): Promise<string> {
      return "ignored";
    },
    async firstOnly(this: CallContext, values: AsyncIterable<number>): Promise<number> {
      for await (const v of values) return v;
      return -1;
    },
  };

  before(async () => {
    server.register("c", service);
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address, { keepalive: false });
  });

  after(async () => {
    release.resolve();
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("stream in, one result out: the handler receives an AsyncIterable", async () => {
    assert.equal(await client.call("c.sum", [numbers(1000)]), 500500);
    // Through the typed proxy, with the AsyncIterable parameter type-checked.
    const c = client.proxy<typeof service>("c");
    assert.equal(await c.sum(numbers(10)), 55);
    // An empty stream.
    assert.equal(await c.sum(numbers(0)), 0);
  });

  it("the streamed argument may sit between plain ones", async () => {
    async function* words(): AsyncGenerator<string> {
      yield "a";
      yield "b";
    }
    assert.equal(await client.call("c.label", ["<", words(), ">"]), "<a,b>");
  });

  it("stream in, stream out (bidirectional)", async () => {
    const out: number[] = [];
    for await (const v of client.stream<number>("c.double", [numbers(100)])) out.push(v);
    assert.deepEqual(
      out,
      Array.from({ length: 100 }, (_, i) => 2 * (i + 1)),
    );
    const c = client.proxy<typeof service>("c");
    const viaProxy: number[] = [];
    for await (const v of c.double(numbers(3))) viaProxy.push(v);
    assert.deepEqual(viaProxy, [2, 4, 6]);
  });

  it("a server that stops reading stops the client's source (small items: at most 16 windows)", async () => {
    release = deferred<void>();
    let pulled = 0;
    const result = client.call("c.slowReader", [numbers(1000, () => pulled++)]);
    await within(stalled.promise, 2000, "first item read");
    await sleep(200);
    const atStall = pulled;
    // Credit grows past the window for small items, never past MAX_WINDOW_FACTOR windows.
    assert.ok(atStall <= WINDOW * MAX_WINDOW_FACTOR + 2, `client source pulled ${atStall} with a server window of ${WINDOW}`);
    await sleep(200);
    assert.equal(pulled, atStall, "the client kept pulling while the server was not reading");
    release.resolve();
    assert.equal(await within(result, 5000, "slow reader result"), 500500);
    assert.equal(pulled, 1000);
  });

  it("a handler that answers without reading its input ends the call; the client stops sending", async () => {
    let pulled = 0;
    assert.equal(await client.call("c.ignore", [numbers(1_000_000, () => pulled++)]), "ignored");
    assert.ok(pulled <= WINDOW + 2, `client source pulled ${pulled}`);
    let pulledFirst = 0;
    assert.equal(await client.call("c.firstOnly", [numbers(1_000_000, () => pulledFirst++)]), 1);
    assert.ok(pulledFirst <= WINDOW + 2, `client source pulled ${pulledFirst}`);
  });

  it("a failing source cancels the call with its message", async () => {
    async function* broken(): AsyncGenerator<number> {
      yield 1;
      throw new Error("disk on fire");
    }
    await rejectsWith(client.call("c.sum", [broken()]), "CANCELLED", /streamed argument failed: disk on fire/);
    assert.equal(await client.call("c.sum", [numbers(3)]), 6);
  });

  it("more than one streamed argument is refused before anything is sent", async () => {
    await rejectsWith(client.call("c.label", [numbers(1), numbers(2), "x"]), "INVALID_ARGUMENT", /at most one argument may be streamed/);
  });

  it("items that cannot be encoded fail the call, not the connection", async () => {
    async function* bad(): AsyncGenerator<unknown> {
      yield 1;
      yield () => 2;
    }
    await rejectsWith(client.call("c.sum", [bad()]), "INVALID_ARGUMENT", /cannot be encoded/);
    assert.equal(await client.call("c.sum", [numbers(4)]), 10);
  });
});
