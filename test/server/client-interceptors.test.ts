import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Channel, Client, type ClientInterceptor, type InterceptedCall } from "../../src/client/index.js";
import { type CallContext, ErrorCode, RpcError, Server } from "../../src/server/index.js";
import { rejectsWith } from "../integration/helpers.js";

describe("client interceptors", () => {
  const server = new Server({ keepalive: false });
  let address: string;
  let calls = 0;
  let flaky = 0;

  before(async () => {
    server.register("meta", function (this: CallContext) {
      calls++;
      return { ...this.metadata };
    });
    server.register("add", (a: number, b: number) => {
      calls++;
      return a + b;
    });
    server.register("flaky", () => {
      flaky++;
      if (flaky % 2 === 1) throw new RpcError(ErrorCode.UNAVAILABLE, "try again");
      return "ok";
    });
    server.register("count", async function* (this: CallContext, n: number): AsyncGenerator<string> {
      for (let i = 0; i < n; i++) yield `${String(this.metadata.trace)}:${i}`;
    });
    server.register("failing", async function* (): AsyncGenerator<number> {
      yield 1;
      throw new RpcError(ErrorCode.FAILED_PRECONDITION, "stream broke");
    });
    server.channel("echo", async function (this: CallContext, channel: Channel<string, string>) {
      for await (const message of channel) await channel.send(`${String(this.metadata.trace)}:${message}`);
    });
    [address] = (await server.listen("127.0.0.1:0")) as [string];
  });

  after(async () => {
    await server.close({ timeout: 1000 });
  });

  it("run as an onion in order; metadata set by them reaches the server; the caller's object is untouched", async () => {
    const order: string[] = [];
    const auth: ClientInterceptor = async (call, next) => {
      order.push(`auth>${call.method}`);
      call.options.metadata.token = "t0k3n";
      const result = await next();
      order.push("auth<");
      return result;
    };
    const trace: ClientInterceptor = async (call, next) => {
      order.push("trace>");
      call.options.metadata.trace = "abc";
      try {
        return await next();
      } finally {
        order.push("trace<");
      }
    };
    const client = new Client(address, { keepalive: false, interceptors: [auth, trace] });
    try {
      const mine = { mine: "yes" };
      assert.deepEqual(await client.call("meta", [], { metadata: mine }), { mine: "yes", token: "t0k3n", trace: "abc" });
      assert.deepEqual(mine, { mine: "yes" });
      assert.deepEqual(order, ["auth>meta", "trace>", "trace<", "auth<"]);
    } finally {
      await client.close();
    }
  });

  it("may change arguments, transform or replace the result, answer without calling, and retry", async () => {
    const cache = new Map<string, unknown>([["add:40,2", 42]]);
    const cached: ClientInterceptor = (call, next) => {
      const key = `${call.method}:${call.args.join(",")}`;
      return cache.has(key) ? Promise.resolve(cache.get(key)) : next();
    };
    const doubleArgs: ClientInterceptor = (call, next) => {
      if (call.method === "add") call.args = call.args.map((a) => (a as number) * 2);
      return next();
    };
    const retry: ClientInterceptor = async (call, next) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await next();
        } catch (error) {
          if (attempt >= 3 || !(error instanceof RpcError) || error.code !== "UNAVAILABLE") throw error;
        }
      }
    };
    const client = new Client(address, { keepalive: false, interceptors: [cached, doubleArgs, retry] });
    try {
      const before = calls;
      assert.equal(await client.call("add", [40, 2]), 42);
      assert.equal(calls, before, "answered from the cache");
      assert.equal(await client.call("add", [1, 2]), 6);
      assert.equal(await client.call("flaky"), "ok");
      assert.equal(flaky, 2, "retried once");
    } finally {
      await client.close();
    }
  });

  it("wrap proxy calls, streams and channels too: metadata reaches the server and next() ends with them", async () => {
    const log: string[] = [];
    const tracing: ClientInterceptor = async (call: InterceptedCall, next) => {
      call.options.metadata.trace = "t1";
      try {
        const result = await next();
        log.push(`${call.kind} ${call.method} ok ${JSON.stringify(result ?? null)}`);
        return result;
      } catch (error) {
        log.push(`${call.kind} ${call.method} ${(error as RpcError).code}`);
        throw error;
      }
    };
    const client = new Client(address, { keepalive: false, interceptors: [tracing] });
    try {
      const stub = client.proxy<{ add(a: number, b: number): number; count(n: number): AsyncGenerator<string> }>();
      assert.equal(await stub.add(1, 2), 3);
      const items: string[] = [];
      for await (const item of client.stream<string>("count", [2])) items.push(item);
      for await (const item of stub.count(1)) items.push(item);
      assert.deepEqual(items, ["t1:0", "t1:1", "t1:0"]);
      const failed = (async () => {
        for await (const _ of client.stream("failing")) void _;
      })();
      await rejectsWith(failed, "FAILED_PRECONDITION", "stream broke");
      const channel = client.channel<string, string>("echo");
      await channel.send("hi");
      const iterator = channel[Symbol.asyncIterator]();
      assert.deepEqual(await iterator.next(), { done: false, value: "t1:hi" });
      channel.close();
      await channel.closed;
      // next() settles when each ends, so the log is complete once they have.
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(log.sort(), [
        "call add ok 3",
        "call count ok null",
        "channel echo ok null",
        "stream count ok null",
        "stream failing FAILED_PRECONDITION",
      ]);
    } finally {
      await client.close();
    }
  });

  it("can refuse streams and channels before they are sent", async () => {
    const before = calls;
    const refusing: ClientInterceptor = async (call, next) => {
      if (call.kind !== "call") throw new RpcError(ErrorCode.PERMISSION_DENIED, `no ${call.kind}s here`);
      return next();
    };
    const silent: ClientInterceptor = async () => "answered without calling";
    const client = new Client(address, { keepalive: false, interceptors: [refusing] });
    const quiet = new Client(address, { keepalive: false, interceptors: [silent] });
    try {
      const reading = (async () => {
        for await (const _ of client.stream("count", [3])) void _;
      })();
      await rejectsWith(reading, "PERMISSION_DENIED", "no streams here");
      const closed = await client.channel("echo").closed;
      assert.equal(closed.error?.code, "PERMISSION_DENIED");
      // A stream cannot be answered without next(): it fails clearly instead of hanging.
      const unanswered = (async () => {
        for await (const _ of quiet.stream("count", [1])) void _;
      })();
      await rejectsWith(unanswered, "FAILED_PRECONDITION", /returned without calling next\(\)/);
      assert.equal(await client.call("add", [1, 1]), 2);
      assert.equal(calls, before + 1);
    } finally {
      await client.close();
      await quiet.close();
    }
  });

  it("turn non-RpcError throws into INTERNAL and pass RpcErrors as they are; apply to session calls", async () => {
    const failing = new Client(address, {
      keepalive: false,
      interceptors: [
        (call) => {
          if (call.method === "add") throw new Error("interceptor broke");
          return Promise.reject(new RpcError(ErrorCode.FAILED_PRECONDITION, "not now"));
        },
      ],
    });
    const seen: string[] = [];
    const sessions = new Client(address, {
      keepalive: false,
      interceptors: [
        (call, next) => {
          seen.push(call.method);
          return next();
        },
      ],
    });
    try {
      await rejectsWith(failing.call("add", [1, 2]), "INTERNAL", "interceptor broke");
      await rejectsWith(failing.call("meta"), "FAILED_PRECONDITION", "not now");
      await sessions.session(async (session) => {
        assert.equal(await session.call("add", [2, 2]), 4);
      });
      assert.deepEqual(seen, ["add"]);
      assert.throws(
        () => new Client(address, { interceptors: [1 as unknown as ClientInterceptor] }),
        /interceptors must be an array of functions/,
      );
    } finally {
      await failing.close();
      await sessions.close();
    }
  });
});
