import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { type Server as NetServer, createServer } from "node:net";
import { describe, it } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { Client } from "../../src/client/index.js";
import { crypto } from "../../src/plugin/index.js";
import { DEFAULT_LIMITS } from "../../src/protocol/connection.js";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { type CallContext, type Channel, ErrorCode, RpcError, Server, type ServerOptions } from "../../src/server/index.js";
import { ENCRYPTED, CryptoPeer, cryptoHello, seal, sha256 } from "./crypto-peer.js";
import { FrameProxy } from "./frame-proxy.js";
import { RawPeer, callFrame, callPayload, frame, helloFrame, rejectsWith, waitFor, within } from "./helpers.js";

const KEY = randomBytes(32);
const OTHER_KEY = randomBytes(32);

interface Served {
  server: Server;
  address: string;
  port: number;
  /** Handler runs so far. */
  runs: () => number;
  /** Items the `sum` handler has read. */
  items: string[];
}

/** A crypto-only server (unless `options` says otherwise) with a service exercising every kind of payload. */
async function serve(options: ServerOptions = {}): Promise<Served> {
  const server = new Server({ keepalive: false, processors: [crypto({ keys: { k1: KEY } })], ...options });
  let runs = 0;
  const items: string[] = [];
  server.register("svc", {
    echo(value: unknown) {
      runs++;
      return value;
    },
    fail() {
      runs++;
      throw new RpcError(ErrorCode.FAILED_PRECONDITION, "ERR-SECRET", { detail: "DATA-SECRET" });
    },
    async *count(n: number) {
      runs++;
      for (let i = 0; i < n; i++) yield `ITEM-SECRET-${i}`;
    },
    async sum(values: AsyncIterable<string>) {
      runs++;
      let all = "";
      for await (const value of values) {
        items.push(value);
        all += value;
      }
      return all;
    },
    token(this: CallContext) {
      runs++;
      return this.connectionMetadata.token ?? null;
    },
  });
  server.channel("chat", async function (channel: Channel<string, string>) {
    runs++;
    await channel.send("CHANNEL-SECRET-hello");
    for await (const message of channel) await channel.send(message.toUpperCase());
  });
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, address, port: Number(address.slice(address.lastIndexOf(":") + 1)), runs: () => runs, items };
}

function client(address: string, keys: Record<string, Buffer> = { k1: KEY }, metadata?: Record<string, string>): Client {
  return new Client(address, { keepalive: false, processors: [crypto({ keys })], ...(metadata === undefined ? {} : { metadata }) });
}

async function* strings(...values: string[]): AsyncIterable<string> {
  for (const value of values) yield value;
}

const SECRETS = [
  "META-SECRET",
  "ARG-SECRET",
  "RESULT-SECRET",
  "ERR-SECRET",
  "DATA-SECRET",
  "ITEM-SECRET",
  "INPUT-SECRET",
  "CHANNEL-SECRET",
];

