import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { compression, crypto } from "../../src/plugin/index.js";
import { MAX_RECORD_PLAINTEXT, MAX_RECORD_SIZE } from "../../src/protocol/crypto-envelope.js";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import type { RecordTransform } from "../../src/protocol/processor.js";
import { ReplayCache } from "../../src/protocol/replay-cache.js";
import { ErrorCode, RpcError, Server } from "../../src/server/index.js";

function invalid(message: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.INVALID_ARGUMENT);
    assert.match(error.message, message);
    return true;
  };
}

describe("crypto() options", () => {
  const key = randomBytes(32);

  it("has documented defaults", () => {
    const processor = crypto({ keys: { a: key, b: randomBytes(32) } });
    assert.equal(processor.kind, "crypto");
    assert.deepEqual(processor.keyIds, ["a", "b"]);
    assert.equal(processor.keyId, "a", "the first key seals by default");
    assert.equal(processor.required, true);
    assert.equal(processor.timeout, 30_000);
    assert.equal(processor.replayCacheEntries, 0);
    assert.equal(crypto({ keys: { a: key, b: key }, keyId: "b" }).keyId, "b");
  });

  it("refuses bad keys and options with INVALID_ARGUMENT naming the problem", () => {
    assert.throws(() => crypto({ keys: {} }), invalid(/at least one key/));
    assert.throws(() => crypto({ keys: { a: randomBytes(16) } }), invalid(/crypto key "a" must be 32 bytes \(AES-256\), got 16 bytes/));
    assert.throws(() => crypto({ keys: { a: "not bytes" as unknown as Uint8Array } }), invalid(/got string/));
    assert.throws(() => crypto({ keys: { "": key } }), invalid(/key id "" must be 1 to 255 bytes/));
    assert.throws(() => crypto({ keys: { ["x".repeat(256)]: key } }), invalid(/must be 1 to 255 bytes/));
    assert.throws(() => crypto({ keys: { a: key }, keyId: "b" }), invalid(/keyId "b" is not one of the keys/));
    assert.throws(() => crypto({ keys: { a: key }, timeout: -1 }), invalid(/timeout/));
    assert.throws(() => crypto({ keys: { a: key }, replayCacheSize: 0 }), invalid(/replayCacheSize must be at least 1/));
    assert.throws(() => crypto({ keys: { a: key }, required: "yes" as unknown as boolean }), invalid(/required must be a boolean/));
    assert.throws(() => crypto(undefined as unknown as { keys: Record<string, Uint8Array> }), invalid(/must be an object/));
  });

  it("configure() swaps the ring at run time, keeping the sending key while the ring has it", () => {
    const processor = crypto({ keys: { a: key } });
    processor.configure({ keys: { b: randomBytes(32), a: key } });
    assert.deepEqual(processor.keyIds, ["b", "a"]);
    assert.equal(processor.keyId, "a");
    processor.configure({ keyId: "b", required: false });
    assert.equal(processor.keyId, "b");
    assert.equal(processor.required, false);
    processor.configure({ keys: { c: randomBytes(32) } });
    assert.equal(processor.keyId, "c", "a ring without the sending key seals with its first");
    assert.throws(() => processor.configure({ keys: { d: randomBytes(8) } }), invalid(/must be 32 bytes/));
    assert.deepEqual(processor.keyIds, ["c"], "a refused configure changes nothing");
  });

  it("servers and clients take at most one processor of each kind", () => {
    const one = crypto({ keys: { a: key } });
    assert.throws(
      () => new Server({ processors: [one, crypto({ keys: { a: key } })] }),
      invalid(/server processors: more than one crypto processor/),
    );
    assert.throws(() => new Client("127.0.0.1:1", { processors: [compression(), compression()] }), invalid(/more than one compression/));
    assert.throws(
      () => new Server({ processors: [{ kind: "zip" } as unknown as ReturnType<typeof compression>] }),
      invalid(/each entry must be a processor/),
    );
    assert.throws(() => new Server({ processors: one as unknown as [] }), invalid(/must be an array of processors/));
  });
});

