import assert from "node:assert/strict";
import { createSecretKey, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Client } from "../../src/client/index.js";
import { compression, crypto } from "../../src/plugin/index.js";
import { Direction, aadPrefix, openEnvelope, readEnvelopeHeader, setAadFrame } from "../../src/protocol/crypto-envelope.js";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
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

describe("the sealed CALL of PROTOCOL.md §13.7", () => {
  it("opens to the CALL of §11.3 with the documented key, nonce, timestamp and binding", () => {
    const doc = readFileSync(fileURLToPath(new URL("../../../PROTOCOL.md", import.meta.url)), "utf8");
    const section = doc.slice(doc.indexOf("### 13.7"));
    const dump = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
    const hex = dump
      .split("\n")
      .map((line) => line.slice(10, 58).replace(/ /g, ""))
      .join("");
    const bytes = Buffer.from(hex, "hex");
    assert.equal(bytes.length, 66, "the dump holds the 10-byte header and 56 bytes of payload");
    assert.deepEqual([bytes.readUInt32BE(0), bytes[4], bytes[5], bytes.readUInt32BE(6)], [56, FrameType.CALL, FrameFlag.ENCRYPTED, 1]);
    const payload = bytes.subarray(10);
    const header = readEnvelopeHeader(payload, "the example");
    assert.deepEqual([header.keyId, header.timestamp, header.length], ["k1", 1_767_225_600_000, 23]);
    const key = createSecretKey(Buffer.from(Array.from({ length: 32 }, (_, i) => i)));
    const prefix = setAadFrame(aadPrefix(Direction.CLIENT_TO_SERVER, Buffer.alloc(32, 0xab)), FrameType.CALL, FrameFlag.ENCRYPTED, 1);
    const plaintext = openEnvelope(key, prefix, payload, header, "the example");
    assert.equal(plaintext.toString("hex"), "0000000a91a863616c632e616464920102");
    // The same bytes under another binding (another connection) do not open.
    const elsewhere = setAadFrame(aadPrefix(Direction.CLIENT_TO_SERVER, Buffer.alloc(32, 0xac)), FrameType.CALL, FrameFlag.ENCRYPTED, 1);
    assert.throws(
      () => openEnvelope(key, elsewhere, payload, header, "the example"),
      (error: unknown) => error instanceof RpcError && error.code === ErrorCode.UNAUTHENTICATED,
    );
  });
});