describe("crypto processor: encrypted connections", () => {
  it("carries calls, streams both ways, channels and errors with nothing in the clear after the handshake", async () => {
    const { server, port } = await serve();
    const proxy = await FrameProxy.start(port);
    const c = client(proxy.address, { k1: KEY }, { token: "META-SECRET" });
    try {
      assert.equal(await c.call("svc.echo", ["ARG-SECRET RESULT-SECRET"]), "ARG-SECRET RESULT-SECRET");
      assert.equal(await c.call("svc.token"), "META-SECRET", "the sealed metadata reaches the handler");
      const failure = await rejectsWith(c.call("svc.fail"), ErrorCode.FAILED_PRECONDITION, "ERR-SECRET");
      assert.deepEqual(failure.data, { detail: "DATA-SECRET" });
      const seen: string[] = [];
      // More items than the reader's window: it must grant CREDIT.
      const count = (DEFAULT_LIMITS.streamWindow ?? 64) + 36;
      for await (const item of c.stream<string>("svc.count", [count])) seen.push(item);
      assert.deepEqual(
        seen,
        Array.from({ length: count }, (_, i) => `ITEM-SECRET-${i}`),
      );
      assert.equal(await c.call("svc.sum", [strings("INPUT-SECRET-a", "INPUT-SECRET-b")]), "INPUT-SECRET-aINPUT-SECRET-b");
      const chat = c.channel<string, string>("chat");
      await chat.send("channel-secret-x");
      const messages: string[] = [];
      for await (const message of chat) {
        messages.push(message);
        if (messages.length === 2) break;
      }
      assert.deepEqual(messages, ["CHANNEL-SECRET-hello", "CHANNEL-SECRET-X"]);
      chat.close("bye");
      await chat.closed;
    } finally {
      await c.close();
      await server.close();
      await proxy.close();
    }
    const [hello, ...fromClient] = proxy.toServer;
    const [welcome, ...fromServer] = proxy.toClient;
    assert.equal(hello?.frame.type, FrameType.HELLO);
    assert.equal(welcome?.frame.type, FrameType.WELCOME);
    assert.ok(fromClient.length > 8 && fromServer.length > 8, "traffic in both directions");
    for (const { frame: f } of [...fromClient, ...fromServer]) {
      assert.ok((f.flags & FrameFlag.ENCRYPTED) !== 0, `frame type ${f.type} on stream ${f.streamId} is sealed`);
    }
    assert.ok(
      fromClient.some((r) => r.frame.type === FrameType.CREDIT),
      "CREDIT frames were sent (and, as checked above, sealed)",
    );
    const everything = Buffer.concat([...proxy.toServer, ...proxy.toClient].map((r) => r.bytes));
    for (const secret of SECRETS) {
      assert.equal(everything.includes(secret), false, `"${secret}" crossed the wire in the clear`);
      assert.equal(everything.includes(secret.toLowerCase()), false, `"${secret.toLowerCase()}" crossed the wire in the clear`);
    }
  });

  it("speaks the layout PROTOCOL.md documents: a peer written from it alone gets sealed answers, PONGs and GOAWAY", async () => {
    const { server, port } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1", { token: "t" });
    try {
      peer.raw.write(peer.frame(FrameType.CALL, 1, callPayload(["svc.echo"], ["hi"])));
      const result = await peer.next(FrameType.RESULT);
      assert.deepEqual([result.frame.streamId, result.frame.flags, result.value], [1, ENCRYPTED, "hi"]);
      const ping = Buffer.from("8 bytes!");
      peer.raw.write(peer.frame(FrameType.PING, 0, ping));
      const pong = await peer.raw.next(FrameType.PONG);
      assert.deepEqual(peer.openFrame(pong), ping, "the PONG is sealed and echoes the PING's plaintext");
      const closed = server.close();
      const goaway = await peer.next(FrameType.GOAWAY);
      assert.deepEqual(goaway.value, [1, "UNAVAILABLE", "server is shutting down"]);
      peer.destroy();
      await closed;
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("fragments large sealed messages like any other (every fragment flagged, one envelope per message)", async () => {
    const { server, port } = await serve();
    const proxy = await FrameProxy.start(port);
    const c = new Client(proxy.address, { keepalive: false, fragmentSize: 16 * 1024, processors: [crypto({ keys: { k1: KEY } })] });
    try {
      const big = "x".repeat(3 * 1024 * 1024);
      assert.equal(await c.call("svc.echo", [big]), big);
      const calls = proxy.toServer.filter((r) => r.frame.type === FrameType.CALL);
      assert.ok(calls.length > 100, "the CALL went as fragments");
      for (const [i, { frame: f }] of calls.entries()) {
        const last = i === calls.length - 1;
        assert.equal(f.flags, last ? FrameFlag.ENCRYPTED : FrameFlag.ENCRYPTED | FrameFlag.FOLLOWS, `flags of fragment ${i}`);
      }
    } finally {
      await c.close();
      await server.close();
      await proxy.close();
    }
  });

  it("with required: false serves plaintext and encrypted clients alike", async () => {
    const { server, address } = await serve({ processors: [crypto({ keys: { k1: KEY }, required: false })] });
    const plain = new Client(address, { keepalive: false, metadata: { token: "plain" } });
    const sealed = client(address, { k1: KEY }, { token: "sealed" });
    try {
      assert.equal(await plain.call("svc.token"), "plain");
      assert.equal(await sealed.call("svc.token"), "sealed");
    } finally {
      await Promise.all([plain.close(), sealed.close()]);
      await server.close();
    }
  });

  it("rotates keys: the server holds both while clients move over, then drops the old one", async () => {
    const ring = crypto({ keys: { old: KEY, new: OTHER_KEY } });
    const { server, address, runs } = await serve({ processors: [ring] });
    const before = client(address, { old: KEY });
    const after = client(address, { new: OTHER_KEY });
    try {
      assert.equal(await before.call("svc.echo", [1]), 1);
      assert.equal(await after.call("svc.echo", [2]), 2);
      ring.configure({ keys: { new: OTHER_KEY } });
      assert.deepEqual(ring.keyIds, ["new"]);
      const ran = runs();
      await rejectsWith(before.call("svc.echo", [3]), ErrorCode.UNAUTHENTICATED, 'key id "old"');
      assert.equal(runs(), ran, "the call under the dropped key did not run");
      assert.equal(await after.call("svc.echo", [4]), 4);
      const late = client(address, { old: KEY });
      await rejectsWith(late.call("svc.echo", [5]), ErrorCode.UNAUTHENTICATED, 'key id "old", which this side does not have');
      await late.close();
    } finally {
      await Promise.all([before.close(), after.close()]);
      await server.close();
    }
  });
});

describe("crypto processor: what a crypto-only server refuses (the handler never runs)", () => {
  it("a HELLO without crypto: UNAUTHENTICATED in the handshake, for raw peers and rapt clients", async () => {
    const { server, port, address, runs } = await serve();
    const raw = await RawPeer.connect(port);
    const plain = new Client(address, { keepalive: false });
    try {
      raw.write(helloFrame());
      raw.write(callFrame(1, "svc.echo", ["x"]));
      const error = await raw.nextError();
      assert.deepEqual([error.streamId, error.code], [0, ErrorCode.UNAUTHENTICATED]);
      assert.match(error.message, /accepts only encrypted connections: the HELLO offers no crypto proof/);
      await raw.expectClosed();
      await rejectsWith(plain.call("svc.echo", ["x"]), ErrorCode.UNAUTHENTICATED, "accepts only encrypted connections");
      assert.equal(runs(), 0);
    } finally {
      raw.destroy();
      await plain.close();
      await server.close();
    }
  });

  it("a plaintext CALL after an encrypted handshake: UNAUTHENTICATED connection error", async () => {
    const { server, port, runs } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      peer.raw.write(callFrame(1, "svc.echo", ["x"]));
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /plaintext CALL frame on stream 1: this connection is encrypted/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a wrong key: an unknown key id, or a known id with another key", async () => {
    const { server, address, port, runs } = await serve();
    const unknownId = client(address, { k9: KEY });
    const wrongKey = client(address, { k1: OTHER_KEY });
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      await rejectsWith(
        unknownId.call("svc.echo", [1]),
        ErrorCode.UNAUTHENTICATED,
        `sealed under key id "k9", which this side does not have`,
      );
      await rejectsWith(wrongKey.call("svc.echo", [1]), ErrorCode.UNAUTHENTICATED, "the HELLO's crypto proof failed authentication");
      // After a good handshake, a CALL sealed under a key id the server lacks.
      const context = { direction: 0, type: FrameType.CALL, flags: ENCRYPTED, streamId: 1, binding: peer.binding };
      const payload = seal(OTHER_KEY, "k2", context, callPayload(["svc.echo"], [1]));
      peer.raw.write(frame(FrameType.CALL, ENCRYPTED, 1, payload));
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /encrypted CALL message on stream 1 is sealed under key id "k2"/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await Promise.all([unknownId.close(), wrongKey.close()]);
      await server.close();
    }
  });

  it("tampering: one bit flipped in a sealed CALL on its way fails the connection, and the caller learns why", async () => {
    const { server, port, runs } = await serve();
    // Frame 0 is the HELLO; frame 1 the first CALL. Flip one bit in its ciphertext.
    const proxy = await FrameProxy.start(port, {
      toServer: (bytes, index) => {
        if (index === 1) bytes[bytes.length - 20] = (bytes[bytes.length - 20] as number) ^ 0x01;
        return bytes;
      },
    });
    const c = client(proxy.address);
    try {
      await rejectsWith(c.call("svc.echo", ["x"]), ErrorCode.UNAUTHENTICATED, "encrypted CALL message on stream 1 failed authentication");
      assert.equal(runs(), 0);
    } finally {
      c.destroy();
      await server.close();
      await proxy.close();
    }
  });

  it("tampering with the header: a sealed CALL moved to another stream id fails authentication", async () => {
    const { server, port, runs } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      const moved = peer.frame(FrameType.CALL, 1, callPayload(["svc.echo"], ["x"]));
      moved.writeUInt32BE(3, 6);
      peer.raw.write(moved);
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /encrypted CALL message on stream 3 failed authentication/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a stale or future timestamp, in a frame or in the HELLO's proof", async () => {
    const { server, port, runs } = await serve();
    const stale = await CryptoPeer.open(port, KEY, "k1");
    const future = await CryptoPeer.open(port, KEY, "k1");
    const raw = await RawPeer.connect(port);
    try {
      stale.raw.write(stale.frame(FrameType.CALL, 1, callPayload(["svc.echo"], ["x"]), { timestamp: Date.now() - 60_000 }));
      const old = await stale.connectionError();
      assert.equal(old.code, ErrorCode.UNAUTHENTICATED);
      assert.match(old.message, /encrypted CALL message on stream 1 has a timestamp \d+ ms old, outside the ±30000 ms window/);
      future.raw.write(future.frame(FrameType.CALL, 1, callPayload(["svc.echo"], ["x"]), { timestamp: Date.now() + 60_000 }));
      const ahead = await future.connectionError();
      assert.equal(ahead.code, ErrorCode.UNAUTHENTICATED);
      assert.match(ahead.message, /has a timestamp \d+ ms in the future/);
      raw.write(frame(FrameType.HELLO, 0, 0, cryptoHello(KEY, "k1", undefined, { timestamp: Date.now() - 45_000 })));
      const refused = await raw.nextError();
      assert.equal(refused.code, ErrorCode.UNAUTHENTICATED);
      assert.match(refused.message, /the HELLO's crypto proof has a timestamp \d+ ms old/);
      await raw.expectClosed();
      assert.equal(runs(), 0);
    } finally {
      stale.destroy();
      future.destroy();
      raw.destroy();
      await server.close();
    }
  });

  it("replay on the same connection: an ITEM sent twice is refused", async () => {
    const { server, port, items } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      peer.raw.write(peer.frame(FrameType.CALL, 1, callPayload(["svc.sum", null, null, 0], [null])));
      const item = peer.frame(FrameType.ITEM, 1, encode("once"));
      peer.raw.write(item);
      await waitFor(() => items.length === 1, 2000, "the handler reading the item");
      peer.raw.write(item);
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /encrypted ITEM message on stream 1 is a replay: its nonce was already seen/);
      assert.deepEqual(items, ["once"]);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("replay on a new socket: a captured HELLO and CALL are refused, handshake and all", async () => {
    const { server, port, runs } = await serve();
    const proxy = await FrameProxy.start(port);
    const c = client(proxy.address);
    try {
      assert.equal(await c.call("svc.echo", ["once"]), "once");
      await c.close();
      assert.equal(runs(), 1);
      const captured = proxy.toServer.filter((r) => r.frame.type === FrameType.HELLO || r.frame.type === FrameType.CALL);
      assert.equal(captured.length, 2);
      const replay = await RawPeer.connect(port);
      replay.write(Buffer.concat(captured.map((r) => r.bytes)));
      const error = await replay.nextError();
      assert.deepEqual([error.streamId, error.code], [0, ErrorCode.UNAUTHENTICATED]);
      assert.match(error.message, /the HELLO's crypto proof is a replay/);
      await replay.expectClosed();
      // With a fresh handshake of its own, the captured CALL is still refused.
      const peer = await CryptoPeer.open(port, KEY, "k1");
      peer.raw.write((captured[1] as { bytes: Buffer }).bytes);
      const second = await peer.connectionError();
      assert.equal(second.code, ErrorCode.UNAUTHENTICATED);
      assert.match(second.message, /encrypted CALL message on stream 1 is a replay/);
      peer.destroy();
      assert.equal(runs(), 1, "the replayed call never ran");
    } finally {
      c.destroy();
      await server.close();
      await proxy.close();
    }
  });

  it("frames are bound to their connection: a session replayed to a server that forgot its nonces still fails", async () => {
    const first = await serve();
    const proxy = await FrameProxy.start(first.port);
    const c = client(proxy.address);
    try {
      assert.equal(await c.call("svc.echo", ["once"]), "once");
      await c.close();
    } finally {
      await first.server.close();
      await proxy.close();
    }
    // A restarted server: same key, empty replay cache. The HELLO is fresh
    // enough to pass, but its WELCOME differs, so the captured CALL's
    // binding does not match.
    const second = await serve();
    const replay = await RawPeer.connect(second.port);
    try {
      const [hello, call] = proxy.toServer.filter((r) => r.frame.type === FrameType.HELLO || r.frame.type === FrameType.CALL);
      replay.write((hello as { bytes: Buffer }).bytes);
      const welcome = await replay.next();
      assert.equal(welcome.type, FrameType.WELCOME);
      replay.write((call as { bytes: Buffer }).bytes);
      const error = await replay.next(FrameType.ERROR);
      assert.equal(error.streamId, 0);
      assert.equal(error.flags, ENCRYPTED, "the connection error is sealed (the replayer cannot read it)");
      await replay.expectClosed();
      assert.equal(second.runs(), 0);
    } finally {
      replay.destroy();
      await second.server.close();
    }
  });

  it("reflection: a payload the server sealed, sent back to it, fails authentication", async () => {
    const { server, port } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      peer.raw.write(peer.frame(FrameType.CALL, 1, callPayload(["chat", null, null, null, 1], [])));
      const hello = await peer.next(FrameType.ITEM);
      assert.equal(hello.value, "CHANNEL-SECRET-hello");
      peer.raw.write(frame(FrameType.ITEM, hello.frame.flags, 1, hello.frame.payload));
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /encrypted ITEM message on stream 1 failed authentication/);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a full replay cache refuses messages with RESOURCE_EXHAUSTED rather than grow", async () => {
    // The HELLO's proof and three CALLs fill four entries; the fourth CALL finds no room.
    const { server, address, runs } = await serve({ processors: [crypto({ keys: { k1: KEY }, replayCacheSize: 4 })] });
    const c = client(address);
    try {
      for (let i = 0; i < 3; i++) assert.equal(await c.call("svc.echo", [i]), i);
      await rejectsWith(c.call("svc.echo", [3]), ErrorCode.RESOURCE_EXHAUSTED, "replay cache is full: 4 nonces");
      assert.equal(runs(), 3);
    } finally {
      c.destroy();
      await server.close();
    }
  });
});

describe("crypto processor: what a crypto client refuses", () => {
  it("a server without crypto", async () => {
    const server = new Server({ keepalive: false });
    server.register("echo", (x: unknown) => x);
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const c = client(address);
    try {
      await rejectsWith(c.call("echo", [1]), ErrorCode.UNAUTHENTICATED, "the server did not accept encryption");
    } finally {
      await c.close();
      await server.close();
    }
  });

  it("a server that cannot prove it holds the key (a forged WELCOME)", async () => {
    // A fake server: answers any HELLO with a WELCOME whose proof is sealed under another key.
    const fake: NetServer = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", (chunk: Buffer) => {
        const hello = chunk.subarray(10, 10 + chunk.readUInt32BE(0));
        const context = { direction: 1, type: FrameType.WELCOME, flags: 0, streamId: 0, binding: sha256(hello) };
        const proof = seal(OTHER_KEY, "k1", context, new Uint8Array(0));
        const limits = (decode(hello) as { limits: unknown }).limits;
        socket.write(frame(FrameType.WELCOME, 0, 0, encode({ version: 1, connectionId: "fake", limits, processors: { crypto: proof } })));
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const address = fake.address();
    const c = client(`127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`);
    try {
      await within(
        rejectsWith(c.call("echo", [1]), ErrorCode.UNAUTHENTICATED, "the WELCOME's crypto proof failed authentication"),
        5000,
        "the client refusing the fake server",
      );
    } finally {
      c.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });
});
