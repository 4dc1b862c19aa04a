import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ipFilter, ipMaxConn } from "../../src/plugin/index.js";
import { RpcError, Server, type ServerOptions } from "../../src/server/index.js";
import { waitFor } from "../integration/helpers.js";
import { Peers, portOf } from "./loopback-peer.js";

async function serve(options: ServerOptions): Promise<{ server: Server; port: number }> {
  const server = new Server({ keepalive: false, ...options });
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, port: portOf(address) };
}

describe("ipMaxConn", () => {
  it("limits the connections each address has open at once (window 0)", async () => {
    const perIp = ipMaxConn({ max: 2 });
    assert.deepEqual(perIp.options, { max: 2, window: 0 });
    const { server, port } = await serve({ connectionMiddleware: [perIp] });
    const peers = new Peers();
    try {
      const first = await peers.admitted({ port, from: "127.0.0.1" });
      await peers.admitted({ port, from: "127.0.0.1" });
      const { data } = await peers.refused(
        { port, from: "127.0.0.1" },
        "RESOURCE_EXHAUSTED",
        /^too many connections from 127\.0\.0\.1: at most 2 at a time$/,
      );
      assert.deepEqual(data, { limit: 2 });
      // Another address has its own count.
      await peers.admitted({ port, from: "127.0.0.2" });
      await peers.admitted({ port, from: "127.0.0.2" });
      assert.equal(perIp.count("127.0.0.1"), 2);
      assert.equal(perIp.count("127.0.0.2"), 2);
      assert.equal(perIp.count("::ffff:127.0.0.2"), 2, "an IPv4-mapped address is the IPv4 address");

      first.destroy();
      await waitFor(() => perIp.count("127.0.0.1") === 1, 2000, "closed connection given back");
      await peers.admitted({ port, from: "127.0.0.1" });
      await peers.refused({ port, from: "127.0.0.1" }, "RESOURCE_EXHAUSTED");
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("with a window, limits the connections each address opens within it, open or closed", async () => {
    const perIp = ipMaxConn({ max: 2, window: 60_000 });
    const { server, port } = await serve({ connectionMiddleware: [perIp] });
    const peers = new Peers();
    try {
      for (let i = 0; i < 2; i++) {
        const peer = await peers.admitted({ port, from: "127.0.0.1" });
        peer.destroy();
        await peer.closed;
      }
      await waitFor(() => server.connectionCount === 0, 2000, "connections closed");
      const { data } = await peers.refused(
        { port, from: "127.0.0.1" },
        "RESOURCE_EXHAUSTED",
        /^too many connections from 127\.0\.0\.1: at most 2 within 60000 ms$/,
      );
      const { retryAfter } = data as { limit: number; window: number; retryAfter: number };
      assert.deepEqual(data, { limit: 2, window: 60_000, retryAfter });
      assert.ok(retryAfter > 0 && retryAfter <= 60_000);
      assert.equal(perIp.count("127.0.0.1"), 2, "the refusal did not count");
      await peers.admitted({ port, from: "127.0.0.2" });

      // Back to counting open connections: none are open from 127.0.0.1.
      perIp.configure({ window: 0 });
      await peers.admitted({ port, from: "127.0.0.1" });
      assert.equal(perIp.count("127.0.0.1"), 1);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("admits an address again once its connections have left the window", async () => {
    const perIp = ipMaxConn({ max: 1, window: 200 });
    const { server, port } = await serve({ connectionMiddleware: [perIp] });
    const peers = new Peers();
    try {
      await peers.admitted({ port, from: "127.0.0.2" });
      await peers.refused({ port, from: "127.0.0.2" }, "RESOURCE_EXHAUSTED", /at most 1 within 200 ms/);
      await waitFor(() => perIp.count("127.0.0.2") === 0, 5000, "window passing");
      await peers.admitted({ port, from: "127.0.0.2" });
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("does not count connections a later middleware refuses, in either mode", async () => {
    for (const window of [0, 60_000]) {
      const perIp = ipMaxConn({ max: 1, window });
      const filter = ipFilter({ block: ["127.0.0.2"] });
      const { server, port } = await serve({ connectionMiddleware: [perIp, filter] });
      const peers = new Peers();
      try {
        for (let i = 0; i < 3; i++) await peers.refused({ port, from: "127.0.0.2" }, "PERMISSION_DENIED");
        await waitFor(() => perIp.count("127.0.0.2") === 0, 2000, "refused connections given back");
        filter.configure({ block: [] });
        await peers.admitted({ port, from: "127.0.0.2" });
        await peers.refused({ port, from: "127.0.0.2" }, "RESOURCE_EXHAUSTED");
      } finally {
        peers.destroyAll();
        await server.close();
      }
    }
  });

  it("is reconfigured at run time and refuses bad options", async () => {
    const perIp = ipMaxConn({ max: 1 });
    const { server, port } = await serve({ connectionMiddleware: [perIp] });
    const peers = new Peers();
    try {
      await peers.admitted({ port });
      await peers.refused({ port }, "RESOURCE_EXHAUSTED");
      perIp.configure({ max: 2 });
      await peers.admitted({ port });
      for (const bad of [{ max: -1 }, { window: -1 }, { window: Number.POSITIVE_INFINITY }]) {
        assert.throws(
          () => perIp.configure(bad),
          (error: unknown) => error instanceof RpcError && error.code === "INVALID_ARGUMENT",
        );
      }
      assert.deepEqual(perIp.options, { max: 2, window: 0 });
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });
});
