import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { ipFilter, ipMaxConn } from "../../src/plugin/index.js";
import { type PeerInfo, RpcError, Server, type ServerOptions } from "../../src/server/index.js";
import { rejectsWith, socketPath, within } from "../integration/helpers.js";
import { Peers, portOf } from "./loopback-peer.js";

async function serve(options: ServerOptions, endpoint = "127.0.0.1:0"): Promise<{ server: Server; port: number; address: string }> {
  const server = new Server({ keepalive: false, ...options });
  server.register("echo", (value: unknown) => value);
  const [address] = (await server.listen(endpoint)) as [string];
  return { server, port: portOf(address), address };
}

function isInvalidArgument(error: unknown): boolean {
  return error instanceof RpcError && error.code === "INVALID_ARGUMENT";
}

describe("ipFilter matching", () => {
  it("matches single addresses and CIDR ranges, IPv4 and IPv6; block wins over allow", () => {
    const filter = ipFilter({ allow: ["127.0.0.0/8", "10.1.2.3", "2001:db8::/32", "::1"], block: ["127.0.0.2/32", "2001:db8:bad::/48"] });
    assert.equal(filter.allows("127.0.0.1"), true);
    assert.equal(filter.allows("127.255.0.9"), true);
    assert.equal(filter.allows("127.0.0.2"), false);
    assert.equal(filter.allows("10.1.2.3"), true);
    assert.equal(filter.allows("10.1.2.4"), false, "allow-only: not in the list");
    assert.equal(filter.allows("2001:db8:1::5"), true);
    assert.equal(filter.allows("2001:db8:bad::5"), false);
    assert.equal(filter.allows("::1"), true);
    assert.equal(filter.allows("::2"), false);
    assert.equal(filter.allows("not an address"), false, "with an allow list, anything unparsable is refused");
  });

  it("matches IPv4-mapped IPv6 addresses as IPv4, and maps IPv4-mapped entries too", () => {
    const filter = ipFilter({ block: ["10.0.0.0/8", "::ffff:192.168.0.0/112", "::ffff:172.16.0.1"] });
    assert.equal(filter.allows("::ffff:10.9.8.7"), false);
    assert.equal(filter.allows("::ffff:11.0.0.1"), true);
    assert.equal(filter.allows("192.168.3.4"), false);
    assert.equal(filter.allows("::ffff:192.168.3.4"), false);
    assert.equal(filter.allows("172.16.0.1"), false);
    assert.equal(filter.allows("not an address"), true, "with no allow list, only blocked addresses are refused");
    // An IPv6 range never matches an IPv4 (or IPv4-mapped) address.
    const v6only = ipFilter({ block: ["::/0"] });
    assert.equal(v6only.allows("::ffff:127.0.0.1"), true);
    assert.equal(v6only.allows("::1"), false);
  });

  it("refuses entries that are not addresses or ranges, and ambiguous IPv4 forms", () => {
    for (const bad of ["", "localhost", "300.1.1.1", "10.0.0.0/33", "::1/129", "010.0.0.1", "10.1", "0x7f.0.0.1", "1::2::3", "10.0.0.0/"]) {
      assert.throws(() => ipFilter({ allow: [bad] }), isInvalidArgument, `allow ${JSON.stringify(bad)}`);
      assert.throws(() => ipFilter({ block: [bad] }), isInvalidArgument, `block ${JSON.stringify(bad)}`);
    }
    assert.throws(() => ipFilter({ block: "10.0.0.1" as unknown as string[] }), isInvalidArgument);
    const filter = ipFilter({ block: ["10.0.0.1"] });
    assert.throws(() => filter.configure({ block: ["10.0.0.2", "nope"] }), /ipFilter block: "nope" is not an IP address or CIDR range/);
    assert.deepEqual(filter.options, { allow: [], block: ["10.0.0.1"] }, "a bad configure changes nothing");
  });
});

