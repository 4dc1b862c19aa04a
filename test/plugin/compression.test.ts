import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { type Server as NetServer, createServer } from "node:net";
import { describe, it } from "node:test";
import { deflateRawSync } from "node:zlib";
import { decode, encode } from "@msgpack/msgpack";
import { Client } from "../../src/client/index.js";
import { DEFLATE_RAW, compression, crypto } from "../../src/plugin/index.js";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { PROTOCOL_VERSION } from "../../src/protocol/wire-messages.js";
import { ErrorCode, RpcError, Server, type ServerOptions } from "../../src/server/index.js";
import { openRecords, sha256, splitFrames } from "../integration/crypto-peer.js";
import { FrameProxy } from "../integration/frame-proxy.js";
import { RAW_LIMITS, RawPeer, callPayload, frame, rejectsWith, within } from "../integration/helpers.js";

async function serve(options: ServerOptions = {}): Promise<{ server: Server; address: string; port: number; runs: () => number }> {
  const server = new Server({ keepalive: false, processors: [compression()], ...options });
  let runs = 0;
  server.register("echo", (value: unknown) => {
    runs++;
    return value;
  });
  server.register("zeros", (n: number) => "\0".repeat(n));
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, address, port: Number(address.slice(address.lastIndexOf(":") + 1)), runs: () => runs };
}

/** A raw peer whose HELLO offers compression; resolves once the WELCOME has accepted it. */
async function compressingPeer(port: number): Promise<RawPeer> {
  const peer = await RawPeer.connect(port);
  peer.write(
    frame(FrameType.HELLO, 0, 0, encode({ version: PROTOCOL_VERSION, limits: RAW_LIMITS, processors: { compression: [DEFLATE_RAW] } })),
  );
  const welcome = await peer.next();
  assert.equal(welcome.type, FrameType.WELCOME);
  assert.deepEqual((decode(welcome.payload) as { processors?: unknown }).processors, { compression: DEFLATE_RAW });
  return peer;
}

const LARGE = "compressible ".repeat(10_000);