describe("ReplayCache", () => {
  const t0 = 1_700_000_000_000;

  it("remembers nonces until their timestamp has left the window", () => {
    const cache = new ReplayCache({ maxEntries: 100, windowMs: 30_000 });
    cache.remember("n1", t0, t0);
    cache.remember("n2", t0 + 10_000, t0);
    assert.equal(cache.has("n1", t0 + 29_000), true);
    assert.equal(cache.has("n3", t0), false);
    // n1 expires 30 s after its timestamp; n2 (stamped 10 s later) lives on.
    assert.equal(cache.has("n1", t0 + 31_000), false);
    assert.equal(cache.has("n2", t0 + 31_000), true);
    cache.remember("n4", t0 + 31_000, t0 + 31_000);
    assert.equal(cache.size, 2, "the expired entry was dropped");
    assert.equal(cache.has("n2", t0 + 41_000), false);
  });

  it("refuses with RESOURCE_EXHAUSTED when full, storing nothing, and has room again once entries expire", () => {
    const cache = new ReplayCache({ maxEntries: 3, windowMs: 1000 });
    for (const nonce of ["a", "b", "c"]) cache.remember(nonce, t0, t0);
    assert.throws(
      () => cache.remember("d", t0, t0),
      (error: unknown) =>
        error instanceof RpcError &&
        error.code === ErrorCode.RESOURCE_EXHAUSTED &&
        /replay cache is full: 3 nonces seen within the 1000 ms timestamp window/.test(error.message),
    );
    assert.equal(cache.size, 3);
    assert.equal(cache.has("d", t0), false);
    cache.remember("d", t0 + 2500, t0 + 2500);
    assert.equal(cache.size, 1);
    cache.clear();
    assert.equal(cache.size, 0);
  });

  it("copes with a clock that jumps back: entries stay until their own expiry", () => {
    const cache = new ReplayCache({ maxEntries: 10, windowMs: 1000 });
    cache.remember("x", t0 + 5000, t0 + 5000);
    cache.remember("y", t0, t0);
    assert.equal(cache.has("x", t0), true);
    assert.equal(cache.has("y", t0 + 500), true);
  });
});

/** Both ends of one encrypted connection's record layer, made through the processor API as a handshake would. */
function recordPair(
  keys: Record<string, Uint8Array> = { k1: randomBytes(32) },
  welcomeText = "the WELCOME payload",
): { client: RecordTransform; server: RecordTransform; serverProcessor: ReturnType<typeof crypto> } {
  const codec = new MsgpackCodec();
  const clientProcessor = crypto({ keys });
  const serverProcessor = crypto({ keys });
  const hello = Buffer.from("the HELLO payload");
  const welcome = Buffer.from(welcomeText);
  const agreement = serverProcessor.accept(clientProcessor.offer(undefined, codec).value, hello, codec);
  assert.ok(agreement !== undefined);
  const confirmed = clientProcessor.confirm(agreement.answer, hello);
  assert.ok(confirmed !== undefined);
  const transcript = { hello, welcome, maxMessageSize: 1 << 20 };
  return {
    client: confirmed.start({ ...transcript, role: "client" }) as RecordTransform,
    server: agreement.start({ ...transcript, role: "server" }) as RecordTransform,
    serverProcessor,
  };
}

/** The bodies of the records that `chunks` (what seal() returned, to be written in order) hold, length prefixes checked and stripped. */
function bodies(chunks: readonly Uint8Array[]): Buffer[] {
  let bytes = Buffer.concat(chunks);
  const out: Buffer[] = [];
  for (let i = 0; i < 1000 && bytes.length > 0; i++) {
    const length = bytes.readUInt32BE(0);
    assert.ok(bytes.length >= 4 + length, "whole records only");
    out.push(bytes.subarray(4, 4 + length));
    bytes = bytes.subarray(4 + length);
  }
  return out;
}

function unauthenticated(message: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
    assert.match(error.message, message);
    return true;
  };
}

