import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type CallContext, type CallMiddleware, type CallMiddlewareContext, ErrorCode, RpcError, Server } from "../../src/server/index.js";
import { rejectsWith } from "../integration/helpers.js";

describe("call middleware", () => {
  const events: string[] = [];
  const outcomes: Array<{ method: string; ok: boolean; value?: unknown; code?: string }> = [];
  let seenCtx: CallMiddlewareContext | undefined;
  let handlerRuns = 0;
  const outer: CallMiddleware = async (ctx, next) => {
    events.push(`outer>${ctx.method}`);
    seenCtx = ctx;
    try {
      const value = await next();
      outcomes.push({ method: ctx.method, ok: true, value });
    } catch (error) {
      assert.ok(error instanceof RpcError, "next() rejects with an RpcError");
      outcomes.push({ method: ctx.method, ok: false, code: error.code });
      throw error;
    } finally {
      events.push(`outer<${ctx.method}`);
    }
  };
  const inner: CallMiddleware = async (ctx, next) => {
    events.push(`inner>${ctx.method}`);
    ctx.metadata.tenant = "acme";
    if (ctx.metadata.refuse === "rpc") throw new RpcError(ErrorCode.FAILED_PRECONDITION, "refused by inner");
    if (ctx.metadata.refuse === "plain") throw new Error("secret detail");
    if (ctx.metadata.refuse === "silent") return undefined;
    if (ctx.metadata.refuse === "twice") {
      await next();
      return next();
    }
    if (ctx.metadata.refuse === "after") {
      await next();
      throw new RpcError(ErrorCode.UNKNOWN, "rejected after the handler ran");
    }
    if (ctx.metadata.refuse === "swallow") {
      try {
        await next();
      } catch {
        // Swallowing does not hide the handler's error.
      }
      return "ignored";
    }
    const result = await next();
    events.push(`inner<${ctx.method}`);
    return result;
  };
  const server = new Server({ keepalive: false, callMiddleware: [outer] });
  server.useCall(inner);
  let client: Client;

  before(async () => {
    server.register("add", (a: number, b: number) => {
      handlerRuns++;
      return a + b;
    });
    server.register("tenant", function (this: CallContext) {
      return this.metadata.tenant;
    });
    server.register("fails", () => {
      throw new RpcError(ErrorCode.NOT_FOUND, "no such thing");
    });
    server.register("crashes", () => {
      throw new Error("boom");
    });
    server.register("count", async function* (n: number) {
      for (let i = 0; i < n; i++) yield i;
    });
    server.register("typed", (n: number) => n, {
      validate: (args: unknown) => {
        if (typeof (args as unknown[])[0] !== "number") throw new RpcError(ErrorCode.INVALID_ARGUMENT, "typed: n must be a number");
        return args;
      },
    });
    server.channel<string, string>("echo", async (channel) => {
      for await (const message of channel) await channel.send(message);
      return "done";
    });
    const [address] = await server.listen("127.0.0.1:0");
    client = new Client(address as string, { keepalive: false });
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  function reset(): void {
    events.length = 0;
    outcomes.length = 0;
    seenCtx = undefined;
  }

  it("runs as an onion in order added (option first), sees the context and the result", async () => {
    reset();
    assert.equal(await client.call("add", [2, 3], { metadata: { trace: "t1" } }), 5);
    assert.deepEqual(events, ["outer>add", "inner>add", "inner<add", "outer<add"]);
    assert.deepEqual(outcomes, [{ method: "add", ok: true, value: 5 }]);
    const ctx = seenCtx as CallMiddlewareContext;
    assert.equal(ctx.kind, "call");
    assert.equal(ctx.peer.address, "127.0.0.1");
    assert.equal(ctx.connectionId, client.connectionId);
    assert.equal(ctx.metadata.trace, "t1");
    assert.equal(ctx.auth, undefined);
    assert.equal(ctx.session, undefined);
    assert.equal(ctx.signal.aborted, false);
  });

  it("lets middleware set metadata the handler sees, also when the call sent none", async () => {
    reset();
    assert.equal(await client.call("tenant"), "acme");
    assert.equal(await client.call("tenant", [], { metadata: { a: "b" } }), "acme");
  });

  it("rejects next() with the handler's RpcError, and an internal error for other throws", async () => {
    reset();
    await rejectsWith(client.call("fails"), "NOT_FOUND", "no such thing");
    await rejectsWith(client.call("crashes"), "INTERNAL", "internal error");
    assert.deepEqual(outcomes, [
      { method: "fails", ok: false, code: "NOT_FOUND" },
      { method: "crashes", ok: false, code: "INTERNAL" },
    ]);
  });

  it("refuses a call by throwing, before the handler runs", async () => {
    reset();
    const before = handlerRuns;
    await rejectsWith(client.call("add", [1, 1], { metadata: { refuse: "rpc" } }), "FAILED_PRECONDITION", "refused by inner");
    await rejectsWith(client.call("add", [1, 1], { metadata: { refuse: "plain" } }), "INTERNAL", "internal error");
    await rejectsWith(
      client.call("add", [1, 1], { metadata: { refuse: "silent" } }),
      "PERMISSION_DENIED",
      'call to "add" refused by call middleware #2',
    );
    assert.equal(handlerRuns, before, "the handler never ran");
    // The outer middleware saw each refusal as an RpcError from next().
    assert.deepEqual(
      outcomes.map((o) => o.code),
      ["FAILED_PRECONDITION", "INTERNAL", "PERMISSION_DENIED"],
    );
  });

  it("a throw after next() replaces the result; a swallowed error is still sent; next() twice is INTERNAL", async () => {
    await rejectsWith(client.call("add", [1, 1], { metadata: { refuse: "after" } }), "UNKNOWN", "rejected after the handler ran");
    await rejectsWith(client.call("fails", [], { metadata: { refuse: "swallow" } }), "NOT_FOUND", "no such thing");
    assert.equal(await client.call("add", [1, 2], { metadata: { refuse: "swallow" } }), 3, "return values are ignored");
    await rejectsWith(client.call("add", [1, 1], { metadata: { refuse: "twice" } }), "INTERNAL", "called next() more than once");
  });

  it("runs after argument validation: invalid arguments never reach it", async () => {
    reset();
    await rejectsWith(client.call("typed", ["x"]), "INVALID_ARGUMENT", "n must be a number");
    assert.deepEqual(events, []);
    assert.equal(await client.call("typed", [7]), 7);
  });

  it("wraps streaming calls: next() resolves with the returned iterable", async () => {
    reset();
    const items: unknown[] = [];
    for await (const item of client.stream<number>("count", [3])) items.push(item);
    assert.deepEqual(items, [0, 1, 2]);
    assert.equal(outcomes.length, 1);
    const value = outcomes[0]?.value as object;
    assert.equal(typeof value, "object");
    assert.ok(Symbol.asyncIterator in value);
  });

  it("wraps channel opens with kind 'channel'", async () => {
    reset();
    const channel = client.channel<string, string>("echo");
    await channel.send("hi");
    const reply = await channel[Symbol.asyncIterator]().next();
    assert.deepEqual(reply, { value: "hi", done: false });
    channel.close();
    assert.equal(seenCtx?.kind, "channel");
    assert.equal(seenCtx?.method, "echo");
  });

  it("refuses a middleware that is not a function", () => {
    assert.throws(
      () => server.useCall(42 as unknown as CallMiddleware),
      (error: unknown) =>
        error instanceof RpcError && error.code === "INVALID_ARGUMENT" && /call middleware must be a function/.test(error.message),
    );
  });

  it("passes exposeErrors messages for non-RpcError throws", async () => {
    const exposing = new Server({
      keepalive: false,
      exposeErrors: true,
      callMiddleware: [
        () => {
          throw new Error("middleware broke");
        },
      ],
    });
    exposing.register("x", () => 1);
    const [address] = await exposing.listen("127.0.0.1:0");
    const c = new Client(address as string, { keepalive: false });
    try {
      await rejectsWith(c.call("x"), "INTERNAL", "middleware broke");
    } finally {
      await c.close();
      await exposing.close({ timeout: 1000 });
    }
  });
});
