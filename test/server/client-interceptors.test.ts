import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client, type ClientInterceptor } from "../../src/client/index.js";
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
