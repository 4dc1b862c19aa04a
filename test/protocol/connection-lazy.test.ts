import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { Connection, type ConnectionOwner, DEFAULT_LIMITS, type StreamReceiver } from "../../src/protocol/connection.js";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
import type { Limits } from "../../src/protocol/wire-messages.js";
import { RpcError } from "../../src/protocol/rpc-error.js";
import { SocketPairs, frame, waitFor } from "../integration/helpers.js";

/**
 * What a Connection makes on first use instead of at construction (stream
 * table, reassembly) and what connections share (peer limits): each must
 * behave as if every connection had its own from the start.
 */
describe("Connection: state made on first use, and shared peer limits", () => {
  let pairs: SocketPairs;

  before(async () => {
    pairs = await SocketPairs.start();
  });

  after(() => pairs.close());

  const socketPair = () => pairs.pair();

  /** An owner recording what the connection hands it. */
  function recorder(): ConnectionOwner & { calls: Array<[number, Buffer]>; closed: RpcError[] } {
    return {
      calls: [],
      closed: [],
      onHandshake() {},
      onCall(streamId, payload) {
        this.calls.push([streamId, Buffer.from(payload)]);
      },
      onGoaway() {},
      onClose(reason) {
        this.closed.push(reason);
      },
    };
  }

  function serverConnection(socket: Socket, owner: ConnectionOwner): Connection {
    return new Connection(socket, owner, { role: "server", limits: DEFAULT_LIMITS, keepalive: false, handshakeTimeout: 5000 });
  }

  function receiver(): StreamReceiver & { resets: RpcError[] } {
    return {
      resets: [],
      onMessage() {},
      onReset(error) {
        this.resets.push(error);
      },
    };
  }

  it("keeps each connection's streams its own, from the first one on", async () => {
    const a = serverConnection((await socketPair()).far, recorder());
    const b = serverConnection((await socketPair()).far, recorder());
    a.open({ ...DEFAULT_LIMITS });
    b.open({ ...DEFAULT_LIMITS });
    assert.deepEqual([a.streamCount, b.streamCount], [0, 0]);
    const first = receiver();
    a.addStream(2, first);
    a.addStream(4, receiver());
    assert.deepEqual([a.streamCount, b.streamCount], [2, 0]);
    b.addStream(2, receiver());
    assert.deepEqual([a.streamCount, b.streamCount], [2, 1]);
    a.removeStream(4);
    assert.deepEqual([a.streamCount, b.streamCount], [1, 1]);
    a.close(new RpcError("CANCELLED", "test over"));
    assert.equal(first.resets.length, 1);
    assert.deepEqual([a.streamCount, b.streamCount], [0, 1]);
    // A connection made after all that starts empty too.
    const c = serverConnection((await socketPair()).far, recorder());
    assert.equal(c.streamCount, 0);
    b.close(new RpcError("CANCELLED", "test over"));
    c.close(new RpcError("CANCELLED", "test over"));
  });

  it("reassembles the first fragmented message of a connection that has been idle since its handshake", async () => {
    const { near, far } = await socketPair();
    const owner = recorder();
    const connection = serverConnection(far, owner);
    connection.open({ ...DEFAULT_LIMITS });
    // Only stream-0 traffic so far, as on an idle connection.
    near.write(frame(FrameType.PING, 0, 0, Buffer.alloc(8)));
    near.write(frame(FrameType.CALL, FrameFlag.FOLLOWS, 1, Buffer.from("hello, ")));
    near.write(frame(FrameType.CALL, 0, 1, Buffer.from("world")));
    await waitFor(() => owner.calls.length === 1, 2000, "the reassembled CALL");
    assert.equal(owner.calls[0]?.[0], 1);
    assert.equal(owner.calls[0]?.[1].toString(), "hello, world");
    connection.close(new RpcError("CANCELLED", "test over"));
    assert.equal(owner.closed.length, 1);
  });

  it("ends a draining connection that never opened a stream or reassembled anything", async () => {
    const { near, far } = await socketPair();
    const owner = recorder();
    const connection = serverConnection(far, owner);
    connection.open({ ...DEFAULT_LIMITS });
    const nearClosed = new Promise<void>((resolve) => near.once("close", () => resolve()));
    near.resume();
    connection.goaway(new RpcError("UNAVAILABLE", "shutting down"));
    await waitFor(() => owner.closed.length === 1, 2000, "the drained connection closing");
    near.end();
    await nearClosed;
  });

  it("shares one frozen peer-limits object between connections whose peers announced the same limits", async () => {
    const announced: Limits = { maxFrameSize: 65536, maxMessageSize: 1 << 20, maxConcurrentStreams: 7, streamWindow: 32 };
    const a = serverConnection((await socketPair()).far, recorder());
    const b = serverConnection((await socketPair()).far, recorder());
    const c = serverConnection((await socketPair()).far, recorder());
    a.open({ ...announced });
    b.open({ ...announced });
    c.open({ ...announced, streamWindow: 16 });
    assert.deepEqual(a.peerLimits, announced);
    assert.equal(a.peerLimits, b.peerLimits);
    assert.ok(Object.isFrozen(a.peerLimits));
    assert.deepEqual(c.peerLimits, { ...announced, streamWindow: 16 });
    assert.notEqual(c.peerLimits, a.peerLimits);
    assert.equal(a.peerStreamWindow, 32);
    assert.equal(c.peerStreamWindow, 16);
    // Without a stream window, the default applies. A newer peer's extra limits are kept (and shared);
    // a set with anything but numbers is kept as the very object that came.
    const d = serverConnection((await socketPair()).far, recorder());
    const e = serverConnection((await socketPair()).far, recorder());
    const f = serverConnection((await socketPair()).far, recorder());
    d.open({ maxFrameSize: 65536, maxMessageSize: 1 << 20, maxConcurrentStreams: 7 });
    e.open({ ...announced, futureLimit: 1 } as Limits);
    const odd = { ...announced, note: "x" } as Limits;
    f.open(odd);
    assert.deepEqual(d.peerLimits, { maxFrameSize: 65536, maxMessageSize: 1 << 20, maxConcurrentStreams: 7 });
    assert.equal(d.peerStreamWindow, 64);
    assert.deepEqual(e.peerLimits, { ...announced, futureLimit: 1 });
    assert.ok(Object.isFrozen(e.peerLimits));
    assert.equal(f.peerLimits, odd);
    // The peer's maxMessageSize still bounds what this side sends.
    assert.throws(() => a.send(FrameType.RESULT, 2, Buffer.alloc((1 << 20) + 1)), { code: "RESOURCE_EXHAUSTED" });
    for (const connection of [a, b, c, d, e, f]) connection.close(new RpcError("CANCELLED", "test over"));
  });
});
