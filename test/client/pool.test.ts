import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "../../src/client/index.js";
import type { Connection } from "../../src/protocol/connection.js";
import { type CallContext, RpcError, Server } from "../../src/server/index.js";
import { rejectsWith, waitFor, within } from "../integration/helpers.js";

interface Who {
  tag: string;
  connectionId: string;
}

async function backend(tag: string, address = "127.0.0.1:0"): Promise<{ server: Server; address: string }> {
  const server = new Server({ keepalive: false });
  server.register("who", function (this: CallContext): Who {
    return { tag, connectionId: this.connectionId };
  });
  server.register("slow", async function (this: CallContext, ms: number): Promise<string> {
    await sleep(ms, undefined, { signal: this.signal });
    return tag;
  });
  const [bound] = (await server.listen(address)) as [string];
  return { server, address: bound };
}

describe("connection pool", () => {
  it("spreads calls round-robin over every endpoint and connection", async () => {
    const a = await backend("a");
    const b = await backend("b");
    const client = new Client([a.address, b.address], { keepalive: false, pool: { min: 2 } });
    try {
      await client.connect();
      // Let every connection of the pool open.
      await waitFor(() => client.connectionIds.length === 4, 3000, "four connections");
      const counts = new Map<string, number>();
      for (let i = 0; i < 80; i++) {
        const who = await client.call<Who>("who");
        counts.set(`${who.tag}:${who.connectionId}`, (counts.get(`${who.tag}:${who.connectionId}`) ?? 0) + 1);
      }
      assert.equal(counts.size, 4, JSON.stringify([...counts]));
      for (const count of counts.values()) assert.equal(count, 20);
    } finally {
      await client.close();
      await a.server.close({ timeout: 500 });
      await b.server.close({ timeout: 500 });
    }
  });

  it("killing one endpoint under load fails only its calls in flight; later calls go to the other", async () => {
    const a = await backend("a");
    const b = await backend("b");
    const client = new Client([a.address, b.address], { keepalive: false, reconnect: { initialDelay: 50, maxDelay: 200 } });
    try {
      await client.connect();
      await waitFor(() => client.connectionIds.length === 2, 3000, "both endpoints");
      const calls = Array.from({ length: 40 }, () =>
        client.call<string>("slow", [300]).then(
          (tag) => ({ ok: true as const, tag }),
          (error: RpcError) => ({ ok: false as const, code: error.code }),
        ),
      );
      await sleep(50);
      // Kill endpoint a abruptly: its connections drop mid-call.
      void a.server.close({ timeout: 0 });
      const results = await within(Promise.all(calls), 5000, "calls under load");
      const failed = results.filter((r) => !r.ok);
      const succeeded = results.filter((r) => r.ok);
      assert.ok(failed.length > 0 && succeeded.length > 0, JSON.stringify(results));
      for (const r of failed) assert.equal(r.ok ? "" : r.code, "UNAVAILABLE");
      for (const r of succeeded) assert.equal(r.ok ? r.tag : "", "b");
      // Later calls all succeed, on b.
      for (let i = 0; i < 20; i++) assert.equal((await client.call<Who>("who")).tag, "b");
    } finally {
      await client.close();
      await b.server.close({ timeout: 500 });
    }
  });

  it("an endpoint that was down is used again once it is back", async () => {
    const a = await backend("a");
    const b = await backend("b");
    const client = new Client([a.address, b.address], { keepalive: false, reconnect: { initialDelay: 20, maxDelay: 100 } });
    let restarted: Server | undefined;
    try {
      await client.connect();
      await waitFor(() => client.connectionIds.length === 2, 3000, "both endpoints");
      await a.server.close({ timeout: 0 });
      for (let i = 0; i < 10; i++) assert.equal((await client.call<Who>("who")).tag, "b");
      restarted = (await backend("a again", a.address)).server;
      await waitFor(() => restarted?.connectionCount === 1 && client.connectionIds.length === 2, 3000, "reconnect to a");
      const tags = new Set<string>();
      for (let i = 0; i < 10; i++) tags.add((await client.call<Who>("who")).tag);
      assert.deepEqual([...tags].sort(), ["a again", "b"]);
    } finally {
      await client.close();
      await b.server.close({ timeout: 500 });
      await restarted?.close({ timeout: 500 });
    }
  });

  it("with every endpoint down, fail-fast calls reject with UNAVAILABLE naming the failure", async () => {
    const a = await backend("a");
    const b = await backend("b");
    await a.server.close();
    await b.server.close();
    const client = new Client([a.address, b.address], { keepalive: false, reconnect: { initialDelay: 1000 } });
    try {
      await within(rejectsWith(client.call("who"), "UNAVAILABLE", /no connection to 127\.0\.0\.1:\d+/), 3000, "fail fast");
    } finally {
      await client.close();
    }
  });

  it("least-loaded sends calls away from a connection that is busy", async () => {
    const a = await backend("a");
    const b = await backend("b");
    const client = new Client([a.address, b.address], { keepalive: false, picker: "least-loaded" });
    try {
      await client.connect();
      await waitFor(() => client.connectionIds.length === 2, 3000, "both endpoints");
      // Load one endpoint with slow calls, then see where quick ones go.
      const busy: Array<Promise<string>> = [];
      for (let i = 0; i < 30; i++) busy.push(client.call<string>("slow", [400]));
      await sleep(50);
      const loads = new Map<string, number>();
      for (let i = 0; i < 30; i++) {
        const who = await client.call<Who>("who");
        loads.set(who.tag, (loads.get(who.tag) ?? 0) + 1);
      }
      const slowTags = await Promise.all(busy);
      // The slow calls themselves spread over both (they were placed least-loaded too).
      assert.ok(slowTags.includes("a") && slowTags.includes("b"), JSON.stringify(slowTags));
      assert.equal((loads.get("a") ?? 0) + (loads.get("b") ?? 0), 30);
    } finally {
      await client.close();
      await a.server.close({ timeout: 500 });
      await b.server.close({ timeout: 500 });
    }
  });

  it("a custom picker decides", async () => {
    const a = await backend("a");
    const b = await backend("b");
    let offered = 0;
    const client = new Client([a.address, b.address], {
      keepalive: false,
      picker: (candidates: readonly Connection[]) => {
        offered = Math.max(offered, candidates.length);
        return candidates[candidates.length - 1] as Connection;
      },
    });
    try {
      await client.connect();
      await waitFor(() => client.connectionIds.length === 2, 3000, "both endpoints");
      const tags = new Set<string>();
      for (let i = 0; i < 10; i++) tags.add((await client.call<Who>("who")).tag);
      assert.equal(tags.size, 1);
      assert.equal(offered, 2);
    } finally {
      await client.close();
      await a.server.close({ timeout: 500 });
      await b.server.close({ timeout: 500 });
    }
  });

  it("grows past min while connections are at maxInFlight, up to max", async () => {
    const a = await backend("a");
    const client = new Client(a.address, { keepalive: false, pool: { min: 1, max: 3, maxInFlight: 5 } });
    try {
      await client.connect();
      const slow: Array<Promise<string>> = [];
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 6; i++) slow.push(client.call<string>("slow", [300]));
        await sleep(60);
      }
      await waitFor(() => a.server.connectionCount === 3 && client.connectionIds.length === 3, 3000, "pool grown to max");
      await Promise.all(slow);
      assert.equal(a.server.connectionCount, 3);
    } finally {
      await client.close();
      await a.server.close({ timeout: 500 });
    }
  });

  it("refuses an unknown picker and an empty endpoint list", () => {
    assert.throws(
      () => new Client([]),
      (e: unknown) => e instanceof RpcError && e.code === "INVALID_ARGUMENT",
    );
    assert.throws(
      () => new Client("127.0.0.1:1", { picker: "random" as "round-robin" }),
      (e: unknown) => e instanceof RpcError && /unknown picker "random"/.test(e.message),
    );
  });
});
