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
import {
  CryptoPeer,
  MAX_RECORD_PLAINTEXT,
  MAX_RECORD_SIZE,
  cryptoHello,
  exchange,
  openRecords,
  sealProof,
  sealRecord,
  sha256,
  splitFrames,
} from "./crypto-peer.js";
import { FrameProxy } from "./frame-proxy.js";
import { RawPeer, type RawFrame, callFrame, callPayload, frame, helloFrame, rejectsWith, sleep, waitFor, within } from "./helpers.js";

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

/**
 * What a proxy saw of its first connection, opened with the key as
 * PROTOCOL.md says: the frames inside each direction's records. Checks
 * that nothing but the HELLO and the WELCOME went in the clear.
 */
function decrypted(proxy: FrameProxy, connection = 0): { toServer: RawFrame[]; toClient: RawFrame[] } {
  const clear = [...proxy.toServer, ...proxy.toClient].filter((r) => r.connection === connection);
  assert.deepEqual(
    clear.map((r) => r.frame.type),
    [FrameType.HELLO, FrameType.WELCOME],
    "only the handshake frames are plaintext",
  );
  const [hello, welcome] = clear.map((r) => r.frame.payload) as [Buffer, Buffer];
  const binding = sha256(hello, welcome);
  const open = (direction: number, records: readonly { bytes: Buffer; connection: number }[]): RawFrame[] => {
    const mine = records.filter((r) => r.connection === connection).map((r) => r.bytes);
    const { frames, rest } = splitFrames(openRecords(KEY, direction, binding, mine));
    assert.equal(rest.length, 0, "the records carry whole frames once all are in");
    for (const f of frames) assert.equal(f.flags & FrameFlag.ENCRYPTED, 0, "no frame inside a record sets ENCRYPTED");
    return frames;
  };
  return { toServer: open(0, proxy.recordsToServer), toClient: open(1, proxy.recordsToClient) };
}