describe("compression processor", () => {
  it("when both sides have it: messages from the threshold up go compressed both ways, small ones as they are", async () => {
    const { server, port } = await serve();
    const proxy = await FrameProxy.start(port);
    const client = new Client(proxy.address, { keepalive: false, processors: [compression()] });
    try {
      assert.equal(await client.call("echo", [LARGE]), LARGE);
      assert.equal(await client.call("echo", ["small"]), "small");
    } finally {
      await client.close();
      await server.close();
      await proxy.close();
    }
    const hello = decode((proxy.toServer[0] as { frame: { payload: Buffer } }).frame.payload) as { processors?: unknown };
    assert.deepEqual(hello.processors, { compression: [DEFLATE_RAW] });
    const [bigCall, smallCall] = proxy.toServer.filter((r) => r.frame.type === FrameType.CALL).map((r) => r.frame);
    const [bigResult, smallResult] = proxy.toClient.filter((r) => r.frame.type === FrameType.RESULT).map((r) => r.frame);
    for (const big of [bigCall, bigResult]) {
      assert.equal(big?.flags, FrameFlag.COMPRESSED);
      assert.ok(
        (big?.payload.length ?? Infinity) < LARGE.length / 20,
        `a ${big?.payload.length}-byte payload for ${LARGE.length} characters`,
      );
    }
    for (const small of [smallCall, smallResult]) assert.equal(small?.flags, 0);
  });

  it("when only one side has it: nothing is compressed, and calls work", async () => {
    const withIt = await serve();
    const without = await serve({ processors: [] });
    const proxies = [await FrameProxy.start(withIt.port), await FrameProxy.start(without.port)];
    const plainClient = new Client((proxies[0] as FrameProxy).address, { keepalive: false });
    const compressingClient = new Client((proxies[1] as FrameProxy).address, { keepalive: false, processors: [compression()] });
    try {
      assert.equal(await plainClient.call("echo", [LARGE]), LARGE);
      assert.equal(await compressingClient.call("echo", [LARGE]), LARGE);
    } finally {
      await Promise.all([plainClient.close(), compressingClient.close()]);
      await Promise.all([withIt.server.close(), without.server.close()]);
      for (const proxy of proxies) await proxy.close();
    }
    for (const proxy of proxies) {
      for (const r of [...proxy.toServer, ...proxy.toClient]) assert.equal(r.frame.flags & FrameFlag.COMPRESSED, 0);
      const welcome = decode((proxy.toClient[0] as { frame: { payload: Buffer } }).frame.payload) as { processors?: unknown };
      assert.equal(welcome.processors, undefined);
    }
  });

  it("with crypto: compresses the message first, then its frames travel in records", async () => {
    const key = randomBytes(32);
    const { server, port } = await serve({ processors: [crypto({ keys: { k: key } }), compression()] });
    const proxy = await FrameProxy.start(port);
    const client = new Client(proxy.address, { keepalive: false, processors: [compression(), crypto({ keys: { k: key } })] });
    try {
      assert.equal(await client.call("echo", [LARGE]), LARGE);
    } finally {
      await client.close();
      await server.close();
      await proxy.close();
    }
    const [hello, welcome] = [proxy.toServer[0], proxy.toClient[0]].map((r) => (r as { frame: { payload: Buffer } }).frame.payload);
    const records = proxy.recordsToServer.map((r) => r.bytes);
    const sent = Buffer.concat(records);
    assert.ok(sent.length < LARGE.length / 20, "the records carry the compressed payload");
    const { frames } = splitFrames(openRecords(key, 0, sha256(hello as Buffer, welcome as Buffer), records));
    const call = frames.find((f) => f.type === FrameType.CALL);
    assert.equal(call?.flags, FrameFlag.COMPRESSED, "inside the record, the CALL frame is flagged COMPRESSED (and not ENCRYPTED)");
  });

  it("sends incompressible data as it is, and honours the threshold", async () => {
    const { server, port } = await serve({ processors: [compression({ threshold: 16 })] });
    const proxy = await FrameProxy.start(port);
    const client = new Client(proxy.address, { keepalive: false, processors: [compression({ threshold: 16, level: 9 })] });
    const noise = randomBytes(64 * 1024);
    try {
      assert.deepEqual(Buffer.from((await client.call("echo", [noise])) as Uint8Array), noise);
      assert.equal(await client.call("echo", ["abcabcabcabcabcabcabcabcabcabc"]), "abcabcabcabcabcabcabcabcabcabc");
    } finally {
      await client.close();
      await server.close();
      await proxy.close();
    }
    const calls = proxy.toServer.filter((r) => r.frame.type === FrameType.CALL).map((r) => r.frame);
    const last = calls.pop();
    assert.deepEqual(
      calls.map((f) => f.flags),
      [FrameFlag.FOLLOWS, 0],
      "the random payload went uncompressed (in two fragments)",
    );
    assert.equal(last?.flags, FrameFlag.COMPRESSED, "a 30-character repetitive payload is over the 16-byte threshold");
  });

  it("a zip bomb: a CALL inflating past maxMessageSize fails with RESOURCE_EXHAUSTED, unrun, and the connection carries on", async () => {
    const { server, port, runs } = await serve({ limits: { maxMessageSize: 1024 * 1024 } });
    const peer = await compressingPeer(port);
    try {
      const bomb = deflateRawSync(Buffer.alloc(32 * 1024 * 1024));
      assert.ok(bomb.length < 64 * 1024, `a ${bomb.length}-byte bomb`);
      peer.write(frame(FrameType.CALL, FrameFlag.COMPRESSED, 1, bomb));
      const error = await peer.nextError();
      assert.deepEqual([error.streamId, error.code], [1, ErrorCode.RESOURCE_EXHAUSTED]);
      assert.match(
        error.message,
        /compressed CALL message on stream 1 exceeds the maximum message size of 1048576 bytes once decompressed/,
      );
      assert.deepEqual(error.data, { streamId: 1, limit: 1024 * 1024 });
      peer.write(frame(FrameType.CALL, FrameFlag.COMPRESSED, 3, deflateRawSync(callPayload(["echo"], ["still up"]))));
      const result = await peer.nextResult();
      assert.deepEqual(result, { streamId: 3, value: "still up" });
      assert.equal(runs(), 1, "only the second call ran");
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a malformed compressed CALL fails with PROTOCOL_ERROR on its stream", async () => {
    const { server, port, runs } = await serve();
    const peer = await compressingPeer(port);
    try {
      peer.write(frame(FrameType.CALL, FrameFlag.COMPRESSED, 1, Buffer.from("this is not deflate data")));
      const error = await peer.nextError();
      assert.deepEqual([error.streamId, error.code], [1, ErrorCode.PROTOCOL_ERROR]);
      assert.match(error.message, /compressed CALL message on stream 1 cannot be decompressed/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a processing flag the handshake did not agree on is a connection error", async () => {
    const { server, port, runs } = await serve({ processors: [] });
    const plain = await RawPeer.open(port);
    try {
      plain.write(frame(FrameType.CALL, FrameFlag.COMPRESSED, 1, deflateRawSync(callPayload(["echo"], [1]))));
      const error = await plain.nextError();
      assert.deepEqual([error.streamId, error.code], [0, ErrorCode.PROTOCOL_ERROR]);
      assert.equal(error.message, "unknown flags 0x4 on CALL frame, stream 1 (a processing flag this connection did not negotiate)");
      await plain.expectClosed();
      assert.equal(runs(), 0);
    } finally {
      plain.destroy();
      await server.close();
    }
  });

  it("stream 0 is never compressed: a compressed PING is a connection error", async () => {
    const { server, port } = await serve();
    const peer = await compressingPeer(port);
    try {
      peer.write(frame(FrameType.PING, FrameFlag.COMPRESSED, 0, deflateRawSync(Buffer.alloc(8))));
      const error = await peer.nextError();
      assert.deepEqual(
        [error.streamId, error.code, error.message],
        [0, ErrorCode.PROTOCOL_ERROR, "PING on stream 0 may not be compressed"],
      );
      await peer.expectClosed();
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a sender respects the peer's maxMessageSize before compressing: an oversized result is refused, not sent", async () => {
    const { server, address } = await serve();
    const client = new Client(address, { keepalive: false, processors: [compression()], limits: { maxMessageSize: 64 * 1024 } });
    try {
      // A megabyte of zeros compresses to about a kilobyte, but the client could not accept it inflated.
      await rejectsWith(
        client.call("zeros", [1024 * 1024]),
        ErrorCode.RESOURCE_EXHAUSTED,
        "exceeds the peer's maximum message size of 65536 bytes",
      );
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("the client bounds what it inflates too: a zip bomb from a server fails the call", async () => {
    // A fake server: accepts compression, answers the first CALL with a compressed bomb as its RESULT.
    const fake: NetServer = createServer((socket) => {
      socket.on("error", () => {});
      let seen = 0;
      socket.on("data", (chunk: Buffer) => {
        if (seen++ > 0) return;
        const limits = (decode(chunk.subarray(10, 10 + chunk.readUInt32BE(0))) as { limits: unknown }).limits;
        socket.write(
          frame(FrameType.WELCOME, 0, 0, encode({ version: 1, connectionId: "fake", limits, processors: { compression: DEFLATE_RAW } })),
        );
        socket.once("data", () =>
          socket.write(frame(FrameType.RESULT, FrameFlag.COMPRESSED, 1, deflateRawSync(Buffer.alloc(8 * 1024 * 1024)))),
        );
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const bound = fake.address();
    const port = typeof bound === "object" && bound !== null ? bound.port : 0;
    const client = new Client(`127.0.0.1:${port}`, {
      keepalive: false,
      processors: [compression()],
      limits: { maxMessageSize: 1024 * 1024 },
    });
    try {
      await within(
        rejectsWith(
          client.call("anything", []),
          ErrorCode.RESOURCE_EXHAUSTED,
          "exceeds the maximum message size of 1048576 bytes once decompressed",
        ),
        5000,
        "the call failing",
      );
    } finally {
      client.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });

  it("checks its options", () => {
    assert.deepEqual(compression().options, { threshold: 1024, level: 1 });
    for (const bad of [{ level: 0 }, { level: 10 }, { level: 1.5 }, { threshold: -1 }, { threshold: Number.NaN }]) {
      assert.throws(
        () => compression(bad),
        (error: unknown) => error instanceof RpcError && error.code === ErrorCode.INVALID_ARGUMENT,
      );
    }
  });
});
