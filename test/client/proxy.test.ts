import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type CallContext, Server } from "../../src/server/index.js";
import { rejectsWith, within } from "../integration/helpers.js";

/** The service as the server registers it; the client only imports its type. */
const calc = {
  add: (a: number, b: number): number => a + b,
  async div(a: number, b: number): Promise<number> {
    if (b === 0) throw new Error("division by zero");
    return a / b;
  },
  whoami(this: CallContext, greeting: string): string {
    return `${greeting} ${this.peer.family} ${this.method}`;
  },
  when: (d: Date): Date => new Date(d.getTime() + 1000),
  stats: {
    sum: (values: number[]): number => values.reduce((a, b) => a + b, 0),
    deeper: {
      count: (values: string[]): number => values.length,
    },
  },
};

describe("typed proxy", () => {
  const server = new Server();
  let client: Client;

  before(async () => {
    server.register("calc", calc);
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address);
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("calls group methods with their types", async () => {
    const c = client.proxy<typeof calc>("calc");
    const sum: number = await c.add(2, 3);
    assert.equal(sum, 5);
    assert.equal(await c.div(9, 3), 3);
    const at = await c.when(new Date(0));
    assert.ok(at instanceof Date);
    assert.equal(at.getTime(), 1000);
  });

  it("reaches nested groups, and the same stub is handed out each time", async () => {
    const c = client.proxy<typeof calc>("calc");
    assert.equal(await c.stats.sum([1, 2, 3]), 6);
    assert.equal(await c.stats.deeper.count(["a", "b"]), 2);
    assert.equal(c.stats, c.stats);
    assert.equal(c.stats.deeper.count, c.stats.deeper.count);
  });

  it("a handler declared with this: CallContext is called without it", async () => {
    const c = client.proxy<typeof calc>("calc");
    assert.equal(await c.whoami("hello"), "hello IPv4 calc.whoami");
  });

  it("a root proxy names groups by property", async () => {
    const root = client.proxy<{ calc: typeof calc }>();
    assert.equal(await root.calc.add(1, 1), 2);
    assert.equal(await root.calc.stats.deeper.count([]), 0);
  });

  it("awaiting the proxy object itself does not hang: then is undefined", async () => {
    const c = client.proxy<typeof calc>("calc");
    assert.equal((c as unknown as { then?: unknown }).then, undefined);
    const awaited = await within(Promise.resolve(c), 1000, "await proxy");
    assert.equal(awaited, c);
    const nested = await within(
      (async () => {
        return c.stats;
      })(),
      1000,
      "await nested proxy",
    );
    assert.equal(nested, c.stats);
  });

  it("passes the proxy's options to every call and surfaces server errors", async () => {
    const c = client.proxy<typeof calc>("calc", { timeout: 2000, metadata: { via: "proxy" } });
    await rejectsWith(c.div(1, 0), "INTERNAL", /^internal error$/);
    const missing = client.proxy<{ nope: () => void }>("calc");
    await rejectsWith(missing.nope(), "NOT_FOUND", '"calc.nope"');
  });
});