describe("crypto processor: encrypted connections", () => {
  it("carries calls, streams both ways, channels and errors in records, with nothing in the clear after the handshake", async () => {
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
    assert.ok(proxy.recordsToServer.length > 4 && proxy.recordsToClient.length > 4, "records in both directions");
    const everything = proxy.wireBytes();
    for (const secret of SECRETS) {
      assert.equal(everything.includes(secret), false, `"${secret}" crossed the wire in the clear`);
      assert.equal(everything.includes(secret.toLowerCase()), false, `"${secret.toLowerCase()}" crossed the wire in the clear`);
    }
    // Opened as PROTOCOL.md documents, the records hold the usual frames.
    const { toServer, toClient } = decrypted(proxy);
    const types = (frames: RawFrame[]): Set<number> => new Set(frames.map((f) => f.type));
    for (const type of [FrameType.CALL, FrameType.ITEM, FrameType.END, FrameType.CREDIT, FrameType.GOAWAY])
      assert.ok(types(toServer).has(type), `the client sent a frame of type ${type} in its records`);
    for (const type of [FrameType.RESULT, FrameType.ERROR, FrameType.ITEM, FrameType.END])
      assert.ok(types(toClient).has(type), `the server sent a frame of type ${type} in its records`);
    assert.ok(
      toClient.some((f) => f.payload.includes("RESULT-SECRET")),
      "the secrets are inside the records",
    );
  });

  it("speaks the layout PROTOCOL.md documents: a peer written from it alone gets records with RESULT, PONG and GOAWAY", async () => {
    const { server, port } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1", { token: "t" });
    try {
      // Two frames in one record, and a frame cut across two records.
      const ping = Buffer.from("8 bytes!");
      peer.send(frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["hi"])), frame(FrameType.PING, 0, 0, ping));
      const result = await peer.next(FrameType.RESULT);
      assert.deepEqual([result.frame.streamId, result.frame.flags, result.value], [1, 0, "hi"]);
      const pong = await peer.nextFrame(FrameType.PONG);
      assert.deepEqual(pong.payload, ping, "the PONG echoes the PING");
      const call = frame(FrameType.CALL, 0, 3, callPayload(["svc.token"], []));
      peer.send(call.subarray(0, 7));
      peer.send(call.subarray(7));
      assert.equal((await peer.next(FrameType.RESULT)).value, "t", "the sealed metadata reached the handler");
      const closed = server.close();
      const goaway = await peer.next(FrameType.GOAWAY);
      assert.deepEqual(goaway.value, [3, "UNAVAILABLE", "server is shutting down"]);
      peer.destroy();
      await closed;
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("puts the frames of one event-loop turn in one record: 100 concurrent calls take far fewer records", async () => {
    const { server, port } = await serve();
    const proxy = await FrameProxy.start(port);
    const c = client(proxy.address);
    try {
      assert.equal(await c.call("svc.echo", [0]), 0, "connected");
      const before = proxy.recordsToServer.length;
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => c.call("svc.echo", [i])));
      assert.deepEqual(
        results,
        Array.from({ length: 100 }, (_, i) => i),
      );
      const records = proxy.recordsToServer.length - before;
      assert.ok(records <= 3, `the 100 CALLs went in ${records} records`);
    } finally {
      await c.close();
      await server.close();
      await proxy.close();
    }
    const { toServer, toClient } = decrypted(proxy);
    assert.equal(toServer.filter((f) => f.type === FrameType.CALL).length, 101);
    assert.equal(toClient.filter((f) => f.type === FrameType.RESULT).length, 101);
    assert.ok(proxy.recordsToClient.length < 30, `the 101 RESULTs went in ${proxy.recordsToClient.length} records`);
  });

  it("carries large messages byte-exact through many records, fragments inside them as usual", async () => {
    const { server, port } = await serve();
    const proxy = await FrameProxy.start(port);
    const c = new Client(proxy.address, { keepalive: false, fragmentSize: 16 * 1024, processors: [crypto({ keys: { k1: KEY } })] });
    const big = randomBytes(4 * 1024 * 1024);
    try {
      const back = (await c.call("svc.echo", [big])) as Uint8Array;
      assert.ok(Buffer.from(back).equals(big), "the 4 MiB came back byte-exact");
    } finally {
      await c.close();
      await server.close();
      await proxy.close();
    }
    assert.ok(proxy.recordsToServer.length >= 16 && proxy.recordsToClient.length >= 16, "many records each way");
    for (const { bytes } of [...proxy.recordsToServer, ...proxy.recordsToClient]) {
      assert.ok(bytes.length - 4 <= MAX_RECORD_SIZE, `a record of ${bytes.length - 4} bytes`);
    }
    const calls = decrypted(proxy).toServer.filter((f) => f.type === FrameType.CALL);
    assert.ok(calls.length > 200, "the CALL went as fragments");
    for (const [i, f] of calls.entries()) {
      assert.equal(f.flags, i === calls.length - 1 ? 0 : FrameFlag.FOLLOWS, `flags of fragment ${i}`);
    }
  });

  it("with required: false serves plaintext and encrypted clients alike", async () => {
    const { server, address } = await serve({ processors: [crypto({ keys: { k1: KEY }, required: false })] });
    const plain = new Client(address, { keepalive: false, metadata: { token: "plain" } });
    const sealed = client(address, { k1: KEY }, { token: "sealed" });
    try {
      assert.equal(await plain.call("svc.token"), "plain");
      assert.equal(await sealed.call("svc.token"), "sealed");
      assert.deepEqual(await Promise.all([plain.call("svc.echo", ["p"]), sealed.call("svc.echo", ["s"])]), ["p", "s"]);
    } finally {
      await Promise.all([plain.close(), sealed.close()]);
      await server.close();
    }
  });

  it("waits for an async authenticate: the client's records follow the WELCOME", async () => {
    const { server, address } = await serve({
      authenticate: async (credentials) => {
        await sleep(30);
        if (credentials.metadata.token !== "ok") throw new Error("bad token");
        return "user";
      },
    });
    const good = client(address, { k1: KEY }, { token: "ok" });
    const bad = client(address, { k1: KEY }, { token: "no" });
    try {
      assert.equal(await good.call("svc.echo", ["x"]), "x");
      await rejectsWith(bad.call("svc.echo", ["x"]), ErrorCode.UNAUTHENTICATED, "authentication failed: bad token");
    } finally {
      await Promise.all([good.close(), bad.close()]);
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

  it("remembers handshake proofs only: replayCacheSize bounds encrypted handshakes, not the traffic on them", async () => {
    const { server, address, runs } = await serve({ processors: [crypto({ keys: { k1: KEY }, replayCacheSize: 2 })] });
    const clients = [client(address), client(address), client(address)];
    try {
      for (const c of clients.slice(0, 2)) {
        const values = Array.from({ length: 50 }, (_, i) => i);
        assert.deepEqual(await Promise.all(values.map((i) => c.call("svc.echo", [i]))), values);
      }
      // The third handshake is refused; the client reports it as a failed connection.
      await rejectsWith((clients[2] as Client).call("svc.echo", [0]), ErrorCode.UNAVAILABLE, "replay cache is full: 2 nonces");
      assert.equal(runs(), 100);
    } finally {
      for (const c of clients) c.destroy();
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

  it("a plaintext frame after an encrypted handshake: UNAUTHENTICATED, the stream must be records", async () => {
    const { server, port, runs } = await serve();
    const short = await CryptoPeer.open(port, KEY, "k1");
    const long = await CryptoPeer.open(port, KEY, "k1");
    try {
      short.write(callFrame(1, "svc.echo", ["x"]));
      const tooShort = await short.connectionError();
      assert.equal(tooShort.code, ErrorCode.UNAUTHENTICATED);
      assert.match(tooShort.message, /^record of \d+ bytes is shorter than the smallest record \(38 bytes\); after an encrypted handshake/);
      // One long enough to pass for a record's length fails authentication as record 0.
      long.write(callFrame(1, "svc.echo", ["x".repeat(100)]));
      const notRecord = await long.connectionError();
      assert.equal(notRecord.code, ErrorCode.UNAUTHENTICATED);
      assert.match(notRecord.message, /^record 0 from the client .*; after an encrypted handshake everything must be sent in records$/);
      assert.equal(runs(), 0);
    } finally {
      short.destroy();
      long.destroy();
      await server.close();
    }
  });

  it("a frame flagged ENCRYPTED inside a record: PROTOCOL_ERROR, the flag is set on no frame", async () => {
    const { server, port, runs } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      peer.send(frame(FrameType.CALL, FrameFlag.ENCRYPTED, 1, callPayload(["svc.echo"], ["x"])));
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.PROTOCOL_ERROR);
      assert.match(error.message, /^unknown flags 0x2 on CALL frame, stream 1 \(ENCRYPTED is set on no frame/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a wrong key: an unknown key id, or a known id with another key, in the handshake or in a record", async () => {
    const { server, address, port, runs } = await serve();
    const unknownId = client(address, { k9: KEY });
    const wrongKey = client(address, { k1: OTHER_KEY });
    const renamed = await CryptoPeer.open(port, KEY, "k1");
    const rekeyed = await CryptoPeer.open(port, KEY, "k1");
    try {
      await rejectsWith(
        unknownId.call("svc.echo", [1]),
        ErrorCode.UNAUTHENTICATED,
        `sealed under key id "k9", which this side does not have`,
      );
      await rejectsWith(wrongKey.call("svc.echo", [1]), ErrorCode.UNAUTHENTICATED, "the HELLO's crypto proof failed authentication");
      // After a good handshake, a record under a key id the server lacks, and one under the right id but another key.
      const call = frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], [1]));
      renamed.write(sealRecord(OTHER_KEY, "k2", 0, 0, renamed.binding, call));
      const unknown = await renamed.connectionError();
      assert.equal(unknown.code, ErrorCode.UNAUTHENTICATED);
      assert.match(unknown.message, /^record 0 from the client is sealed under key id "k2", which this side does not have/);
      assert.deepEqual(unknown.data, { sequence: 0, keyId: "k2" });
      rekeyed.write(sealRecord(OTHER_KEY, "k1", 0, 0, rekeyed.binding, call));
      const forged = await rekeyed.connectionError();
      assert.equal(forged.code, ErrorCode.UNAUTHENTICATED);
      assert.match(forged.message, /^record 0 from the client failed authentication/);
      assert.equal(runs(), 0);
    } finally {
      renamed.destroy();
      rekeyed.destroy();
      await Promise.all([unknownId.close(), wrongKey.close()]);
      await server.close();
    }
  });

  it("tampering: one bit flipped in a record on its way fails the connection, and the caller learns why", async () => {
    const { server, port, runs } = await serve();
    // Unit 0 is the HELLO; unit 1 the first record. Flip one bit in its ciphertext.
    const proxy = await FrameProxy.start(port, {
      toServer: (bytes, unit) => {
        if (unit.index === 1) {
          assert.equal(unit.kind, "record");
          bytes[bytes.length - 20] = (bytes[bytes.length - 20] as number) ^ 0x01;
        }
        return bytes;
      },
    });
    const c = client(proxy.address);
    try {
      const error = await rejectsWith(
        c.call("svc.echo", ["x"]),
        ErrorCode.UNAUTHENTICATED,
        /record 0 from the client failed authentication: it was altered, replayed, reordered/,
      );
      assert.deepEqual(error.data, { sequence: 0 });
      assert.equal(runs(), 0);
    } finally {
      c.destroy();
      await server.close();
      await proxy.close();
    }
  });

  it("a record dropped on the way: the next one fails authentication, and the calls of both fail", async () => {
    const { server, port, runs } = await serve();
    const proxy = await FrameProxy.start(port, {
      toServer: (bytes, unit) => (unit.index === 2 ? Buffer.alloc(0) : bytes),
    });
    const c = client(proxy.address);
    try {
      assert.equal(await c.call("svc.echo", ["first"]), "first");
      const dropped = c.call("svc.echo", ["dropped"]);
      await waitFor(() => proxy.recordsToServer.length === 2, 2000, "the second record passing the proxy");
      await sleep(20);
      const next = c.call("svc.echo", ["next"]);
      await rejectsWith(next, ErrorCode.UNAUTHENTICATED, "record 1 from the client failed authentication");
      await rejectsWith(dropped, ErrorCode.UNAUTHENTICATED, "record 1 from the client failed authentication");
      assert.equal(runs(), 1);
    } finally {
      c.destroy();
      await server.close();
      await proxy.close();
    }
  });

  it("replay on the same connection: a record sent twice is refused", async () => {
    const { server, port, items } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      peer.send(frame(FrameType.CALL, 0, 1, callPayload(["svc.sum", null, null, 0], [null])));
      const item = peer.send(frame(FrameType.ITEM, 0, 1, encode("once")));
      await waitFor(() => items.length === 1, 2000, "the handler reading the item");
      peer.write(item);
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /^record 2 from the client failed authentication: it was altered, replayed, reordered/);
      assert.deepEqual(error.data, { sequence: 2 });
      assert.deepEqual(items, ["once"]);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("reordering: records sent out of order are refused", async () => {
    const { server, port, runs } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      const first = peer.record(frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["a"])));
      const second = peer.record(frame(FrameType.CALL, 0, 3, callPayload(["svc.echo"], ["b"])));
      peer.write(second);
      peer.write(first);
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /^record 0 from the client failed authentication/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("reflection: a record the server sent, sent back to it, fails authentication; so does one sealed for the other direction", async () => {
    const { server, port, runs } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    const mirror = await CryptoPeer.open(port, KEY, "k1");
    try {
      peer.send(frame(FrameType.CALL, 0, 1, callPayload(["chat", null, null, null, 1], [])));
      const hello = await peer.next(FrameType.ITEM);
      assert.equal(hello.value, "CHANNEL-SECRET-hello");
      peer.write(peer.received[0] as Buffer);
      const error = await peer.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /^record 1 from the client failed authentication/);
      // Right key, binding and sequence number, only the direction byte of a server's record: refused.
      mirror.write(sealRecord(KEY, "k1", 1, 0, mirror.binding, frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["x"]))));
      const mirrored = await mirror.connectionError();
      assert.equal(mirrored.code, ErrorCode.UNAUTHENTICATED);
      assert.match(mirrored.message, /^record 0 from the client failed authentication/);
      assert.equal(runs(), 1, "only the channel ran");
    } finally {
      peer.destroy();
      mirror.destroy();
      await server.close();
    }
  });

  it("a record from another connection fails authentication there; its own connection goes on", async () => {
    const { server, port, runs } = await serve();
    const one = await CryptoPeer.open(port, KEY, "k1");
    const other = await CryptoPeer.open(port, KEY, "k1");
    try {
      // Record 0 of `one`, sent on `other`, where record 0 is due too: only the binding differs.
      other.write(sealRecord(KEY, "k1", 0, 0, one.binding, frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["x"]))));
      const error = await other.connectionError();
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /^record 0 from the client failed authentication/);
      assert.equal(runs(), 0);
      one.send(frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["fine"])));
      assert.equal((await one.next(FrameType.RESULT)).value, "fine");
    } finally {
      one.destroy();
      other.destroy();
      await server.close();
    }
  });

  it("a stale or future timestamp refuses the HELLO's proof; in a record (a sender that stalled, or whose clock stepped) it does not", async () => {
    const { server, port, runs } = await serve();
    const stale = await CryptoPeer.open(port, KEY, "k1");
    const future = await CryptoPeer.open(port, KEY, "k1");
    const raw = await RawPeer.connect(port);
    try {
      raw.write(frame(FrameType.HELLO, 0, 0, cryptoHello(KEY, "k1", undefined, { timestamp: Date.now() - 45_000 })));
      const refused = await raw.nextError();
      assert.equal(refused.code, ErrorCode.UNAUTHENTICATED);
      assert.match(refused.message, /the HELLO's crypto proof has a timestamp \d+ ms old/);
      await raw.expectClosed();
      assert.equal(runs(), 0);
      // Records 60 s old or ahead are taken: their order and authenticity
      // come from the sequence number, not the clock (PROTOCOL.md §13.3).
      const call = frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["x"]));
      stale.write(stale.record(call, { timestamp: Date.now() - 60_000 }));
      assert.equal((await stale.next(FrameType.RESULT)).value, "x");
      future.write(future.record(call, { timestamp: Date.now() + 60_000 }));
      assert.equal((await future.next(FrameType.RESULT)).value, "x");
      assert.equal(runs(), 2);
    } finally {
      stale.destroy();
      future.destroy();
      raw.destroy();
      await server.close();
    }
  });

  it("bytes sent before the WELCOME (held while an async authenticate runs) are read as records, and fail as record 0", async () => {
    const { server, port, runs } = await serve({
      authenticate: async () => {
        await sleep(50);
        return "user";
      },
    });
    try {
      const hello = cryptoHello(KEY, "k1");
      // A record sealed before the WELCOME exists cannot have its binding.
      const early = sealRecord(KEY, "k1", 0, 0, randomBytes(32), frame(FrameType.CALL, 0, 1, callPayload(["svc.echo"], ["x"])));
      const answer = await exchange(port, Buffer.concat([frame(FrameType.HELLO, 0, 0, hello), early]));
      const welcomeEnd = 10 + answer.readUInt32BE(0);
      const welcome = splitFrames(answer.subarray(0, welcomeEnd)).frames[0] as RawFrame;
      assert.equal(welcome.type, FrameType.WELCOME);
      const { frames } = splitFrames(openRecords(KEY, 1, sha256(hello, welcome.payload), [answer.subarray(welcomeEnd)]));
      const [code, message] = decode((frames[0] as RawFrame).payload) as [string, string];
      assert.deepEqual([frames[0]?.type, frames[0]?.streamId, code], [FrameType.ERROR, 0, ErrorCode.UNAUTHENTICATED]);
      assert.match(message, /^record 0 from the client failed authentication/);
      assert.equal(runs(), 0);
    } finally {
      await server.close();
    }
  });

  it("a record length above the maximum is refused at once, before its body is buffered", async () => {
    const { server, port } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      const length = Buffer.alloc(4);
      length.writeUInt32BE(MAX_RECORD_SIZE + 1);
      // Only the length and a few bytes: a server waiting for the body would never answer.
      peer.write(Buffer.concat([length, randomBytes(64)]));
      const error = await within(peer.connectionError(), 2000, "the refusal");
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /^record of 262437 bytes exceeds the maximum record size of 262436 bytes/);
      assert.deepEqual(error.data, { size: MAX_RECORD_SIZE + 1, limit: MAX_RECORD_SIZE });
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a record within the length limit but with more than 256 KiB of plaintext (a short key id leaves room) is refused", async () => {
    const { server, port, runs } = await serve();
    const peer = await CryptoPeer.open(port, KEY, "k1");
    try {
      // Valid frames, one byte too many for a record: a PING of the right size.
      const pingPayload = Buffer.alloc(MAX_RECORD_PLAINTEXT + 1 - 10);
      const record = peer.record(frame(FrameType.PING, 0, 0, pingPayload));
      assert.ok(record.length - 4 <= MAX_RECORD_SIZE, "within the length limit");
      peer.write(record);
      const error = await within(peer.connectionError(), 2000, "the refusal");
      assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
      assert.match(error.message, /^record 0 from the client carries 262145 bytes, more than the 262144 a record may hold/);
      assert.equal(runs(), 0);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("replay of a whole captured connection on a new socket: the HELLO's proof is refused, and the records fail elsewhere", async () => {
    const { server, port, runs } = await serve();
    const proxy = await FrameProxy.start(port);
    const c = client(proxy.address);
    try {
      assert.equal(await c.call("svc.echo", ["once"]), "once");
      await c.close();
      assert.equal(runs(), 1);
      const hello = (proxy.toServer[0] as { bytes: Buffer }).bytes;
      const records = proxy.recordsToServer.map((r) => r.bytes);
      const replay = await RawPeer.connect(port);
      replay.write(Buffer.concat([hello, ...records]));
      const error = await replay.nextError();
      assert.deepEqual([error.streamId, error.code], [0, ErrorCode.UNAUTHENTICATED]);
      assert.match(error.message, /the HELLO's crypto proof is a replay/);
      await replay.expectClosed();
      // With a fresh handshake of its own, the captured first record is still refused.
      const peer = await CryptoPeer.open(port, KEY, "k1");
      peer.write(records[0] as Buffer);
      const second = await peer.connectionError();
      assert.equal(second.code, ErrorCode.UNAUTHENTICATED);
      assert.match(second.message, /^record 0 from the client failed authentication/);
      peer.destroy();
      assert.equal(runs(), 1, "the replayed call never ran");
    } finally {
      c.destroy();
      await server.close();
      await proxy.close();
    }
  });

  it("records are bound to their connection: a session replayed to a server that forgot its nonces still fails, unreadably", async () => {
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
    // enough to pass, but its WELCOME differs, so the captured records'
    // binding does not match. HELLO and records go in one write: the server
    // switches to records in the middle of the chunk.
    const second = await serve();
    try {
      const hello = (proxy.toServer[0] as { bytes: Buffer }).bytes;
      const answer = await exchange(second.port, Buffer.concat([hello, ...proxy.recordsToServer.map((r) => r.bytes)]));
      assert.equal(splitFrames(answer).frames[0]?.type, FrameType.WELCOME);
      // The rest is one record (the sealed ERROR), which the replayer cannot read.
      const welcomeLength = 10 + answer.readUInt32BE(0);
      const after = answer.subarray(welcomeLength);
      assert.ok(after.length > 0 && after.readUInt32BE(0) === after.length - 4, "one record follows the WELCOME");
      assert.equal(after.includes("UNAUTHENTICATED"), false, "the connection error is sealed");
      assert.equal(second.runs(), 0);
    } finally {
      await second.server.close();
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

  it("a server that cannot prove it holds the key (a forged WELCOME); the client sends it nothing more, not even an ERROR in the clear", async () => {
    // A fake server: answers any HELLO with a WELCOME whose proof is sealed under another key.
    const afterHello: Buffer[] = [];
    let ended = false;
    const fake: NetServer = createServer((socket) => {
      socket.on("error", () => {});
      socket.on("end", () => {
        ended = true;
      });
      socket.once("data", (chunk: Buffer) => {
        const helloEnd = 10 + chunk.readUInt32BE(0);
        if (chunk.length > helloEnd) afterHello.push(chunk.subarray(helloEnd));
        socket.on("data", (more: Buffer) => afterHello.push(more));
        const hello = chunk.subarray(10, helloEnd);
        const context = { direction: 1, type: FrameType.WELCOME, streamId: 0, binding: sha256(hello) };
        const proof = sealProof(OTHER_KEY, "k1", context, new Uint8Array(0));
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
      // After an encrypted HELLO the server reads records only: a plaintext ERROR would be misread as a broken record.
      await waitFor(() => ended, 5000, "the client closing its side");
      assert.equal(Buffer.concat(afterHello).length, 0, "bytes the client sent after its HELLO");
    } finally {
      c.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });

  it("a server whose records do not authenticate", async () => {
    // A fake server with the key: a correct WELCOME, then a record sealed for the wrong sequence number.
    const fake: NetServer = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", (chunk: Buffer) => {
        const hello = chunk.subarray(10, 10 + chunk.readUInt32BE(0));
        const context = { direction: 1, type: FrameType.WELCOME, streamId: 0, binding: sha256(hello) };
        const proof = sealProof(KEY, "k1", context, new Uint8Array(0));
        const limits = (decode(hello) as { limits: unknown }).limits;
        const welcome = Buffer.from(encode({ version: 1, connectionId: "fake", limits, processors: { crypto: proof } }));
        const record = sealRecord(KEY, "k1", 1, 5, sha256(hello, welcome), frame(FrameType.PING, 0, 0, Buffer.alloc(8)));
        socket.write(Buffer.concat([frame(FrameType.WELCOME, 0, 0, welcome), record]));
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve));
    const address = fake.address();
    const c = client(`127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`);
    try {
      await within(
        rejectsWith(c.call("echo", [1]), ErrorCode.UNAUTHENTICATED, "record 0 from the server failed authentication"),
        5000,
        "the client refusing the server's record",
      );
    } finally {
      c.destroy();
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });
});
