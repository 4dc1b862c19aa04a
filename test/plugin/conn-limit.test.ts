import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { connLimit, ipFilter } from "../../src/plugin/index.js";
import { RpcError, Server, type ServerOptions } from "../../src/server/index.js";
import { rejectsWith, waitFor } from "../integration/helpers.js";
import { Peers, portOf } from "./loopback-peer.js";

async function serve(options: ServerOptions): Promise<{ server: Server; port: number }> {
  const server = new Server({ keepalive: false, ...options });
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, port: portOf(address) };
}

describe("connLimit", () => {
  it("refuses past max, keeps refusing for blockTime after the limit was hit, then admits", async () => {
    const limit = connLimit({ max: 2, blockTime: 2000 });
    const { server, port } = await serve({ connectionMiddleware: [limit] });
    const peers = new Peers();
    try {
      const first = await peers.admitted({ port });
      await peers.admitted({ port, from: "127.0.0.2" });
      assert.equal(limit.open, 2);
      const refused = await peers.refused({ port }, "RESOURCE_EXHAUSTED", /has reached its connection limit \(2\)/);
      assert.deepEqual(refused.data, { limit: 2, retryAfter: 2000 });
      assert.ok(limit.blockedFor > 0);

      first.destroy();
      await waitFor(() => limit.open === 1, 2000, "closed connection given back");
      // Below max now, but still inside blockTime.
      const blocked = await peers.refused({ port }, "RESOURCE_EXHAUSTED", /refused for another \d+ ms/);
      assert.equal((blocked.data as { limit: number }).limit, 2);
      assert.equal(limit.open, 1, "refused connections do not count");

      await waitFor(() => limit.blockedFor === 0, 10_000, "block ending");
      await peers.admitted({ port });
      assert.equal(limit.open, 2);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("without blockTime admits as soon as a connection closes; refusals never count", async () => {
    const limit = connLimit({ max: 1 });
    assert.deepEqual(limit.options, { max: 1, blockTime: 0 });
    const { server, port } = await serve({ connectionMiddleware: [limit] });
    const peers = new Peers();
    try {
      const only = await peers.admitted({ port });
      for (let i = 0; i < 5; i++) await peers.refused({ port }, "RESOURCE_EXHAUSTED", /has reached its connection limit \(1\)/);
      assert.equal(limit.open, 1);
      assert.equal(limit.blockedFor, 0);
      only.destroy();
      await waitFor(() => limit.open === 0, 2000, "closed connection given back");
      await peers.admitted({ port });
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("does not count connections a later middleware refuses", async () => {
    const limit = connLimit({ max: 1 });
    const filter = ipFilter({ block: ["127.0.0.2"] });
    const { server, port } = await serve({ connectionMiddleware: [limit, filter] });
    const peers = new Peers();
    try {
      for (let i = 0; i < 3; i++) await peers.refused({ port, from: "127.0.0.2" }, "PERMISSION_DENIED");
      await waitFor(() => limit.open === 0, 2000, "refused connections given back");
      await peers.admitted({ port, from: "127.0.0.1" });
      assert.equal(limit.open, 1);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("is reconfigured at run time", async () => {
    const limit = connLimit({ max: 1 });
    const { server, port } = await serve({ connectionMiddleware: [limit] });
    const peers = new Peers();
    try {
      await peers.admitted({ port });
      await peers.refused({ port }, "RESOURCE_EXHAUSTED");
      limit.configure({ max: 2 });
      await peers.admitted({ port });
      assert.equal(limit.open, 2);

      // A long block, then lifted by configuring blockTime 0.
      limit.configure({ blockTime: 60_000 });
      await peers.refused({ port }, "RESOURCE_EXHAUSTED", /has reached its connection limit \(2\)/);
      limit.configure({ max: 3 });
      await peers.refused({ port }, "RESOURCE_EXHAUSTED", /refused for another \d+ ms/);
      limit.configure({ blockTime: 0 });
      assert.equal(limit.blockedFor, 0);
      await peers.admitted({ port });
      assert.deepEqual(limit.options, { max: 3, blockTime: 0 });

      // Lowering max below what is open closes nothing, and refuses new ones.
      limit.configure({ max: 1 });
      await peers.refused({ port }, "RESOURCE_EXHAUSTED", /has reached its connection limit \(1\)/);
      assert.equal(limit.open, 3);
      assert.equal(server.connectionCount, 3);

      for (const bad of [{ max: -1 }, { max: 1.5 }, { blockTime: Number.NaN }, { blockTime: -5 }]) {
        assert.throws(
          () => limit.configure(bad),
          (error: unknown) => error instanceof RpcError && error.code === "INVALID_ARGUMENT",
        );
      }
      assert.deepEqual(limit.options, { max: 1, blockTime: 0 }, "a bad configure changes nothing");
      assert.throws(() => connLimit({ max: Number.POSITIVE_INFINITY }), /connLimit max must be an integer >= 0/);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("reaches a rapt Client as UNAVAILABLE (retryable) carrying the server's message", async () => {
    const limit = connLimit({ max: 0 });
    const server = new Server({ keepalive: false, connectionMiddleware: [limit] });
    server.register("ping", () => "pong");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address);
    try {
      await rejectsWith(
        client.call("ping", []),
        "UNAVAILABLE",
        `no connection to ${address}: connection refused: the server has reached its connection limit (0)`,
      );
      limit.configure({ max: 1 });
      assert.equal(await client.call("ping", [], { waitForReady: true, timeout: 5000 }), "pong");
    } finally {
      await client.close();
      await server.close();
    }
  });
});