describe("the crypto record layer", () => {
  it("seals a write batch of several chunks into one record, and opens it to the same bytes", () => {
    const { client, server } = recordPair();
    const chunks = [Buffer.from("frame one"), Buffer.from("frame two"), Buffer.alloc(0), Buffer.from("three")];
    const records = client.seal(chunks);
    assert.equal(records.length, 1, "a small record comes as one buffer");
    assert.equal((records[0] as Uint8Array).length, 4 + 1 + 2 + 12 + 8 + 23 + 16, "length, envelope header, plaintext, tag");
    assert.equal(server.open(bodies(records)[0] as Buffer).toString(), "frame oneframe twothree");
    assert.deepEqual(client.seal([]), [], "an empty batch makes no record");
  });

  it("cuts a batch past 256 KiB into several records, a chunk straddling the cut going into both", () => {
    const { client, server } = recordPair();
    const chunks = [randomBytes(200 * 1024), randomBytes(300 * 1024), randomBytes(100)];
    const records = bodies(client.seal(chunks));
    assert.equal(records.length, 2);
    const plaintexts = records.map((body) => server.open(body));
    assert.deepEqual(
      plaintexts.map((p) => p.length),
      [MAX_RECORD_PLAINTEXT, 500 * 1024 + 100 - MAX_RECORD_PLAINTEXT],
    );
    assert.ok(Buffer.concat(plaintexts).equals(Buffer.concat(chunks)));
    assert.equal(MAX_RECORD_SIZE, MAX_RECORD_PLAINTEXT + 1 + 255 + 12 + 8 + 16);
  });

  it("numbers the records of each direction: a replayed or reordered record fails, naming its sequence number", () => {
    const replayed = recordPair();
    const [first] = bodies(replayed.client.seal([Buffer.from("a")]));
    replayed.server.open(first as Buffer);
    assert.throws(
      () => replayed.server.open(first as Buffer),
      (error: unknown) =>
        unauthenticated(/^record 1 from the client failed authentication: it was altered, replayed, reordered/)(error) &&
        (error as RpcError).data !== undefined &&
        ((error as RpcError).data as { sequence: number }).sequence === 1,
    );
    const reordered = recordPair();
    reordered.client.seal([Buffer.from("a")]);
    const [second] = bodies(reordered.client.seal([Buffer.from("b")]));
    assert.throws(() => reordered.server.open(second as Buffer), unauthenticated(/^record 0 from the client failed authentication/));
  });

  it("binds records to their direction: one sent back to its sender fails", () => {
    const { client, server } = recordPair();
    const [fromServer] = bodies(server.seal([Buffer.from("x")]));
    assert.throws(() => server.open(fromServer as Buffer), unauthenticated(/^record 0 from the client failed authentication/));
    assert.equal(client.open(fromServer as Buffer).toString(), "x", "the client opens what the server seals");
  });

  it("binds records to their connection's handshake: the same key and sequence number on another connection fail", () => {
    const keys = { k1: randomBytes(32) };
    const one = recordPair(keys, "WELCOME of one connection");
    const other = recordPair(keys, "WELCOME of another");
    const [record] = bodies(one.client.seal([Buffer.from("x")]));
    assert.throws(() => other.server.open(record as Buffer), unauthenticated(/^record 0 from the client failed authentication/));
    assert.equal(one.server.open(record as Buffer).toString(), "x");
  });

  it("checks the key id against the current ring, and the timestamp against the window", () => {
    const unknown = recordPair();
    const renamed = Buffer.from(bodies(unknown.client.seal([Buffer.from("x")]))[0] as Buffer);
    renamed[2] = 0x39; // key id "k1" becomes "k9"
    assert.throws(
      () => unknown.server.open(renamed),
      (error: unknown) =>
        unauthenticated(/^record 0 from the client is sealed under key id "k9", which this side does not have/)(error) &&
        JSON.stringify((error as RpcError).data) === JSON.stringify({ sequence: 0, keyId: "k9" }),
    );
    // A record's timestamp is not checked for age, but it is authenticated: changed, the record fails.
    const stale = recordPair();
    const old = Buffer.from(bodies(stale.client.seal([Buffer.from("x")]))[0] as Buffer);
    const at = 1 + 2 + 12; // the timestamp, after the key id and nonce
    old.writeBigUInt64BE(old.readBigUInt64BE(at) - 60_000n, at);
    assert.throws(() => stale.server.open(old), unauthenticated(/^record 0 from the client failed authentication/));
    // Sealed by a clock 60 s behind (or a receiver that stalled that long): opened.
    const behind = recordPair();
    const realNow = Date.now;
    Date.now = () => realNow() - 60_000;
    let sealed: Buffer;
    try {
      sealed = Buffer.from(bodies(behind.client.seal([Buffer.from("late")]))[0] as Buffer);
    } finally {
      Date.now = realNow;
    }
    assert.equal(behind.server.open(sealed).toString(), "late");
    const rotated = recordPair();
    rotated.serverProcessor.configure({ keys: { k2: randomBytes(32) } });
    const [later] = bodies(rotated.client.seal([Buffer.from("y")]));
    assert.throws(
      () => rotated.server.open(later as Buffer),
      unauthenticated(/is sealed under key id "k1", which this side does not have/),
    );
  });
});
