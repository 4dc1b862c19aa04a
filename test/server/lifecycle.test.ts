import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, lstatSync } from "node:fs";
import { type Server as NetServer, createServer } from "node:net";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { type CallContext, RpcError, Server } from "../../src/server/index.js";
import { decode } from "@msgpack/msgpack";
import { RawPeer, callFrame, callPayload, deferred, frame, rejectsWith, socketPath, waitFor, within } from "../integration/helpers.js";

describe("server close", () => {
  it("runs the hooks in order, lets in-flight calls finish, refuses new ones after GOAWAY", async () => {
    const order: string[] = [];
    const server = new Server({
      hooks: {
        beforeStart: async () => {
          await new Promise((resolve) => setImmediate(resolve));
          order.push("beforeStart");
        },
        afterStart: () => {
          order.push("afterStart");
        },
      },
    });
    server.hook("beforeStop", async (s) => {
      assert.equal(s, server);
      await new Promise((resolve) => setImmediate(resolve));
      order.push("beforeStop");
    });
    server.hook("afterStop", () => {
      order.push("afterStop");
    });
    const release = deferred();
    let entered = 0;
    server.register("work", async (n: number) => {
      entered++;
      await release.promise;
      return n * 10;
    });
    server.register("quick", () => "quick");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    assert.deepEqual(order, ["beforeStart", "afterStart"]);
    const client = new Client(address, { reconnect: { initialDelay: 20, maxDelay: 50 } });
    try {
      const inflight = [1, 2, 3].map((n) => client.call("work", [n]));
      await waitFor(() => entered === 3, 2000, "three handlers running");
      const closing = server.close({ timeout: 5000 });
      await waitFor(() => client.connectionId === undefined, 2000, "client receiving GOAWAY");
      await rejectsWith(client.call("quick", []), "UNAVAILABLE");
      assert.equal(server.connectionCount, 1, "the draining connection stays until its calls finish");
      release.resolve();
      assert.deepEqual(await within(Promise.all(inflight), 2000, "in-flight calls"), [10, 20, 30]);
      await within(closing, 2000, "close");
      assert.deepEqual(order, ["beforeStart", "afterStart", "beforeStop", "afterStop"]);
      assert.equal(server.connectionCount, 0);
    } finally {
      release.resolve();
      await client.close();
      await server.close();
    }
  });

  it("cuts a handler that never finishes after the timeout, aborting its signal", async () => {
    const server = new Server();
    const aborted = deferred<unknown>();
    const entered = deferred();
    server.register("forever", function (this: CallContext) {
      this.signal.addEventListener("abort", () => aborted.resolve(this.signal.reason));
      entered.resolve();
      return new Promise(() => {});
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address);
    try {
      const call = rejectsWith(client.call("forever", []), "UNAVAILABLE");
      await within(entered.promise, 2000, "handler start");
      const t0 = performance.now();
      await within(server.close({ timeout: 150 }), 2000, "close with a stuck handler");
      const elapsed = performance.now() - t0;
      assert.ok(elapsed >= 140, `close resolved after ${elapsed} ms, before its timeout`);
      const reason = await within(aborted.promise, 500, "handler signal");
      assert.ok(reason instanceof RpcError);
      assert.equal(reason.code, "UNAVAILABLE");
      assert.match(reason.message, /150 ms/);
      await within(call, 1000, "the cut call");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("is idempotent, and a closed server cannot listen again", async () => {
    let stops = 0;
    const server = new Server({ hooks: { afterStop: () => void stops++ } });
    await server.listen("127.0.0.1:0");
    const a = server.close({ timeout: 100 });
    const b = server.close({ timeout: 100 });
    assert.equal(a, b);
    await Promise.all([a, b]);
    await server.close();
    assert.equal(stops, 1);
    assert.deepEqual(server.addresses.length, 1);
    await rejectsWith(server.listen("127.0.0.1:0"), "FAILED_PRECONDITION");
  });

  it("closes a server that never listened", async () => {
    const server = new Server();
    await within(server.close(), 1000, "close");
  });

  it("finishes a CALL still arriving in fragments when GOAWAY was sent: GOAWAY's last stream covers it", async () => {
    const server = new Server();
    server.register("len", (s: string) => s.length);
    server.register("ping", () => "pong");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const peer = await RawPeer.open(Number(address.split(":").pop()));
    try {
      const payload = callPayload(["len"], ["u".repeat(200 * 1024)]);
      const chunk = 16 * 1024;
      peer.write(frame(FrameType.CALL, FrameFlag.FOLLOWS, 1, payload.subarray(0, chunk)));
      // Once stream 3 is answered, the server has seen stream 1 begin.
      peer.write(callFrame(3, "ping", []));
      assert.deepEqual(await peer.nextResult(), { streamId: 3, value: "pong" });
      const closing = server.close({ timeout: 5000 });
      const goaway = decode((await peer.next(FrameType.GOAWAY)).payload) as [number, string, string];
      assert.equal(goaway[0], 3);
      for (let offset = chunk; offset < payload.length; offset += chunk) {
        const last = offset + chunk >= payload.length;
        peer.write(frame(FrameType.CALL, last ? 0 : FrameFlag.FOLLOWS, 1, payload.subarray(offset, offset + chunk)));
      }
      assert.deepEqual(await peer.nextResult(), { streamId: 1, value: 200 * 1024 });
      await peer.expectClosed();
      await within(closing, 2000, "close");
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("refuses a connection still in its handshake with an ERROR on close", async () => {
    const server = new Server();
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const peer = await RawPeer.connect(Number(address.split(":").pop()));
    try {
      await waitFor(() => server.connectionCount === 1, 2000, "connection accepted");
      await within(server.close({ timeout: 1000 }), 2000, "close");
      const error = await peer.nextError();
      assert.equal(error.streamId, 0);
      assert.equal(error.code, "UNAVAILABLE");
      await peer.expectClosed();
    } finally {
      peer.destroy();
      await server.close();
    }
  });
});

describe("listeners", () => {
  it("listens on IPv4, IPv6 and a Unix socket at once, and serves each", async () => {
    const path = socketPath("multi");
    const server = new Server();
    server.register("where", function (this: CallContext) {
      return this.peer.family;
    });
    const addresses = await server.listen("127.0.0.1:0", "[::1]:0", `unix:${path}`);
    assert.match(addresses[0] as string, /^127\.0\.0\.1:\d+$/);
    assert.match(addresses[1] as string, /^\[::1\]:\d+$/);
    assert.equal(addresses[2], `unix:${path}`);
    assert.deepEqual(server.addresses, addresses);
    const clients = addresses.map((a) => new Client(a));
    try {
      assert.deepEqual(await Promise.all(clients.map((c) => c.call("where", []))), ["IPv4", "IPv6", "unix"]);
      assert.equal(server.connectionCount, 3);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await server.close({ timeout: 1000 });
    }
    assert.equal(existsSync(path), false, "the socket file is removed on close");
  });

  it("adds listeners to a running server", async () => {
    const server = new Server();
    server.register("ping", () => "pong");
    try {
      await server.listen("127.0.0.1:0");
      const [second] = (await server.listen("127.0.0.1:0")) as [string];
      assert.equal(server.addresses.length, 2);
      const client = new Client(second);
      try {
        assert.equal(await client.call("ping", []), "pong");
      } finally {
        await client.close();
      }
    } finally {
      await server.close({ timeout: 1000 });
    }
  });

  it("replaces a stale Unix socket file left by a dead process", async () => {
    const path = socketPath("stale");
    // A process that binds the path and dies without cleaning up.
    const child = spawn(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    await within(new Promise((resolve) => child.once("exit", resolve)), 5000, "child exit");
    assert.ok(lstatSync(path).isSocket(), "the dead process left its socket file");
    const server = new Server();
    server.register("ping", () => "pong");
    try {
      assert.deepEqual(await server.listen(`unix:${path}`), [`unix:${path}`]);
      const client = new Client(`unix:${path}`);
      try {
        assert.equal(await client.call("ping", []), "pong");
      } finally {
        await client.close();
      }
    } finally {
      await server.close({ timeout: 1000 });
    }
  });

  it("refuses a Unix socket a live process listens on, with a clear error", async () => {
    const path = socketPath("live");
    const other: NetServer = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => other.listen(path, resolve));
    const server = new Server();
    try {
      const error = await rejectsWith(server.listen(`unix:${path}`), "UNAVAILABLE", `unix:${path}`);
      assert.match(error.message, /EADDRINUSE \(another server is accepting connections/);
      assert.ok(lstatSync(path).isSocket(), "the live socket file is left alone");
      // The other server still accepts.
      const peer = await RawPeer.connect(path);
      await peer.expectClosed();
    } finally {
      await server.close();
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }
  });

  it("refuses a port in use with UNAVAILABLE naming the address", async () => {
    const first = new Server();
    const second = new Server();
    try {
      const [address] = (await first.listen("127.0.0.1:0")) as [string];
      await rejectsWith(second.listen(address), "UNAVAILABLE", address);
      await rejectsWith(second.listen(address), "UNAVAILABLE", /EADDRINUSE/);
    } finally {
      await second.close();
      await first.close();
    }
  });
});

describe("keepalive", () => {
  it("measures the round-trip time with small intervals", async () => {
    const server = new Server({ keepalive: { interval: 20, timeout: 2000 } });
    server.register("ping", () => "pong");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { keepalive: { interval: 20, timeout: 2000 } });
    try {
      await client.connect();
      assert.equal(client.rtt, undefined);
      await waitFor(() => client.rtt !== undefined, 2000, "first PONG");
      const rtt: unknown = client.rtt;
      assert.equal(typeof rtt, "number");
      assert.ok((rtt as number) >= 0 && (rtt as number) < 2000);
      assert.equal(await client.call("ping", []), "pong");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("keeps a quiet but answering client connected past the timeout", async () => {
    const server = new Server({ keepalive: { interval: 20, timeout: 100 } });
    server.register("ping", () => "pong");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { keepalive: false });
    try {
      await client.connect();
      const id = client.connectionId;
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(client.connectionId, id);
      assert.equal(await client.call("ping", []), "pong");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("drops a peer that completes the handshake and then never answers PINGs", async () => {
    const server = new Server({ keepalive: { interval: 20, timeout: 100 } });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const peer = await RawPeer.open(Number(address.split(":").pop()));
    try {
      assert.equal(server.connectionCount, 1);
      await peer.next(FrameType.PING, 1000);
      await peer.expectClosed(2000);
      await waitFor(() => server.connectionCount === 0, 2000, "server forgetting the connection");
    } finally {
      peer.destroy();
      await server.close({ timeout: 1000 });
    }
  });
});
