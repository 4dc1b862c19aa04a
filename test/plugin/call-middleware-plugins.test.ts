import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type AccessLogRecord, accessLog, maxConcurrentCalls, rateLimit } from "../../src/plugin/index.js";
import { type CallMiddleware, ErrorCode, RpcError, Server } from "../../src/server/index.js";
import { deferred, rejectsWith, waitFor } from "../integration/helpers.js";

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

describe("call middleware reconfigured at run time", () => {
  it("rateLimit: capacity and refill apply to the next call, a key change starts afresh, a bad value changes nothing", async () => {
    const limit = rateLimit({ capacity: 1, refillPerSecond: 0.01 });
    const { server, address } = await serve([limit]);
    const client = new Client(address, { keepalive: false });
    try {
      assert.deepEqual(limit.options, { capacity: 1, refillPerSecond: 0.01, perIp: true, perMethod: false, maxBuckets: 10_000 });
      assert.equal(await client.call("ok"), "ok");
      await rejectsWith(client.call("ok"), "RESOURCE_EXHAUSTED", /rate limit exceeded for 127\.0\.0\.1; retry in \d+ ms/);
      // A refill of 1,000 a second fills the bucket again within a few ms.
      limit.configure({ refillPerSecond: 1000 });
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(await client.call("ok"), "ok");
      limit.configure({ refillPerSecond: 0.01, capacity: 3 });
      await rejectsWith(client.call("ok"), "RESOURCE_EXHAUSTED", /rate limit exceeded/);
      // Buckets per method: new keys, new buckets of the new capacity.
      limit.configure({ perIp: false, perMethod: true });
      assert.equal(limit.buckets, 0, "a key change drops the old buckets");
      for (let i = 0; i < 3; i++) assert.equal(await client.call("other"), "other");
      await rejectsWith(client.call("other"), "RESOURCE_EXHAUSTED", /rate limit exceeded for other;/);
      assert.equal(await client.call("ok"), "ok", "another method has its own bucket");
      assert.equal(limit.buckets, 2);
      limit.configure({ maxBuckets: 1 });
      assert.equal(limit.buckets, 1, "a lowered maxBuckets drops the least recently used at once");
      assert.throws(() => limit.configure({ capacity: 0 }), /rateLimit capacity must be an integer > 0/);
      assert.throws(() => limit.configure({ refillPerSecond: Number.NaN }), /refillPerSecond must be a number > 0/);
      assert.equal(limit.options.capacity, 3, "a refused configure changes nothing");
      assert.equal(limit.options.maxBuckets, 1);
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("maxConcurrentCalls: a raised max admits more at once, a lowered one refuses until calls finish", async () => {
    const gate = deferred();
    let started = 0;
    const limit = maxConcurrentCalls({ max: 1 });
    const { server, address } = await serve([limit], (s) => {
      s.register("wait", async () => {
        started++;
        await gate.promise;
        return "waited";
      });
    });
    const client = new Client(address, { keepalive: false });
    try {
      const first = client.call("wait");
      await waitFor(() => started === 1, 2000, "the first call started");
      await rejectsWith(client.call("ok"), "RESOURCE_EXHAUSTED", "too many concurrent calls on this connection (limit 1)");
      limit.configure({ max: 2 });
      assert.deepEqual(limit.options, { max: 2 });
      const second = client.call("wait");
      await waitFor(() => started === 2, 2000, "the second call started");
      limit.configure({ max: 1 });
      const refused = await rejectsWith(client.call("ok"), "RESOURCE_EXHAUSTED", "too many concurrent calls on this connection (limit 1)");
      assert.deepEqual(refused.data, { limit: 1 });
      assert.throws(() => limit.configure({ max: -1 }), /maxConcurrentCalls max must be an integer >= 0/);
      assert.deepEqual(limit.options, { max: 1 });
      gate.resolve();
      assert.deepEqual(await Promise.all([first, second]), ["waited", "waited"]);
      assert.equal(await client.call("ok"), "ok");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("accessLog: records go to the new writer from the next call; a bad writer is refused", async () => {
    const before: string[] = [];
    const after: string[] = [];
    const log = accessLog({ write: (r) => before.push(r.method) });
    const { server, address } = await serve([log]);
    const client = new Client(address, { keepalive: false });
    try {
      await client.call("ok");
      log.configure({ write: (r) => after.push(r.method) });
      await client.call("other");
      assert.deepEqual([before, after], [["ok"], ["other"]]);
      assert.throws(() => log.configure({ write: "console" as never }), /accessLog write must be a function/);
      await client.call("ok");
      assert.deepEqual(after, ["other", "ok"], "a refused configure changes nothing");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });
});
