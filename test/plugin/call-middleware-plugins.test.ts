import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type AccessLogRecord, accessLog, maxConcurrentCalls, rateLimit } from "../../src/plugin/index.js";
import { type CallMiddleware, ErrorCode, RpcError, Server } from "../../src/server/index.js";
import { deferred, rejectsWith } from "../integration/helpers.js";

async function serve(middleware: CallMiddleware[], setup?: (server: Server) => void): Promise<{ server: Server; address: string }> {
  const server = new Server({ keepalive: false, callMiddleware: middleware });
  server.register("ok", () => "ok");
  server.register("other", () => "other");
  server.register("fails", () => {
    throw new RpcError(ErrorCode.NOT_FOUND, "nothing here");
  });
  setup?.(server);
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, address };
}

describe("accessLog", () => {
  it("writes one record per call with method, peer, connection, duration and code", async () => {
    const records: AccessLogRecord[] = [];
    const refuse: CallMiddleware = (ctx, next) => {
      if (ctx.method === "other") throw new RpcError(ErrorCode.PERMISSION_DENIED, "no");
      return next();
    };
    const { server, address } = await serve([
      accessLog({
        write: (record) => {
          records.push(record);
          throw new Error("a failing writer is ignored");
        },
      }),
      refuse,
    ]);
    const client = new Client(address, { keepalive: false });
    try {
      assert.equal(await client.call("ok"), "ok");
      await rejectsWith(client.call("fails"), "NOT_FOUND");
      await rejectsWith(client.call("other"), "PERMISSION_DENIED");
      assert.deepEqual(
        records.map((r) => [r.method, r.kind, r.code, r.connectionId, r.peer.address]),
        [
          ["ok", "call", "OK", client.connectionId, "127.0.0.1"],
          ["fails", "call", "NOT_FOUND", client.connectionId, "127.0.0.1"],
          ["other", "call", "PERMISSION_DENIED", client.connectionId, "127.0.0.1"],
        ],
      );
      for (const r of records) assert.ok(r.durationMs >= 0);
      assert.throws(() => accessLog({} as never), /accessLog write must be a function/);
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });
});

describe("rateLimit", () => {
  it("refuses with RESOURCE_EXHAUSTED and retryAfterMs once a bucket is empty; buckets per method", async () => {
    const { server, address } = await serve([rateLimit({ capacity: 2, refillPerSecond: 0.01, perMethod: true })]);
    const client = new Client(address, { keepalive: false });
    try {
      assert.equal(await client.call("ok"), "ok");
      assert.equal(await client.call("ok"), "ok");
      const refused = await rejectsWith(client.call("ok"), "RESOURCE_EXHAUSTED", /rate limit exceeded for ok; retry in \d+ ms/);
      const { retryAfterMs } = refused.data as { retryAfterMs: number };
      assert.ok(retryAfterMs > 0 && retryAfterMs <= 100_000, `retryAfterMs ${retryAfterMs}`);
      assert.equal(await client.call("other"), "other", "another method has its own bucket");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("per IP by default; refills over time; checks its options", async () => {
    const { server, address } = await serve([rateLimit({ capacity: 1, refillPerSecond: 1000 })]);
    const client = new Client(address, { keepalive: false });
    try {
      // 1000 tokens a second: at most a few calls in a row are refused.
      let ok = 0;
      for (let i = 0; i < 200 && ok < 5; i++) {
        try {
          await client.call(i % 2 === 0 ? "ok" : "other");
          ok++;
        } catch (error) {
          assert.equal((error as RpcError).code, "RESOURCE_EXHAUSTED");
          assert.match((error as RpcError).message, /rate limit exceeded for 127\.0\.0\.1;/);
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      }
      assert.equal(ok, 5);
      assert.throws(() => rateLimit({ capacity: 0, refillPerSecond: 1 }), /capacity must be an integer > 0/);
      assert.throws(() => rateLimit({ capacity: 1, refillPerSecond: -1 }), /refillPerSecond must be a number > 0/);
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });
});

describe("maxConcurrentCalls", () => {
  it("refuses calls past max on one connection, not on others, and counts finished calls back", async () => {
    const gate = deferred();
    const started = deferred();
    const { server, address } = await serve([maxConcurrentCalls({ max: 1 })], (s) => {
      s.register("wait", async () => {
        started.resolve();
        await gate.promise;
        return "waited";
      });
    });
    const one = new Client(address, { keepalive: false });
    const two = new Client(address, { keepalive: false });
    try {
      const waiting = one.call("wait");
      await started.promise;
      const refused = await rejectsWith(one.call("ok"), "RESOURCE_EXHAUSTED", "too many concurrent calls on this connection (limit 1)");
      assert.deepEqual(refused.data, { limit: 1 });
      assert.equal(await two.call("ok"), "ok", "another connection has its own count");
      gate.resolve();
      assert.equal(await waiting, "waited");
      assert.equal(await one.call("ok"), "ok");
      assert.throws(() => maxConcurrentCalls({ max: -1 }), /maxConcurrentCalls max must be an integer >= 0/);
    } finally {
      await one.close();
      await two.close();
      await server.close({ timeout: 1000 });
    }
  });
});
