import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { describe, it } from "node:test";
import { decode } from "@msgpack/msgpack";
import { FrameType } from "../../src/protocol/frame.js";
import {
  type ConnectionMiddleware,
  type ConnectionRefusedMessage,
  type IncomingConnection,
  ErrorCode,
  RpcError,
  Server,
  type ServerOptions,
  connectionRefusedChannel,
} from "../../src/server/index.js";
import { callFrame, deferred, helloFrame, rejectsWith, sleep, waitFor, within } from "../integration/helpers.js";
import { type LoopbackPeer, Peers, portOf } from "./loopback-peer.js";

/** A server on 127.0.0.1 with `echo`, and its port. */
async function serve(options: ServerOptions = {}): Promise<{ server: Server; port: number; address: string }> {
  const server = new Server({ keepalive: false, ...options });
  server.register("echo", (value: unknown) => value);
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, port: portOf(address), address };
}

async function expectEcho(peer: LoopbackPeer, streamId: number, value: string): Promise<void> {
  peer.write(callFrame(streamId, "echo", [value]));
  const result = await peer.next(FrameType.RESULT);
  assert.equal(result.streamId, streamId);
  assert.equal(decode(result.payload), value);
}

describe("connection middleware chain", () => {
  it("runs in order, options first, async ones included, and exposes the connection", async () => {
    const order: string[] = [];
    const seen: Array<Pick<IncomingConnection, "peer" | "localAddress" | "localPort" | "listener" | "admitted" | "closed">> = [];
    const { server, port, address } = await serve({
      connectionMiddleware: [
        (_conn, next) => {
          order.push("a");
          return next();
        },
      ],
    });
    server
      .useConnection(async (_conn, next) => {
        await new Promise((resolve) => setImmediate(resolve));
        order.push("b");
        await next();
        order.push("b after");
      })
      .useConnection((conn, next) => {
        order.push("c");
        const { peer, localAddress, localPort, listener, admitted, closed } = conn;
        seen.push({ peer, localAddress, localPort, listener, admitted, closed });
        return next();
      });
    const peers = new Peers();
    try {
      const peer = await peers.admitted({ port, from: "127.0.0.2" });
      assert.deepEqual(order, ["a", "b", "c", "b after"]);
      const [conn] = seen as [(typeof seen)[number]];
      assert.equal(conn.peer.address, "127.0.0.2");
      assert.equal(conn.peer.family, "IPv4");
      assert.equal(conn.localAddress, "127.0.0.1");
      assert.equal(conn.localPort, port);
      assert.equal(conn.listener, address);
      assert.equal(conn.admitted, false, "not admitted while the chain runs");
      assert.equal(conn.closed, false);
      await expectEcho(peer, 1, "served");
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("refuses with a thrown RpcError's code, message and data, and keeps serving others", async () => {
    const refusals: ConnectionRefusedMessage[] = [];
    const onRefused = (message: unknown): void => {
      refusals.push(message as ConnectionRefusedMessage);
    };
    diagnostics.subscribe("rapt:server:connection-refused", onRefused);
    const { server, port, address } = await serve();
    server.useConnection(async (conn, next) => {
      if (conn.peer.address === "127.0.0.2") throw new RpcError(ErrorCode.UNAUTHENTICATED, "not from there", { hint: 1 });
      await next();
    });
    const peers = new Peers();
    try {
      const refused = await peers.refused({ port, from: "127.0.0.2" }, "UNAUTHENTICATED", /^not from there$/);
      assert.deepEqual(refused.data, { hint: 1 });
      const ok = await peers.admitted({ port, from: "127.0.0.1" });
      await expectEcho(ok, 1, "still serving");
      await peers.refused({ port, from: "127.0.0.2" }, "UNAUTHENTICATED");
      await waitFor(() => server.connectionCount === 1, 2000, "refused connections forgotten");
      assert.equal(refusals.length, 2);
      const [first] = refusals as [ConnectionRefusedMessage];
      assert.equal(first.code, "UNAUTHENTICATED");
      assert.equal(first.message, "not from there");
      assert.equal(first.peer.address, "127.0.0.2");
      assert.equal(first.listener, address);
      assert.ok(first.error instanceof RpcError);
      assert.equal(connectionRefusedChannel.name, "rapt:server:connection-refused");
    } finally {
      diagnostics.unsubscribe("rapt:server:connection-refused", onRefused);
      peers.destroyAll();
      await server.close();
    }
  });

  it("refuses with INTERNAL for anything but an RpcError, sync or async, and never crashes", async () => {
    const peers = new Peers();
    const throwers: ConnectionMiddleware[] = [
      () => {
        throw new Error("secret detail");
      },
      async () => {
        await sleep(1);
        throw new TypeError("secret detail");
      },
      () => Promise.reject("secret detail"),
    ];
    for (const exposeErrors of [false, true]) {
      for (const thrower of throwers) {
        const { server, port } = await serve({ exposeErrors, connectionMiddleware: [thrower] });
        try {
          const { message } = await peers.refused({ port }, "INTERNAL");
          assert.equal(message, exposeErrors ? "secret detail" : "internal error");
        } finally {
          await server.close();
        }
      }
    }
    // An RpcError whose data MessagePack cannot encode still reaches the client, without the data.
    const { server, port } = await serve({
      connectionMiddleware: [
        () => {
          throw new RpcError(ErrorCode.PERMISSION_DENIED, "no", { fn: () => 1 });
        },
      ],
    });
    try {
      const { message } = await peers.refused({ port }, "PERMISSION_DENIED");
      assert.equal(message, "no");
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("reports the outermost error: a middleware may replace a later one's refusal", async () => {
    const { server, port } = await serve({
      connectionMiddleware: [
        async (_conn, next) => {
          try {
            await next();
          } catch (error) {
            throw new RpcError(ErrorCode.UNAVAILABLE, `try later (${(error as RpcError).code})`);
          }
        },
        () => {
          throw new RpcError(ErrorCode.RESOURCE_EXHAUSTED, "full");
        },
      ],
    });
    const peers = new Peers();
    try {
      await peers.refused({ port }, "UNAVAILABLE", /^try later \(RESOURCE_EXHAUSTED\)$/);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("treats next() called twice as an error, even when the middleware swallows it", async () => {
    const secondCall = deferred<unknown>();
    const { server, port } = await serve({
      connectionMiddleware: [
        async (_conn, next) => {
          await next();
          await next().catch((error: unknown) => secondCall.resolve(error));
        },
      ],
    });
    const peers = new Peers();
    try {
      await peers.refused({ port }, "INTERNAL", /connection middleware #1 called next\(\) more than once/);
      const error = await within(secondCall.promise, 2000, "second next()");
      assert.ok(error instanceof RpcError && error.code === "INTERNAL");
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("refuses a connection when a middleware returns without calling next()", async () => {
    const { server, port } = await serve({ connectionMiddleware: [() => {}] });
    const peers = new Peers();
    try {
      await peers.refused({ port }, "PERMISSION_DENIED", /^connection refused$/);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("conn.reject refuses with its code and message, even if its throw is caught", async () => {
    const { server, port } = await serve({
      connectionMiddleware: [
        async (conn, next) => {
          try {
            conn.reject(ErrorCode.RESOURCE_EXHAUSTED, "busy, come back later", { retryAfter: 5 });
          } catch {
            // The refusal stands.
          }
          await next();
        },
      ],
    });
    const peers = new Peers();
    try {
      const { data } = await peers.refused({ port }, "RESOURCE_EXHAUSTED", /^busy, come back later$/);
      assert.deepEqual(data, { retryAfter: 5 });
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("waits for the whole chain: a next() not returned does not admit the connection early", async () => {
    const gate = deferred();
    const { server, port } = await serve({
      connectionMiddleware: [
        (_conn, next) => {
          void next();
        },
        async () => {
          await gate.promise;
          throw new RpcError(ErrorCode.PERMISSION_DENIED, "decided later");
        },
      ],
    });
    const peers = new Peers();
    try {
      const attempt = peers.refused({ port }, "PERMISSION_DENIED", /^decided later$/);
      await sleep(20);
      gate.resolve();
      await within(attempt, 3000, "refusal");
    } finally {
      gate.resolve();
      peers.destroyAll();
      await server.close();
    }
  });

  it("holds a HELLO (and a CALL right behind it) until the chain admits the connection", async () => {
    const gate = deferred();
    const entered = deferred();
    let handled = 0;
    const { server, port } = await serve({
      connectionMiddleware: [
        async (_conn, next) => {
          entered.resolve();
          await gate.promise;
          await next();
        },
      ],
    });
    server.register("count", () => ++handled);
    const peers = new Peers();
    try {
      const peer = await peers.connect({ port });
      peer.write(Buffer.concat([helloFrame(), callFrame(1, "count", [])]));
      await within(entered.promise, 2000, "middleware start");
      await sleep(50);
      assert.equal(peer.frames.length, 0, "no WELCOME before admission");
      assert.equal(handled, 0, "no call dispatched before admission");
      gate.resolve();
      assert.deepEqual(await peer.answer(), { admitted: true });
      const result = await peer.next(FrameType.RESULT);
      assert.equal(result.streamId, 1);
      assert.equal(decode(result.payload), 1);
    } finally {
      gate.resolve();
      peers.destroyAll();
      await server.close();
    }
  });

  it("closes at the handshake timeout a connection whose middleware never calls next()", async () => {
    const closed = deferred<RpcError>();
    let signal: AbortSignal | undefined;
    const { server, port } = await serve({
      handshakeTimeout: 300,
      connectionMiddleware: [
        (conn) => {
          conn.onClose((reason) => closed.resolve(reason));
          signal = conn.signal;
          return new Promise(() => {});
        },
      ],
    });
    const peers = new Peers();
    try {
      const { peer, outcome } = await peers.hello({ port });
      assert.equal(outcome.admitted, false);
      if (outcome.admitted) return;
      assert.equal(outcome.code, "PROTOCOL_ERROR");
      assert.match(outcome.message, /handshake not completed within 300 ms/);
      await peer.expectClosed();
      const reason = await within(closed.promise, 2000, "close listener");
      assert.match(reason.message, /handshake not completed/);
      assert.equal(signal?.aborted, true);
      assert.equal(signal?.reason, reason);
      await waitFor(() => server.connectionCount === 0, 2000, "connection forgotten");
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("after the connection closed, next() rejects with the close reason and runs nothing further", async () => {
    const outcome = deferred<unknown>();
    let laterRan = false;
    let admittedAfter: boolean | undefined;
    const { server, port } = await serve({
      handshakeTimeout: 200,
      connectionMiddleware: [
        (conn, next) => {
          conn.onClose(() => {
            next().then(
              () => outcome.resolve("resolved"),
              (error: unknown) => {
                admittedAfter = conn.admitted;
                outcome.resolve(error);
              },
            );
          });
          return new Promise<void>((resolve) => conn.onClose(() => resolve()));
        },
        (_conn, next) => {
          laterRan = true;
          return next();
        },
      ],
    });
    const peers = new Peers();
    try {
      const { peer, outcome: answer } = await peers.hello({ port });
      assert.equal(answer.admitted, false);
      await peer.expectClosed();
      const error = await within(outcome.promise, 2000, "late next()");
      assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
      assert.match(error.message, /handshake not completed within 200 ms/);
      assert.equal(laterRan, false);
      assert.equal(admittedAfter, false);
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("refuses a connection still in its chain with UNAVAILABLE when the server closes", async () => {
    const entered = deferred();
    const { server, port } = await serve({
      connectionMiddleware: [
        () => {
          entered.resolve();
          return new Promise(() => {});
        },
      ],
    });
    const peers = new Peers();
    try {
      const peer = await peers.connect({ port });
      peer.write(helloFrame());
      await within(entered.promise, 2000, "middleware start");
      await within(server.close({ timeout: 1000 }), 3000, "close");
      const outcome = await peer.answer();
      assert.equal(outcome.admitted, false);
      if (!outcome.admitted) assert.equal(outcome.code, "UNAVAILABLE");
      await peer.expectClosed();
    } finally {
      peers.destroyAll();
      await server.close();
    }
  });

  it("refuses to add something that is not a function", async () => {
    const server = new Server();
    await rejectsWith(
      (async () => server.useConnection("nope" as unknown as ConnectionMiddleware))(),
      "INVALID_ARGUMENT",
      /must be a function/,
    );
  });
});

describe("handshake timeout (slowloris)", () => {
  for (const withMiddleware of [false, true]) {
    it(`closes a peer that sends its HELLO one byte per 100 ms${withMiddleware ? " (with connection middleware)" : ""}`, async () => {
      const { server, port } = await serve({
        handshakeTimeout: 500,
        ...(withMiddleware ? { connectionMiddleware: [(_conn: IncomingConnection, next: () => Promise<void>) => next()] } : {}),
      });
      const peers = new Peers();
      try {
        const peer = await peers.connect({ port });
        const hello = helloFrame();
        let sent = 0;
        const dripping = (async () => {
          for (; sent < hello.length && !peer.isClosed; sent++) {
            peer.write(hello.subarray(sent, sent + 1));
            await sleep(100);
          }
        })();
        const outcome = await peer.answer(8000);
        assert.equal(outcome.admitted, false);
        if (!outcome.admitted) {
          assert.equal(outcome.code, "PROTOCOL_ERROR");
          assert.match(outcome.message, /handshake not completed within 500 ms/);
        }
        await peer.expectClosed();
        assert.ok(sent < hello.length, `closed before the HELLO was complete (${sent} of ${hello.length} bytes)`);
        await within(dripping, 2000, "drip loop ending");
        await waitFor(() => server.connectionCount === 0, 2000, "connection forgotten");
      } finally {
        peers.destroyAll();
        await server.close();
      }
    });
  }
});
