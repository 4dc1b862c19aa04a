import assert from "node:assert/strict";
import { type Socket, createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { Client } from "../../src/client/index.js";
import { FRAME_HEADER_SIZE, FrameFlag, FrameType, writeFrameHeader } from "../../src/protocol/frame.js";
import { type CallContext, Server } from "../../src/server/index.js";
import { RawPeer, callFrame, callPayload, frame, helloFrame, rejectsWith, sleep, waitFor, within } from "../integration/helpers.js";

/**
 * Hostile and broken peers over real sockets. Throughout, a normal client on
 * its own connection must keep working: one bad connection never takes the
 * server down.
 */
describe("bad input from raw sockets", () => {
  const server = new Server({ handshakeTimeout: 150, limits: { maxMessageSize: 64 * 1024 } });
  let port: number;
  let client: Client;
  let echoes = 0;
  const peers: RawPeer[] = [];

  async function raw(open = true): Promise<RawPeer> {
    const peer = open ? await RawPeer.open(port) : await RawPeer.connect(port);
    peers.push(peer);
    return peer;
  }

  /** The bystander client still gets answers on its connection, which it never lost. */
  async function stillServing(): Promise<void> {
    const id = client.connectionId;
    assert.equal(await client.call("echo", ["alive"]), "alive");
    assert.equal(client.connectionId, id);
  }

  before(async () => {
    server.register("echo", (x: unknown) => {
      echoes++;
      return x;
    });
    server.register("len", (s: string) => s.length);
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    port = Number(address.split(":").pop());
    client = new Client(address);
    await client.connect();
  });

  after(async () => {
    for (const peer of peers) peer.destroy();
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("answers garbage with ERROR PROTOCOL_ERROR on stream 0 and closes", async () => {
    const peer = await raw(false);
    peer.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /unknown frame type/);
    await peer.expectClosed();
    await stillServing();
  });

  it("refuses a HELLO of the wrong version with an ERROR naming the supported version", async () => {
    const peer = await raw(false);
    peer.write(helloFrame(99));
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /unsupported protocol version 99.*supports version 1/);
    assert.deepEqual(error.data, { supported: [1] });
    await peer.expectClosed();
    await stillServing();
  });

  it("refuses a malformed HELLO and a first frame that is not HELLO", async () => {
    const a = await raw(false);
    a.write(frame(FrameType.HELLO, 0, 0, encode({ version: 1, limits: { maxFrameSize: "big" } })));
    const e1 = await a.nextError();
    assert.equal(e1.code, "PROTOCOL_ERROR");
    assert.match(e1.message, /malformed HELLO/);
    await a.expectClosed();
    const b = await raw(false);
    b.write(callFrame(1, "echo", [1]));
    const e2 = await b.nextError();
    assert.equal(e2.code, "PROTOCOL_ERROR");
    assert.match(e2.message, /handshake frame on stream 0|expected HELLO/);
    await b.expectClosed();
    await stillServing();
  });

  it("refuses an oversized frame from its header alone, without waiting for the body", async () => {
    const peer = await raw();
    const header = Buffer.alloc(FRAME_HEADER_SIZE);
    writeFrameHeader(header, 0, 0x7fff_ffff, FrameType.CALL, 0, 1);
    peer.write(header);
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /exceeds the maximum frame size/);
    await peer.expectClosed();
    await stillServing();
  });

  it("refuses an oversized frame during the handshake too", async () => {
    const peer = await raw(false);
    const header = Buffer.alloc(FRAME_HEADER_SIZE);
    writeFrameHeader(header, 0, 10 * 1024 * 1024, FrameType.HELLO, 0, 0);
    peer.write(header);
    const error = await peer.nextError();
    assert.equal(error.code, "PROTOCOL_ERROR");
    await peer.expectClosed();
  });

  it("fails the connection on a frame for a stream never opened", async () => {
    const peer = await raw();
    peer.write(frame(FrameType.CANCEL, 0, 99));
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /stream 99, which was never opened/);
    await peer.expectClosed();
    await stillServing();
  });

  it("fails the connection on a frame for a server stream id never opened", async () => {
    const peer = await raw();
    peer.write(frame(FrameType.RESULT, 0, 2, encode(1)));
    const error = await peer.nextError();
    assert.equal(error.code, "PROTOCOL_ERROR");
    await peer.expectClosed();
  });

  it("ignores a late frame for a closed stream; the connection stays usable", async () => {
    const peer = await raw();
    peer.write(callFrame(1, "echo", ["one"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 1, value: "one" });
    peer.write(frame(FrameType.CANCEL, 0, 1));
    peer.write(frame(FrameType.END, 0, 1));
    peer.write(callFrame(3, "echo", ["three"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 3, value: "three" });
    assert.equal(peer.isClosed, false);
  });

  it("fails the connection on a CALL with an even stream id", async () => {
    const peer = await raw();
    peer.write(callFrame(2, "echo", [1]));
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /client opens odd/);
    await peer.expectClosed();
  });

  it("fails the connection on stream ids that do not increase", async () => {
    const peer = await raw();
    peer.write(callFrame(5, "echo", [5]));
    assert.equal((await peer.nextResult()).streamId, 5);
    peer.write(callFrame(3, "echo", [3]));
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /must increase/);
    await peer.expectClosed();
    // Reusing an id is not increasing either.
    const again = await raw();
    again.write(callFrame(1, "echo", [1]));
    await again.nextResult();
    again.write(callFrame(1, "echo", [1]));
    assert.equal((await again.nextError()).code, "PROTOCOL_ERROR");
    await again.expectClosed();
    await stillServing();
  });

  it("answers a malformed CALL head with ERROR on that stream only; the connection keeps working", async () => {
    const peer = await raw();
    const before = echoes;
    peer.write(frame(FrameType.CALL, 0, 1, callPayload([42, "not a timeout"], [1])));
    const e1 = await peer.nextError();
    assert.equal(e1.streamId, 1);
    assert.equal(e1.code, "PROTOCOL_ERROR");
    assert.match(e1.message, /malformed CALL head/);
    peer.write(frame(FrameType.CALL, 0, 3, callPayload(["echo", -5], [1])));
    assert.equal((await peer.nextError()).streamId, 3);
    peer.write(frame(FrameType.CALL, 0, 5, callPayload(["echo", null, { key: 7 }], [1])));
    assert.equal((await peer.nextError()).streamId, 5);
    // A head length that overruns the payload; a payload too short for its length.
    const overrun = Buffer.alloc(8);
    overrun.writeUInt32BE(1000, 0);
    peer.write(frame(FrameType.CALL, 0, 7, overrun));
    const e4 = await peer.nextError();
    assert.equal(e4.streamId, 7);
    assert.match(e4.message, /overruns/);
    peer.write(frame(FrameType.CALL, 0, 9, Buffer.from([0, 1])));
    assert.equal((await peer.nextError()).streamId, 9);
    // Invalid MessagePack in the head.
    const badMsgpack = Buffer.from([0, 0, 0, 1, 0xc1]);
    peer.write(frame(FrameType.CALL, 0, 11, badMsgpack));
    assert.equal((await peer.nextError()).streamId, 11);
    peer.write(callFrame(13, "echo", ["fine"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 13, value: "fine" });
    assert.equal(echoes, before + 1, "no malformed call reached the handler");
    assert.equal(peer.isClosed, false);
  });

  it("answers a CALL whose args are not an array with PROTOCOL_ERROR on that stream", async () => {
    const peer = await raw();
    const before = echoes;
    peer.write(frame(FrameType.CALL, 0, 1, callPayload(["echo"], { a: 1 })));
    const error = await peer.nextError();
    assert.equal(error.streamId, 1);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /must be a MessagePack array/);
    peer.write(frame(FrameType.CALL, 0, 3, callPayload(["echo"], "str")));
    assert.equal((await peer.nextError()).streamId, 3);
    peer.write(callFrame(5, "echo", ["ok"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 5, value: "ok" });
    assert.equal(echoes, before + 1);
  });

  it("closes a connection that sends nothing within handshakeTimeout", async () => {
    const peer = await raw(false);
    await waitFor(() => server.connectionCount >= 2, 1000, "connection accepted");
    const error = await peer.nextError(2000);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /handshake not completed within 150 ms/);
    await peer.expectClosed();
    await stillServing();
  });

  it("refuses a message over maxMessageSize with RESOURCE_EXHAUSTED for that call only", async () => {
    const big = "x".repeat(200 * 1024);
    const results = await Promise.allSettled([
      client.call("len", ["small"]),
      client.call("len", [big]),
      client.call("len", ["also small"]),
    ]);
    assert.deepEqual(results[0], { status: "fulfilled", value: 5 });
    assert.equal(results[1].status, "rejected");
    const error = (results[1] as PromiseRejectedResult).reason as { code: string; message: string };
    assert.equal(error.code, "RESOURCE_EXHAUSTED");
    assert.match(error.message, /maximum message size of 65536 bytes/);
    assert.deepEqual(results[2], { status: "fulfilled", value: 10 });
    await stillServing();
  });

  it("the server enforces maxMessageSize on a fragmented CALL and keeps the connection", async () => {
    const peer = await raw();
    const payload = callPayload(["len"], ["y".repeat(100 * 1024)]);
    const chunk = 16 * 1024;
    for (let offset = 0; offset < payload.length; offset += chunk) {
      const last = offset + chunk >= payload.length;
      peer.write(frame(FrameType.CALL, last ? 0 : FrameFlag.FOLLOWS, 1, payload.subarray(offset, offset + chunk)));
    }
    const error = await peer.nextError();
    assert.equal(error.streamId, 1);
    assert.equal(error.code, "RESOURCE_EXHAUSTED");
    peer.write(callFrame(3, "len", ["abc"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 3, value: 3 });
  });

  it("fragments that arrive split over socket reads (taken as views of the reads) are assembled and checked like whole ones", async () => {
    const peer = await raw();
    /** Writes a frame in two writes with a pause between, so the server reads it as two chunks. */
    const split = async (bytes: Buffer): Promise<void> => {
      const cut = bytes.length >> 1;
      peer.write(bytes.subarray(0, cut));
      await sleep(20);
      peer.write(bytes.subarray(cut));
    };
    const send = async (streamId: number, payload: Buffer, step: number): Promise<void> => {
      for (let offset = 0; offset < payload.length; offset += step) {
        const last = offset + step >= payload.length;
        await split(frame(FrameType.CALL, last ? 0 : FrameFlag.FOLLOWS, streamId, payload.subarray(offset, offset + step)));
      }
    };
    await send(1, callPayload(["len"], ["q".repeat(40 * 1024)]), 10 * 1024);
    assert.deepEqual(await peer.nextResult(), { streamId: 1, value: 40 * 1024 });
    // Past maxMessageSize: that call fails, the connection stays.
    await send(3, callPayload(["len"], ["r".repeat(100 * 1024)]), 20 * 1024);
    const error = await peer.nextError();
    assert.deepEqual([error.streamId, error.code], [3, "RESOURCE_EXHAUSTED"]);
    peer.write(callFrame(5, "len", ["abc"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 5, value: 3 });
    // A split fragment on stream 0 is refused as a whole one is.
    await split(frame(FrameType.PING, FrameFlag.FOLLOWS, 0, Buffer.alloc(4000)));
    const refused = await peer.nextError();
    assert.deepEqual([refused.streamId, refused.code], [0, "PROTOCOL_ERROR"]);
    await peer.expectClosed();
    await stillServing();
  });

  it("fails the connection on a connection-level frame type sent on a call stream", async () => {
    const peer = await raw();
    peer.write(callFrame(1, "echo", ["x"]));
    await peer.nextResult();
    peer.write(frame(FrameType.PING, 0, 1, Buffer.alloc(8)));
    const error = await peer.nextError();
    assert.equal(error.streamId, 0);
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /PING frame on stream 1: it is only allowed on stream 0/);
    await peer.expectClosed();
    await stillServing();
  });

  it("CANCEL abandons a CALL still arriving in fragments; its bytes are released", async () => {
    const peer = await raw();
    const before = echoes;
    // 40 KiB of a CALL whose last fragment never comes, then CANCEL, many times:
    // with the partial CALLs kept, the 128 KiB reassembly limit would be hit.
    for (let id = 1; id <= 21; id += 2) {
      const payload = callPayload(["echo"], ["z".repeat(40 * 1024)]);
      peer.write(frame(FrameType.CALL, FrameFlag.FOLLOWS, id, payload.subarray(0, 40 * 1024)));
      peer.write(frame(FrameType.CANCEL, 0, id));
    }
    peer.write(callFrame(23, "echo", ["after"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 23, value: "after" });
    assert.equal(echoes, before + 1, "no abandoned CALL ran");
    assert.equal(peer.isClosed, false);
  });

  it("fails the connection when another frame type interrupts a fragmented CALL", async () => {
    const peer = await raw();
    const payload = callPayload(["echo"], ["z".repeat(1000)]);
    peer.write(frame(FrameType.CALL, FrameFlag.FOLLOWS, 1, payload.subarray(0, 500)));
    peer.write(frame(FrameType.ITEM, 0, 1, encode(1)));
    const error = await peer.nextError();
    assert.equal(error.code, "PROTOCOL_ERROR");
    assert.match(error.message, /ITEM frame on stream 1 interrupts a fragmented CALL message/);
    await peer.expectClosed();
  });

  it("concurrent large calls past the reassembly limit fail one by one, not the connection", async () => {
    // maxMessageSize 64 KiB: incomplete messages may hold 128 KiB together.
    const peer = await raw();
    const ids = [1, 3, 5];
    const payloads = ids.map(() => callPayload(["len"], ["w".repeat(60 * 1024)]));
    // Interleave: the first half of each, then the second half of each.
    const half = 50 * 1024;
    for (const [i, id] of ids.entries())
      peer.write(frame(FrameType.CALL, FrameFlag.FOLLOWS, id, (payloads[i] as Buffer).subarray(0, half)));
    for (const [i, id] of ids.entries()) peer.write(frame(FrameType.CALL, 0, id, (payloads[i] as Buffer).subarray(half)));
    const answers = new Map<number, string>();
    for (let i = 0; i < ids.length; i++) {
      const f = await peer.next();
      answers.set(f.streamId, f.type === FrameType.RESULT ? "result" : (decode(f.payload) as [string])[0]);
    }
    assert.ok([...answers.values()].includes("RESOURCE_EXHAUSTED"), JSON.stringify([...answers]));
    assert.ok([...answers.values()].includes("result"), JSON.stringify([...answers]));
    peer.write(callFrame(7, "len", ["abc"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 7, value: 3 });
    assert.equal(peer.isClosed, false);
  });

  it("the server enforces maxMessageSize on a single unfragmented frame (frames may be larger than messages)", async () => {
    const peer = await raw();
    const before = echoes;
    peer.write(frame(FrameType.CALL, 0, 1, callPayload(["echo"], ["w".repeat(100 * 1024)])));
    const error = await peer.nextError();
    assert.equal(error.streamId, 1);
    assert.equal(error.code, "RESOURCE_EXHAUSTED");
    assert.match(error.message, /maximum message size of 65536 bytes/);
    peer.write(callFrame(3, "echo", ["abc"]));
    assert.deepEqual(await peer.nextResult(), { streamId: 3, value: "abc" });
    assert.equal(echoes, before + 1);
  });

  it("a connection that is reset mid-frame leaves the server serving", async () => {
    const peer = await raw();
    const whole = callFrame(1, "echo", ["z".repeat(1000)]);
    peer.write(whole.subarray(0, 500));
    await new Promise((resolve) => setTimeout(resolve, 20));
    peer.socket.resetAndDestroy();
    await peer.expectClosed();
    await stillServing();
  });
});

describe("per-call limits and stream errors", () => {
  const server = new Server({ limits: { maxConcurrentStreams: 2 } });
  let port: number;
  const aborted: unknown[] = [];

  before(async () => {
    server.register("hang", function (this: CallContext) {
      const signal = this.signal;
      return new Promise((_resolve, reject) =>
        signal.addEventListener("abort", () => {
          aborted.push(signal.reason);
          reject(signal.reason);
        }),
      );
    });
    server.register("echo", (x: unknown) => x);
    server.register("stream", async function* () {
      yield 1;
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    port = Number(address.split(":").pop());
  });

  after(async () => {
    await server.close({ timeout: 100 });
  });

  it("refuses a CALL over maxConcurrentStreams with RESOURCE_EXHAUSTED; a freed slot is usable again", async () => {
    const peer = await RawPeer.open(port);
    try {
      peer.write(callFrame(1, "hang", []));
      peer.write(callFrame(3, "hang", []));
      peer.write(callFrame(5, "echo", ["third"]));
      const error = await peer.nextError();
      assert.equal(error.streamId, 5);
      assert.equal(error.code, "RESOURCE_EXHAUSTED");
      assert.match(error.message, /limit 2/);
      peer.write(frame(FrameType.CANCEL, 0, 1));
      peer.write(callFrame(7, "echo", ["fourth"]));
      assert.deepEqual(await peer.nextResult(), { streamId: 7, value: "fourth" });
    } finally {
      peer.destroy();
    }
  });

  it("the client refuses a call over the server's limit locally", async () => {
    const client = new Client(`127.0.0.1:${port}`);
    try {
      const controller = new AbortController();
      const hanging = [1, 2].map(() => client.call("hang", [], { signal: controller.signal }).catch(() => "cancelled"));
      await rejectsWith(client.call("echo", [1]), "RESOURCE_EXHAUSTED", /allows 2 concurrent calls/);
      controller.abort();
      assert.deepEqual(await Promise.all(hanging), ["cancelled", "cancelled"]);
      assert.equal(await client.call("echo", [2]), 2);
    } finally {
      await client.close();
    }
  });

  it("an unexpected frame type on an open call is a stream error that aborts the handler", async () => {
    const peer = await RawPeer.open(port);
    try {
      aborted.length = 0;
      // Frames are handled in order: the CALL has opened stream 1 when the ITEM comes.
      peer.write(Buffer.concat([callFrame(1, "hang", []), frame(FrameType.ITEM, 0, 1, encode(1))]));
      const error = await peer.nextError();
      assert.equal(error.streamId, 1);
      assert.equal(error.code, "PROTOCOL_ERROR");
      assert.match(error.message, /unexpected ITEM frame on a call without a client stream/);
      await waitFor(() => aborted.length === 1, 1000, "handler abort");
      assert.equal((aborted[0] as { code: string }).code, "PROTOCOL_ERROR");
      peer.write(callFrame(3, "echo", ["still here"]));
      assert.deepEqual(await peer.nextResult(), { streamId: 3, value: "still here" });
    } finally {
      peer.destroy();
    }
  });

  it("a streaming method called for a single result gets FAILED_PRECONDITION saying how to call it", async () => {
    const client = new Client(`127.0.0.1:${port}`);
    try {
      await rejectsWith(client.call("stream", []), "FAILED_PRECONDITION", /"?stream"? streams its result: use client\.stream\(\)/);
      // The connection is fine afterwards.
      assert.equal(await client.call("echo", [1]), 1);
    } finally {
      await client.close();
    }
  });

  it("the server forgets connections that close", async () => {
    const client = new Client(`127.0.0.1:${port}`);
    await client.call("echo", [1]);
    assert.ok(server.connectionCount >= 1);
    await client.close();
    await waitFor(() => server.connectionCount === 0, 2000, "connection count back to 0");
  });
});

describe("a client against a server that refuses it", () => {
  it("rejects calls with the server's ERROR message", async () => {
    const message = "unsupported protocol version 1; this server supports version 2";
    const sockets: Socket[] = [];
    const fake = createServer((socket) => {
      sockets.push(socket);
      socket.once("data", () => {
        socket.end(frame(FrameType.ERROR, 0, 0, encode(["PROTOCOL_ERROR", message, { supported: [2] }])));
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const { port } = fake.address() as { port: number };
    const client = new Client(`127.0.0.1:${port}`, { reconnect: { initialDelay: 1000 } });
    try {
      const error = await within(rejectsWith(client.call("anything", []), "PROTOCOL_ERROR", message), 2000, "refused call");
      assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.deepEqual(error.data, { supported: [2] });
      await rejectsWith(client.connect(), "PROTOCOL_ERROR", message);
    } finally {
      await client.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });

  it("rejects with PROTOCOL_ERROR when the server's first frame is garbage", async () => {
    const fake = createServer((socket) => {
      socket.once("data", () => socket.end(Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n")));
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const { port } = fake.address() as { port: number };
    const client = new Client(`127.0.0.1:${port}`, { reconnect: { initialDelay: 1000 } });
    try {
      await within(rejectsWith(client.call("anything", []), "PROTOCOL_ERROR"), 2000, "refused call");
    } finally {
      await client.close();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });

  it("a client's handshake does not hang on a server that never answers", async () => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => {
      sockets.push(socket);
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as { port: number };
    const client = new Client(`127.0.0.1:${port}`, { connectTimeout: 100, reconnect: { initialDelay: 1000 } });
    try {
      await within(rejectsWith(client.call("anything", []), "UNAVAILABLE", /handshake not completed within 100 ms/), 2000, "call");
    } finally {
      await client.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

/** The ERROR frame the server sends decodes with a plain MessagePack decoder. */
describe("wire sanity", () => {
  it("WELCOME carries the connection id and limits", async () => {
    const server = new Server({ limits: { maxMessageSize: 4096 } });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const peer = await RawPeer.connect(Number(address.split(":").pop()));
    try {
      peer.write(helloFrame());
      const welcome = decode((await peer.next(FrameType.WELCOME)).payload) as {
        version: number;
        connectionId: string;
        limits: { maxMessageSize: number };
      };
      assert.equal(welcome.version, 1);
      assert.equal(typeof welcome.connectionId, "string");
      assert.equal(welcome.limits.maxMessageSize, 4096);
    } finally {
      peer.destroy();
      await server.close({ timeout: 1000 });
    }
  });
});