describe("ipFilter on real connections", () => {
  it("blocks 127.0.0.2/32 inside an allowed 127.0.0.0/8", async () => {
    const filter = ipFilter({ allow: ["127.0.0.0/8"], block: ["127.0.0.2/32"] });
    const { server, port } = await serve({ connectionMiddleware: [filter] });
    const peers = new Peers();
    try {
      await peers.admitted({ port, from: "127.0.0.1" });
      await peers.refused(
        { port, from: "127.0.0.2" },
        "PERMISSION_DENIED",
        /^connection from 127\.0\.0\.2 refused: the address is blocked$/,
      );
      await peers.admitted({ port, from: "127.0.0.3" });
      // At run time: allow only 127.0.0.3.
      filter.configure({ allow: ["127.0.0.3"], block: [] });
      await peers.refused(
        { port, from: "127.0.0.1" },
        "PERMISSION_DENIED",
        /^connection from 127\.0\.0\.1 refused: the address is not in the allow list$/,
      );
      await peers.admitted({ port, from: "127.0.0.3" });
      await peers.refused({ port, from: "127.0.0.2" }, "PERMISSION_DENIED", /127\.0\.0\.2 refused: the address is not in the allow list/);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("filters IPv6 clients on ::1", async () => {
    const filter = ipFilter({ allow: ["127.0.0.0/8"] });
    const { server, port } = await serve({ connectionMiddleware: [filter] }, "[::1]:0");
    const peers = new Peers();
    try {
      await peers.refused(
        { port, host: "::1" },
        "PERMISSION_DENIED",
        /^connection from ::1 refused: the address is not in the allow list$/,
      );
      filter.configure({ allow: ["::1/128"] });
      await peers.admitted({ port, host: "::1" });
      filter.configure({ block: ["::/0"] });
      await peers.refused({ port, host: "::1" }, "PERMISSION_DENIED", /::1 refused: the address is blocked/);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("matches IPv4 clients of a dual-stack listener as IPv4", async () => {
    const seen: PeerInfo[] = [];
    const perIp = ipMaxConn({ max: 5 });
    const filter = ipFilter({ block: ["127.0.0.2"] });
    const { server, port, address } = await serve(
      {
        connectionMiddleware: [
          (conn, next) => {
            seen.push(conn.peer);
            return next();
          },
          perIp,
          filter,
        ],
      },
      "[::]:0",
    );
    assert.match(address, /^\[::\]:\d+$/);
    const peers = new Peers();
    try {
      await peers.refused({ port, host: "127.0.0.1", from: "127.0.0.2" }, "PERMISSION_DENIED", /^connection from 127\.0\.0\.2 refused/);
      assert.equal(seen[0]?.address, "::ffff:127.0.0.2", "the listener reports the mapped address");
      assert.equal(seen[0]?.family, "IPv6");
      await peers.admitted({ port, host: "127.0.0.1", from: "127.0.0.1" });
      assert.equal(perIp.count("127.0.0.1"), 1, "counted under the IPv4 address");
      await peers.admitted({ port, host: "::1" });
      filter.configure({ allow: ["127.0.0.1"], block: [] });
      await peers.refused({ port, host: "::1" }, "PERMISSION_DENIED", /::1 refused: the address is not in the allow list/);
      await peers.admitted({ port, host: "127.0.0.1", from: "127.0.0.1" });
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("lets Unix socket connections through ipFilter and ipMaxConn", async () => {
    const path = socketPath("plugin-filter");
    const perIp = ipMaxConn({ max: 0 });
    const filter = ipFilter({ allow: ["10.0.0.0/8"], block: ["0.0.0.0/0", "::/0"] });
    const { server } = await serve({ connectionMiddleware: [perIp, filter] }, `unix:${path}`);
    const peers = new Peers();
    try {
      await peers.admitted({ port: 0, path });
      await peers.admitted({ port: 0, path });
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("gives a rapt Client PERMISSION_DENIED naming its address; admits it once reconfigured", async () => {
    const filter = ipFilter({ block: ["127.0.0.1"] });
    const { server, address } = await serve({ connectionMiddleware: [filter] });
    const client = new Client(address, { reconnect: { initialDelay: 20, maxDelay: 50 } });
    try {
      const error = await rejectsWith(
        client.call("echo", ["hi"]),
        "PERMISSION_DENIED",
        "connection from 127.0.0.1 refused: the address is blocked",
      );
      assert.ok(error.message.includes(address), `"${error.message}" names the server too`);
      filter.configure({ block: [] });
      assert.equal(await within(client.call("echo", ["hi"], { waitForReady: true, timeout: 5000 }), 6000, "call after reconfigure"), "hi");
    } finally {
      await client.close();
      await server.close();
    }
  });
});
