import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EXT_BIGINT, MsgpackCodec, sharedCodec } from "../../src/protocol/msgpack-codec.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";

function rejects(code: ErrorCode, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RpcError, `expected an RpcError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

const protocolError = (pattern?: RegExp) => rejects(ErrorCode.PROTOCOL_ERROR, pattern);

/** `n` nested one-element arrays around `leaf`, as MessagePack bytes (fixarray 1 = 0x91). */
function nestedArrayBytes(n: number, leaf: number): Buffer {
  const out = Buffer.alloc(n + 1, 0x91);
  out[n] = leaf;
  return out;
}

function nested(n: number, leaf: unknown): unknown {
  let value = leaf;
  for (let i = 0; i < n; i++) value = [value];
  return value;
}

/** An ext 8 (0xc7) or, past 255 bytes, ext 16 (0xc8) value: header, type, `data`. */
function ext8(type: number, data: Buffer): Buffer {
  if (data.length > 0xff) return Buffer.concat([Buffer.from([0xc8, data.length >>> 8, data.length & 0xff, type & 0xff]), data]);
  return Buffer.concat([Buffer.from([0xc7, data.length, type & 0xff]), data]);
}

describe("MsgpackCodec", () => {
  it("round-trips nested objects, arrays, strings and numbers", () => {
    const codec = new MsgpackCodec();
    const value = {
      name: "rapt ✓ 日本",
      empty: "",
      n: [0, 1, -1, 127, 128, -33, 65535, 2 ** 32, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, 1.5, -0.25, 1e300],
      flags: [true, false, null],
      deep: { a: { b: { c: [{ d: [] }, {}] } } },
      long: "x".repeat(70_000),
    };
    assert.deepEqual(codec.decode(codec.encode(value)), value);
  });

  it("round-trips binary as Uint8Array", () => {
    const codec = new MsgpackCodec();
    const bytes = new Uint8Array(300);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
    const decoded = codec.decode(codec.encode({ bytes, buffer: Buffer.from("abc"), empty: new Uint8Array(0) })) as Record<
      string,
      Uint8Array
    >;
    for (const [key, expected] of [
      ["bytes", bytes],
      ["buffer", Buffer.from("abc")],
      ["empty", new Uint8Array(0)],
    ] as const) {
      const actual = decoded[key];
      assert.ok(actual instanceof Uint8Array, `${key} decodes as a Uint8Array`);
      assert.deepEqual(Buffer.from(actual), Buffer.from(expected), key);
    }
  });

  it("round-trips Date with millisecond precision", () => {
    const codec = new MsgpackCodec();
    for (const ms of [
      0, 1, 999, 1_700_000_000_123, -1, -1_000, -86_400_001, 8_640_000_000_000_000, -8_640_000_000_000_000, 17_179_869_184_001,
    ]) {
      const decoded = codec.decode(codec.encode([new Date(ms)])) as unknown[];
      assert.ok(decoded[0] instanceof Date, `${ms}: a Date`);
      assert.equal((decoded[0] as Date).getTime(), ms);
    }
  });

  it("rejects an Invalid Date with INVALID_ARGUMENT instead of sending the epoch", () => {
    const codec = new MsgpackCodec();
    assert.throws(() => codec.encode({ when: new Date(Number.NaN) }), rejects(ErrorCode.INVALID_ARGUMENT, /Invalid Date/));
  });

  it("round-trips BigInt: zero, positive, negative and beyond 64 bits", () => {
    const codec = new MsgpackCodec();
    const values = [0n, 1n, -1n, 2n ** 63n, -(2n ** 63n), 2n ** 64n + 1n, -(2n ** 200n) - 7n, 10n ** 999n, -(10n ** 1000n - 1n)];
    const decoded = codec.decode(codec.encode({ values })) as { values: unknown[] };
    assert.deepEqual(decoded.values, values);
    for (const v of decoded.values) assert.equal(typeof v, "bigint");
    // As extension type 1 carrying decimal digits.
    assert.deepEqual(codec.encode(-12n), ext8(EXT_BIGINT, Buffer.from("-12")));
    // The examples of PROTOCOL.md, section 7.1.
    assert.deepEqual(codec.encode(2n), Buffer.from("d40132", "hex"));
    assert.deepEqual(codec.encode(-42n), Buffer.from("c703012d3432", "hex"));
    assert.deepEqual(
      codec.encode(-12345678901234567890n),
      Buffer.concat([Buffer.from("c71501", "hex"), Buffer.from("-12345678901234567890")]),
    );
  });

  it("refuses to encode a BigInt with more digits than a peer accepts", () => {
    const codec = new MsgpackCodec();
    assert.throws(() => codec.encode(10n ** 1000n), rejects(ErrorCode.INVALID_ARGUMENT, /1001 digits/));
    assert.throws(() => codec.encode([-(10n ** 1000n)]), rejects(ErrorCode.INVALID_ARGUMENT, /1001 digits/));
  });

  it("turns undefined into null at the top level, in arrays and in objects", () => {
    const codec = new MsgpackCodec();
    assert.equal(codec.decode(codec.encode(undefined)), null);
    assert.deepEqual(codec.decode(codec.encode([1, undefined, 3])), [1, null, 3]);
    // The key is kept, with a null value (not dropped).
    assert.deepEqual(codec.decode(codec.encode({ a: undefined, b: 1 })), { a: null, b: 1 });
    assert.equal(codec.decode(codec.encode(null)), null);
  });

  it("rejects functions and symbols with INVALID_ARGUMENT, and stays usable", () => {
    const codec = new MsgpackCodec();
    for (const bad of [() => 1, Symbol("s"), { f: () => 1 }, [1, Symbol("t")]]) {
      assert.throws(() => codec.encodeShared(bad), rejects(ErrorCode.INVALID_ARGUMENT, /cannot be encoded/));
    }
    assert.deepEqual(codec.decode(codec.encode({ ok: [1, 2] })), { ok: [1, 2] });
  });

  it("rejects a cyclic value with INVALID_ARGUMENT", () => {
    const codec = new MsgpackCodec();
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    assert.throws(() => codec.encode(cyclic), rejects(ErrorCode.INVALID_ARGUMENT));
  });

  it("encodeShared returns a view that the next encode reuses; encode returns an owned copy", () => {
    const codec = new MsgpackCodec();
    const owned = codec.encode("first");
    const shared = codec.encodeShared("first");
    assert.deepEqual(Buffer.from(shared), owned);
    codec.encodeShared("other");
    assert.equal(codec.decode(owned), "first");
  });

  it("rejects length headers beyond the limits before reading the body", () => {
    const codec = new MsgpackCodec({ maxStrLength: 100, maxBinLength: 100, maxArrayLength: 100, maxMapLength: 100, maxExtLength: 100 });
    const cases: [string, Buffer, RegExp][] = [
      // str 32 / bin 32 / array 32 / map 32 / ext 32 claiming 4 GiB with no body at all.
      ["str", Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff]), /maxStrLength/],
      ["bin", Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff]), /maxBinLength/],
      ["array", Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), /maxArrayLength/],
      ["map", Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]), /map length/],
      ["ext", Buffer.from([0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]), /maxExtLength/],
      // Just over the limit (101), as str 8 and array 16.
      ["str 101", Buffer.from([0xd9, 101]), /maxStrLength/],
      ["array 101", Buffer.from([0xdc, 0x00, 101]), /maxArrayLength/],
    ];
    for (const [what, bytes, pattern] of cases) assert.throws(() => codec.decode(bytes), protocolError(pattern), what);
    // At the limit it is fine.
    assert.equal(codec.decode(codec.encode("s".repeat(100))), "s".repeat(100));
    assert.equal((codec.decode(codec.encode(new Array(100).fill(1))) as unknown[]).length, 100);
  });

  it("applies the default limits", () => {
    const codec = new MsgpackCodec();
    // A 65 MiB string header (default limit 64 MiB) and a 1,000,001-element array header.
    assert.throws(() => codec.decode(Buffer.from([0xdb, 0x04, 0x10, 0x00, 0x00])), protocolError(/maxStrLength/));
    assert.throws(() => codec.decode(Buffer.from([0xdd, 0x00, 0x0f, 0x42, 0x41])), protocolError(/maxArrayLength/));
    assert.throws(() => codec.decode(Buffer.from([0xdf, 0x00, 0x01, 0x86, 0xa1])), protocolError(/map length/));
  });

  it("rejects 100,000 nested arrays with PROTOCOL_ERROR naming the depth", () => {
    const codec = new MsgpackCodec();
    assert.throws(() => codec.decode(nestedArrayBytes(100_000, 0xc0)), protocolError(/nested deeper than 64 levels/));
    // The same for maps: {"": {"": ...}}.
    const maps = Buffer.alloc(3 * 100_000 + 1);
    for (let i = 0; i < 100_000; i++) maps.set([0x81, 0xa1, 0x61], 3 * i);
    maps[3 * 100_000] = 0xc0;
    assert.throws(() => codec.decode(maps), protocolError(/nested deeper than 64 levels/));
  });

  it("decodes up to the depth limit, and encodes exactly what it decodes", () => {
    for (const maxDepth of [64, 3]) {
      const codec = new MsgpackCodec({ maxDepth });
      assert.deepEqual(codec.decode(nestedArrayBytes(maxDepth, 0xc0)), nested(maxDepth, null));
      assert.throws(() => codec.decode(nestedArrayBytes(maxDepth + 1, 0xc0)), protocolError(new RegExp(`deeper than ${maxDepth}`)));
      // Depth agrees on both sides: a value is encodable exactly when its bytes decode.
      for (let n = maxDepth - 2; n <= maxDepth + 2; n++) {
        for (const [leaf, byte] of [
          [1, 0x01],
          [[], 0x90],
          [{}, 0x80],
        ] as const) {
          let decodes = true;
          try {
            codec.decode(nestedArrayBytes(n, byte));
          } catch {
            decodes = false;
          }
          let encodes = true;
          try {
            assert.deepEqual(codec.encode(nested(n, leaf)), nestedArrayBytes(n, byte));
          } catch (e) {
            assert.ok(e instanceof RpcError && e.code === ErrorCode.INVALID_ARGUMENT, String(e));
            encodes = false;
          }
          assert.equal(encodes, decodes, `maxDepth ${maxDepth}, ${n} arrays around ${JSON.stringify(leaf)}`);
        }
      }
    }
  });

  it("works after a decode error (decoder state is reset)", () => {
    const codec = new MsgpackCodec();
    assert.throws(() => codec.decode(nestedArrayBytes(1000, 0xc0)), protocolError());
    assert.deepEqual(codec.decode(codec.encode([[1], { a: [2] }])), [[1], { a: [2] }]);
    // An error in the middle of a map, then a map.
    assert.throws(() => codec.decode(Buffer.from([0x82, 0xa1, 0x61, 0x01, 0xa1])), protocolError());
    assert.deepEqual(codec.decode(codec.encode({ x: 1, y: 2 })), { x: 1, y: 2 });
    assert.throws(() => codec.decode(ext8(EXT_BIGINT, Buffer.from("x"))), protocolError());
    assert.equal(codec.decode(codec.encode(5n)), 5n);
  });

  it("rejects malformed bytes with PROTOCOL_ERROR", () => {
    const codec = new MsgpackCodec();
    const good = codec.encode({ a: [1, "two", 3.5], b: new Uint8Array([1, 2]) });
    const cases: [string, Buffer][] = [
      ["empty input", Buffer.alloc(0)],
      ["reserved 0xc1", Buffer.from([0xc1])],
      ["trailing byte", Buffer.concat([good, Buffer.from([0xc0])])],
      ["two values", Buffer.from([0x01, 0x02])],
      ["truncated str", Buffer.from([0xa5, 0x61, 0x62])],
      ["truncated uint32", Buffer.from([0xce, 0x00, 0x01])],
      ["truncated array", Buffer.from([0x93, 0x01, 0x02])],
      ["map key without value", Buffer.from([0x81, 0xa1, 0x61])],
      ["non-string map key", Buffer.from([0x81, 0x90, 0x01])],
      ["__proto__ key", Buffer.from([0x81, 0xa9, ...Buffer.from("__proto__"), 0x80])],
      ["bad timestamp length", ext8(0xff, Buffer.from([1, 2, 3]))],
    ];
    for (let cut = 1; cut < good.length; cut++) cases.push([`truncated at ${cut}`, good.subarray(0, cut)]);
    for (const [what, bytes] of cases) assert.throws(() => codec.decode(bytes), protocolError(), what);
  });

  it("rejects malformed BigInt extension payloads", () => {
    const codec = new MsgpackCodec();
    for (const text of ["", "-", "+5", " 5", "5 ", "1e3", "0x10", "١٢", "1".repeat(1001), `-${"9".repeat(1001)}`]) {
      assert.throws(() => codec.decode(ext8(EXT_BIGINT, Buffer.from(text, "utf8"))), protocolError(/BigInt/), JSON.stringify(text));
    }
    assert.equal(codec.decode(ext8(EXT_BIGINT, Buffer.from("-0"))), 0n);
    assert.equal(codec.decode(ext8(EXT_BIGINT, Buffer.from("9".repeat(1000)))), 10n ** 1000n - 1n);
  });

  it("rejects extension types it does not know instead of passing them on", () => {
    const codec = new MsgpackCodec();
    for (const type of [0x00, 0x02, 0x7f, 0xfe]) {
      assert.throws(() => codec.decode(Buffer.from([0xd4, type, 0x00])), protocolError(/extension type/), `type ${type}`);
    }
  });

  it("rejects a timestamp outside the range of a Date", () => {
    const codec = new MsgpackCodec();
    // timestamp 96: nanoseconds 0, seconds 2^62.
    const bytes = Buffer.from([0xc7, 12, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0]);
    assert.throws(() => codec.decode(bytes), protocolError(/timestamp/));
  });
});

describe("sharedCodec", () => {
  it("returns one codec per set of limits, and applies the limits it was asked for", () => {
    const a = sharedCodec({ maxStrLength: 10, maxBinLength: 10 });
    assert.equal(sharedCodec({ maxStrLength: 10, maxBinLength: 10 }), a);
    const b = sharedCodec({ maxStrLength: 20, maxBinLength: 10 });
    assert.notEqual(b, a);
    const fifteen = new MsgpackCodec().encode("x".repeat(15));
    assert.throws(() => a.decode(fifteen), protocolError());
    assert.equal(b.decode(fifteen), "x".repeat(15));
  });

  it("does not grow past a few limit sets: later ones get a codec of their own", () => {
    const codecs = Array.from({ length: 40 }, (_, i) => sharedCodec({ maxArrayLength: 1000 + i }));
    // Each is correct for its limits, whether cached or not.
    const big = new MsgpackCodec().encode(Array.from({ length: 1020 }, () => 0));
    assert.throws(() => (codecs[0] as MsgpackCodec).decode(big), protocolError());
    assert.equal(((codecs[39] as MsgpackCodec).decode(big) as unknown[]).length, 1020);
    assert.notEqual(sharedCodec({ maxArrayLength: 1039 }), codecs[39]);
  });
});
