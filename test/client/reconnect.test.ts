import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { type Socket, connect, createServer } from "node:net";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type CallContext, Server } from "../../src/server/index.js";
import { encode } from "@msgpack/msgpack";
import { FrameType } from "../../src/protocol/frame.js";
import { deferred, frame, rejectsWith, sleep, waitFor, within } from "../integration/helpers.js";

const FAST_RECONNECT = { initialDelay: 20, maxDelay: 100, multiplier: 1.5, jitter: 0.1 };

/** A server with an "echo" method and a "hang" method whose handlers only end when aborted. */
async function startServer(port = 0): Promise<{ server: Server; port: number; hanging: () => number }> {
  const server = new Server();
  let hanging = 0;
  server.register("echo", (x: unknown) => x);
  server.register("hang", function (this: CallContext) {
    hanging++;
    const signal = this.signal;
    return new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  });
  const [address] = await server.listen(`127.0.0.1:${port}`);
  return { server, port: Number((address as string).split(":").pop()), hanging: () => hanging };
}

/** A port that nothing listens on (bound once, then released). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe("lost connection and reconnect", () => {
  it("rejects every pending call with UNAVAILABLE promptly when the server cuts the connection", async () => {
    const { server, port, hanging } = await startServer();
    const client = new Client(`127.0.0.1:${port}`, { reconnect: FAST_RECONNECT });
    try {
      const calls = Array.from({ length: 20 }, () => client.call("hang", []));
      await waitFor(() => hanging() === 20, 2000, "20 handlers running");
      // GOAWAY, then the connections are cut at once: the handlers never finish.
      const closed = server.close({ timeout: 0 });
      const results = await within(Promise.allSettled(calls), 2000, "pending calls after the cut");
      for (const result of results) {
        assert.equal(result.status, "rejected");
        assert.equal((result.reason as { code: string }).code, "UNAVAILABLE");
      }
      await within(closed, 2000, "server close");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("reconnects with backoff once the server is back on the same port; waitForReady calls made while down succeed", async () => {
    const first = await startServer();
    const client = new Client(`127.0.0.1:${first.port}`, { reconnect: FAST_RECONNECT });
    let second: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      assert.equal(await client.call("echo", [1]), 1);
      const firstId = client.connectionId;
      await first.server.close({ timeout: 0 });
      // Down: fail-fast calls are refused once an attempt failed; waitForReady calls wait.
      const waiting = Array.from({ length: 5 }, (_, i) => client.call("echo", [i], { waitForReady: true }));
      await waitFor(() => client.connectionId === undefined, 2000, "client noticing the loss");
      await sleep(60);
      await rejectsWith(client.call("echo", [0]), "UNAVAILABLE", `127.0.0.1:${first.port}`);
      second = await startServer(first.port);
      assert.deepEqual(await within(Promise.all(waiting), 3000, "waitForReady calls"), [0, 1, 2, 3, 4]);
      assert.equal(await client.call("echo", ["again"]), "again");
      assert.notEqual(client.connectionId, undefined);
      assert.notEqual(client.connectionId, firstId);
    } finally {
      await client.close();
      await first.server.close();
      await second?.server.close();
    }
  });

  it("fail-fast calls while the server is down reject with UNAVAILABLE", async () => {
    const port = await freePort();
    const client = new Client(`127.0.0.1:${port}`, { reconnect: FAST_RECONNECT });
    try {
      const first = await within(rejectsWith(client.call("echo", [1]), "UNAVAILABLE", "ECONNREFUSED"), 2000, "first call");
      assert.match(first.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      // In backoff now: refused at once.
      for (let i = 0; i < 5; i++) await within(rejectsWith(client.call("echo", [i]), "UNAVAILABLE"), 500, "fail-fast call");
    } finally {
      await client.close();
    }
  });

  it("a waitForReady call with a timeout rejects with DEADLINE_EXCEEDED within its deadline while the server is down", async () => {
    const port = await freePort();
    const client = new Client(`127.0.0.1:${port}`, { reconnect: FAST_RECONNECT, waitForReady: true });
    try {
      const t0 = performance.now();
      const error = await within(rejectsWith(client.call("echo", [1], { timeout: 150 }), "DEADLINE_EXCEEDED"), 2000, "call");
      const elapsed = performance.now() - t0;
      assert.ok(elapsed >= 140, `gave up after ${elapsed} ms, before its deadline`);
      assert.match(error.message, /no connection to 127\.0\.0\.1:\d+ within the 150 ms deadline/);
      assert.match(error.message, /ECONNREFUSED/);
    } finally {
      await client.close();
    }
  });

  it("client.close() rejects calls waiting for a connection, and closes", async () => {
    const port = await freePort();
    const client = new Client(`127.0.0.1:${port}`, { reconnect: FAST_RECONNECT });
    const waiting = client.call("echo", [1], { waitForReady: true });
    await sleep(50);
    await within(client.close(), 2000, "client.close()");
    await within(rejectsWith(waiting, "UNAVAILABLE", /closed/), 500, "waiting call");
    await rejectsWith(client.call("echo", [2]), "UNAVAILABLE", /closed/);
  });

  it("an abort while waiting for a connection rejects with CANCELLED", async () => {
    const port = await freePort();
    const client = new Client(`127.0.0.1:${port}`, { reconnect: FAST_RECONNECT });
    try {
      const controller = new AbortController();
      const waiting = client.call("echo", [1], { waitForReady: true, signal: controller.signal });
      await sleep(30);
      controller.abort();
      await within(rejectsWith(waiting, "CANCELLED", /waiting for a connection/), 500, "cancelled call");
    } finally {
      await client.close();
    }
  });

  it("leaks no waiters: 200 timed-out calls while down, then the server comes back and all is well", async () => {
    const port = await freePort();
    const client = new Client(`127.0.0.1:${port}`, { reconnect: FAST_RECONNECT });
    let restarted: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      const calls: Array<Promise<unknown>> = [];
      for (let i = 0; i < 200; i++) {
        calls.push(client.call("echo", [i], { timeout: 30 + (i % 5) * 10, waitForReady: i % 2 === 0 }));
      }
      const results = await within(Promise.allSettled(calls), 3000, "200 calls while down");
      for (const result of results) {
        assert.equal(result.status, "rejected");
        assert.ok(["UNAVAILABLE", "DEADLINE_EXCEEDED"].includes((result.reason as { code: string }).code));
      }
      assert.ok(results.some((r) => r.status === "rejected" && (r.reason as { code: string }).code === "DEADLINE_EXCEEDED"));
      restarted = await startServer(port);
      const ok = await within(client.call("echo", ["back"], { waitForReady: true, timeout: 3000 }), 3500, "call after restart");
      assert.equal(ok, "back");
      // Every one of the 200 gave up before the restart: the server saw only this call's connection's calls.
      assert.equal(await client.call("echo", [42]), 42);
    } finally {
      await client.close();
      await restarted?.server.close();
    }
  });

  it("in-flight calls complete when the server closes gracefully; new calls after GOAWAY fail with UNAVAILABLE", async () => {
    const server = new Server();
    const release = deferred();
    const entered = deferred();
    server.register("wait", async () => {
      entered.resolve();
      await release.promise;
      return "finished";
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { reconnect: FAST_RECONNECT });
    try {
      const inflight = client.call("wait", []);
      await within(entered.promise, 2000, "handler start");
      const closing = server.close({ timeout: 5000 });
      await waitFor(() => client.connectionId === undefined, 2000, "client receiving GOAWAY");
      await rejectsWith(client.call("wait", []), "UNAVAILABLE");
      release.resolve();
      assert.equal(await within(inflight, 2000, "in-flight call"), "finished");
      await within(closing, 2000, "server close");
    } finally {
      release.resolve();
      await client.close();
      await server.close();
    }
  });

  it("client.close() racing the server's GOAWAY resolves, and the client stays closed", async () => {
    const server = new Server();
    const release = deferred();
    const entered = deferred();
    server.register("wait", async () => {
      entered.resolve();
      await release.promise;
      return "finished";
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { reconnect: FAST_RECONNECT });
    try {
      const inflight = client.call("wait", []);
      await within(entered.promise, 2000, "handler start");
      const clientClosed = client.close();
      // The server's GOAWAY reaches a client that is already closing.
      const serverClosed = server.close({ timeout: 2000 });
      await sleep(30);
      release.resolve();
      assert.equal(await within(inflight, 2000, "in-flight call"), "finished");
      await within(clientClosed, 2000, "client.close()");
      await within(serverClosed, 2000, "server.close()");
      await rejectsWith(client.call("wait", []), "UNAVAILABLE", /closed/);
      assert.equal(client.connectionId, undefined);
      assert.equal(server.connectionCount, 0);
    } finally {
      release.resolve();
      await client.close();
      await server.close();
    }
  });

  it("a connection reset without GOAWAY rejects pending calls with UNAVAILABLE, then the client reconnects", async () => {
    const { server, port, hanging } = await startServer();
    // A TCP relay whose sockets the test can cut, as a network failure would.
    const relayed: Socket[] = [];
    const relay = createServer((inbound) => {
      const outbound = connect({ host: "127.0.0.1", port });
      relayed.push(inbound, outbound);
      inbound.pipe(outbound).pipe(inbound);
      inbound.on("error", () => outbound.destroy());
      outbound.on("error", () => inbound.destroy());
      inbound.on("close", () => outbound.destroy());
      outbound.on("close", () => inbound.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    const relayPort = (relay.address() as { port: number }).port;
    const client = new Client(`127.0.0.1:${relayPort}`, { reconnect: FAST_RECONNECT });
    try {
      const calls = Array.from({ length: 10 }, () => client.call("hang", []));
      await waitFor(() => hanging() === 10, 2000, "handlers running");
      for (const socket of relayed) socket.resetAndDestroy();
      const results = await within(Promise.allSettled(calls), 2000, "calls after the reset");
      for (const result of results) {
        assert.equal(result.status, "rejected");
        assert.equal((result.reason as { code: string }).code, "UNAVAILABLE");
      }
      // The server notices too, and aborts the handlers.
      await waitFor(() => server.connectionCount === 0, 2000, "server dropping the connection");
      assert.equal(await within(client.call("echo", ["back"], { waitForReady: true }), 2000, "call after reconnect"), "back");
    } finally {
      await client.close();
      for (const socket of relayed) socket.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
      await server.close({ timeout: 100 });
    }
  });

  it("the client's keepalive drops a server that stops answering, failing its calls with UNAVAILABLE", async () => {
    // A fake server: completes the handshake, then swallows everything.
    const sockets: Socket[] = [];
    const fake = createServer((socket) => {
      sockets.push(socket);
      socket.once("data", () => {
        const limits = { maxFrameSize: 1024 * 1024, maxMessageSize: 1024 * 1024, maxConcurrentStreams: 100 };
        socket.write(frame(FrameType.WELCOME, 0, 0, encode({ version: 1, connectionId: "fake", limits })));
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const { port } = fake.address() as { port: number };
    const client = new Client(`127.0.0.1:${port}`, { keepalive: { interval: 20, timeout: 100 }, reconnect: { initialDelay: 1000 } });
    try {
      await client.connect();
      assert.equal(client.connectionId, "fake");
      const call = client.call("anything", []);
      await within(rejectsWith(call, "UNAVAILABLE", /silent/), 2000, "call on a silent server");
      assert.equal(client.connectionId, undefined);
    } finally {
      await client.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });

  it("backs off from a server that completes the handshake and then drops every connection at once", async () => {
    // A fake server: WELCOME, then the connection is cut. The backoff must keep growing, not restart at each WELCOME.
    let accepted = 0;
    const fake = createServer((socket) => {
      accepted++;
      socket.on("error", () => {});
      socket.once("data", () => {
        const limits = { maxFrameSize: 1024 * 1024, maxMessageSize: 1024 * 1024, maxConcurrentStreams: 100 };
        socket.end(frame(FrameType.WELCOME, 0, 0, encode({ version: 1, connectionId: "fake", limits })));
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const { port } = fake.address() as { port: number };
    const client = new Client(`127.0.0.1:${port}`, { reconnect: { initialDelay: 40, multiplier: 2, jitter: 0 } });
    try {
      await client.connect();
      await sleep(1200);
      // Delays 40, 80, 160, 320, 640 ms: about 6 connections in 1.2 s. Restarting at 40 ms each time made about 25.
      assert.ok(accepted <= 8, `${accepted} connections in 1.2 s`);
      assert.ok(accepted >= 3, `${accepted} connections: the client kept retrying`);
    } finally {
      await client.close();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });

  it("client.destroy() rejects in-flight calls with CANCELLED at once and aborts the handlers", async () => {
    const { server, port, hanging } = await startServer();
    const client = new Client(`127.0.0.1:${port}`);
    try {
      const calls = Array.from({ length: 5 }, () => client.call("hang", []));
      await waitFor(() => hanging() === 5, 2000, "handlers running");
      client.destroy();
      for (const call of calls) await within(rejectsWith(call, "CANCELLED", /destroyed/), 500, "destroyed call");
      await rejectsWith(client.call("echo", [1]), "UNAVAILABLE", /closed/);
      await waitFor(() => server.connectionCount === 0, 2000, "server dropping the connection");
      await within(client.close(), 1000, "close after destroy");
    } finally {
      client.destroy();
      await server.close({ timeout: 100 });
    }
  });

  it("a client closing during its handshake just closes, sending no GOAWAY as its handshake", async () => {
    // A fake server that records the first frame it receives and never answers.
    const first = deferred<number>();
    const sockets: Socket[] = [];
    const fake = createServer((socket) => {
      sockets.push(socket);
      socket.once("data", (chunk: Buffer) => first.resolve(chunk[4] as number));
      socket.once("end", () => first.resolve(-1));
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const { port } = fake.address() as { port: number };
    const client = new Client(`127.0.0.1:${port}`);
    try {
      const call = rejectsWith(client.call("x", [], { waitForReady: true }), "UNAVAILABLE", /clos/);
      await within(client.close(), 2000, "close during the handshake");
      await call;
      // Nothing at all, or a HELLO; never a GOAWAY in place of the handshake.
      const type = await within(first.promise, 2000, "first frame or end");
      assert.ok(type === -1 || type === FrameType.HELLO, `first frame type ${type}`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });
});

describe("calls racing a server close", () => {
  it("calls the server had received complete; calls racing its GOAWAY fail with UNAVAILABLE; none hangs", async () => {
    const server = new Server();
    const release = deferred();
    let entered = 0;
    server.register("tick", async (i: number) => {
      entered++;
      await release.promise;
      return i;
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { reconnect: FAST_RECONNECT });
    try {
      await client.connect();
      const calls: Array<Promise<unknown>> = [];
      for (let i = 0; i < 100; i++) calls.push(client.call("tick", [i]));
      await waitFor(() => entered === 100, 2000, "100 handlers running");
      const closing = server.close({ timeout: 2000 });
      // Sent on the old connection before its GOAWAY arrives, or refused after.
      for (let i = 100; i < 200; i++) calls.push(client.call("tick", [i]));
      setTimeout(() => release.resolve(), 20);
      const results = await within(Promise.allSettled(calls), 3000, "racing calls");
      for (const [i, result] of results.entries()) {
        if (i < 100) assert.deepEqual(result, { status: "fulfilled", value: i });
        else {
          assert.equal(result.status, "rejected");
          assert.equal((result.reason as { code: string }).code, "UNAVAILABLE", (result.reason as Error).message);
        }
      }
      assert.equal(entered, 100, "no call after the GOAWAY reached a handler");
      await within(closing, 3000, "server close");
    } finally {
      release.resolve();
      await client.close();
      await server.close();
    }
  });
});

describe("long timeouts", () => {
  it("a timeout beyond setTimeout's 24.8-day range does not expire at once", async () => {
    const { server, port } = await startServer();
    const client = new Client(`127.0.0.1:${port}`, { timeout: 3_000_000_000 });
    try {
      assert.equal(await within(client.call("echo", ["first"]), 2000, "first call"), "first");
      assert.equal(await client.call("echo", ["max"], { timeout: 0xffff_ffff }), "max");
      assert.equal(await client.call("echo", ["int32"], { timeout: 2 ** 31 }), "int32");
    } finally {
      await client.close();
      await server.close({ timeout: 100 });
    }
  });
});

describe("process lifetime", () => {
  it("a pending waitForReady call keeps the process alive through backoff until the server is up", async () => {
    const port = await freePort();
    const clientModule = new URL("../../src/client/index.js", import.meta.url).href;
    // The child has nothing but its call: if the backoff timer does not hold
    // the process open, it exits with the call still pending.
    const script = `
      const { Client } = await import(${JSON.stringify(clientModule)});
      const client = new Client("127.0.0.1:${port}", { reconnect: { initialDelay: 50, maxDelay: 100 } });
      const value = await client.call("echo", ["from child"], { waitForReady: true });
      console.log("result:" + value);
      await client.close();
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    let server: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      await sleep(400);
      server = await startServer(port);
      const code = await within(exited, 5000, "child exit");
      assert.match(output, /result:from child/);
      assert.equal(code, 0);
    } finally {
      child.kill();
      await server?.server.close({ timeout: 100 });
    }
  });
});
