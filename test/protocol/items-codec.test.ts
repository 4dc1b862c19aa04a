import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encode } from "@msgpack/msgpack";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";
import { between, prng } from "./seeded-random.js";

const NOT_AN_ARRAY = "malformed ITEMS: the payload is not a MessagePack array";
const EMPTY = "malformed ITEMS: the array is empty";

/** Asserts a PROTOCOL_ERROR RpcError whose message is exactly `message` or matches `pattern`. */
function protocolError(expected: string | RegExp, data?: unknown): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RpcError, `expected an RpcError, got ${String(e)}`);
    assert.equal(e.code, ErrorCode.PROTOCOL_ERROR, e.message);
    if (typeof expected === "string") assert.equal(e.message, expected);
    else assert.match(e.message, expected);
    if (data !== undefined) assert.deepEqual(e.data, data);
    return true;
  };
}

/** The three array headers MessagePack has, for `n` elements. */
function fixarray(n: number): Buffer {
  assert.ok(n <= 15);
  return Buffer.from([0x90 | n]);
}

function array16(n: number): Buffer {
  const out = Buffer.alloc(3);
  out[0] = 0xdc;
  out.writeUInt16BE(n, 1);
  return out;
}

function array32(n: number): Buffer {
  const out = Buffer.alloc(5);
  out[0] = 0xdd;
  out.writeUInt32BE(n, 1);
  return out;
}

/** An ITEMS payload: `header` followed by the encodings of `values`. */
function items(header: Buffer, values: unknown[]): Buffer {
  return Buffer.concat([header, ...values.map((v) => Buffer.from(encode(v)))]);
}

/** `n` nested one-element arrays around nil (fixarray 1 = 0x91, nil = 0xc0). */
function nestedBytes(n: number): Buffer {
  const out = Buffer.alloc(n + 1, 0x91);
  out[n] = 0xc0;
  return out;
}

function nested(n: number): unknown {
  let value: unknown = null;
  for (let i = 0; i < n; i++) value = [value];
  return value;
}

describe("MsgpackCodec.decodeItems", () => {
  const codec = new MsgpackCodec();
  const values: unknown[] = [1, "two", { three: [3, 3, 3] }, null, Buffer.from([4, 4]), -5.5, true, [], {}, "x".repeat(300)];

  it("decodes a fixarray, an array16 and an array32 of items, in order", () => {
    for (const [name, header] of [
      ["fixarray", fixarray(values.length)],
      ["array16", array16(values.length)],
      ["array32", array32(values.length)],
    ] as const) {
      assert.deepEqual(codec.decodeItems(items(header, values), 1024), values, name);
    }
    // The forms the encoder picks for 1, 15 (the largest fixarray), 16, 65,535 and 65,536 items.
    for (const n of [1, 15, 16, 65_535, 65_536]) {
      const list = Array.from({ length: n }, (_, i) => i);
      const payload = Buffer.from(encode(list));
      assert.equal(payload[0], n < 16 ? 0x90 | n : n < 65_536 ? 0xdc : 0xdd, `${n} items`);
      assert.deepEqual(codec.decodeItems(payload, 65_536), list, `${n} items`);
    }
  });

  it("decodes rapt's extension types inside items", () => {
    const date = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6));
    const payload = Buffer.concat([array32(2), codec.encode(date), codec.encode(12345678901234567890n)]);
    assert.deepEqual(codec.decodeItems(payload, 2), [date, 12345678901234567890n]);
  });

  it("takes exactly maxItems items and refuses one more, naming both, before decoding any item", () => {
    for (const maxItems of [1, 2, 15, 16, 1024]) {
      const list = Array.from({ length: maxItems }, (_, i) => `item ${i}`);
      for (const header of maxItems < 15 ? [fixarray, array16, array32] : [array16, array32]) {
        assert.deepEqual(codec.decodeItems(items(header(maxItems), list), maxItems), list, `${maxItems} of ${maxItems}`);
        assert.throws(
          () => codec.decodeItems(items(header(maxItems + 1), [...list, "one more"]), maxItems),
          protocolError(`ITEMS of ${maxItems + 1} items exceeds maxBatchItems (${maxItems})`, { count: maxItems + 1, limit: maxItems }),
          `${maxItems + 1} of ${maxItems}`,
        );
      }
    }
    // The count is checked from the header alone: the items behind it are garbage, or missing.
    assert.throws(
      () => codec.decodeItems(Buffer.concat([array16(2000), Buffer.from([0xc1, 0xc1])]), 1024),
      protocolError("ITEMS of 2000 items exceeds maxBatchItems (1024)"),
    );
    assert.throws(() => codec.decodeItems(array32(70_000), 1024), protocolError("ITEMS of 70000 items exceeds maxBatchItems (1024)"));
  });

  it("reads the largest counts as unsigned", () => {
    assert.throws(() => codec.decodeItems(array16(0xffff), 1024), protocolError("ITEMS of 65535 items exceeds maxBatchItems (1024)"));
    assert.throws(
      () => codec.decodeItems(array32(0xffff_ffff), 1024),
      protocolError("ITEMS of 4294967295 items exceeds maxBatchItems (1024)", { count: 0xffff_ffff, limit: 1024 }),
    );
    assert.throws(
      () => codec.decodeItems(array32(0x8000_0000), 0x7fff_ffff),
      protocolError("ITEMS of 2147483648 items exceeds maxBatchItems (2147483647)"),
    );
  });

  it("refuses an empty array in each form", () => {
    for (const header of [fixarray(0), array16(0), array32(0)]) {
      assert.throws(() => codec.decodeItems(header, 1024), protocolError(EMPTY), header.toString("hex"));
    }
  });

  it("refuses a payload that is not a MessagePack array", () => {
    const cases: Array<[string, Buffer]> = [
      ["empty payload", Buffer.alloc(0)],
      ["positive fixint", Buffer.from([0x01])],
      ["nil", Buffer.from([0xc0])],
      ["fixstr", Buffer.from(encode("items"))],
      ["str 8", Buffer.from(encode("x".repeat(40)))],
      ["bin", Buffer.from(encode(new Uint8Array(3)))],
      ["fixmap", Buffer.from(encode({ a: 1 }))],
      ["map 16", Buffer.from([0xde, 0x00, 0x01, 0x01, 0x02])],
      ["float", Buffer.from(encode(1.5))],
      ["negative fixint", Buffer.from([0xff])],
      ["never used (0xc1)", Buffer.from([0xc1, 0x91, 0x01])],
      ["ext", Buffer.from([0xd4, 0x01, 0x00])],
      // An array header cut short reads as no array.
      ["array16, one count byte", Buffer.from([0xdc, 0x00])],
      ["array16, no count", Buffer.from([0xdc])],
      ["array32, three count bytes", Buffer.from([0xdd, 0x00, 0x00, 0x01])],
      ["array32, no count", Buffer.from([0xdd])],
    ];
    for (const [name, payload] of cases) {
      assert.throws(() => codec.decodeItems(payload, 1024), protocolError(NOT_AN_ARRAY), name);
    }
  });

  it("refuses truncated items and bytes after the array with PROTOCOL_ERROR", () => {
    const whole = items(array32(3), ["a", { b: [1, 2] }, "c".repeat(100)]);
    assert.equal(codec.decodeItems(whole, 3).length, 3);
    // Every cut that keeps the header: too few items, or an item cut off.
    for (let cut = 5; cut < whole.length; cut++) {
      assert.throws(() => codec.decodeItems(whole.subarray(0, cut), 3), protocolError(/^malformed MessagePack/), `cut at ${cut}`);
    }
    assert.throws(() => codec.decodeItems(items(fixarray(2), [1]), 3), protocolError(/^malformed MessagePack/), "a missing item");
    assert.throws(
      () => codec.decodeItems(Buffer.concat([whole, Buffer.from([0x01])]), 3),
      protocolError(/^malformed MessagePack/),
      "a byte after the array",
    );
    assert.throws(() => codec.decodeItems(items(fixarray(2), [1, 2, 3]), 3), protocolError(/^malformed MessagePack/), "an extra item");
    assert.throws(
      () => codec.decodeItems(Buffer.from([0x92, 0x01, 0xc1]), 3),
      protocolError(/^malformed MessagePack/),
      "a never-used byte as an item",
    );
  });

  it("does not count the array as a level: an item may nest exactly maxDepth deep, one deeper is refused", () => {
    for (const maxDepth of [64, 3, 1]) {
      const limited = new MsgpackCodec({ maxDepth });
      // Alone, maxDepth levels decode and maxDepth + 1 do not.
      assert.deepEqual(limited.decode(nestedBytes(maxDepth)), nested(maxDepth));
      assert.throws(() => limited.decode(nestedBytes(maxDepth + 1)), protocolError(/nested deeper than/), `decode, maxDepth ${maxDepth}`);
      // As ITEMS: the same items, each as deep as alone.
      const deepest = Buffer.concat([array32(3), nestedBytes(maxDepth), Buffer.from([0x07]), nestedBytes(maxDepth)]);
      assert.deepEqual(limited.decodeItems(deepest, 3), [nested(maxDepth), 7, nested(maxDepth)], `ITEMS, maxDepth ${maxDepth}`);
      assert.deepEqual(limited.decodeItems(Buffer.concat([fixarray(1), nestedBytes(maxDepth)]), 3), [nested(maxDepth)]);
      // The same bytes are one level too deep for a plain decode.
      assert.throws(() => limited.decode(deepest), protocolError(/nested deeper than/), `plain decode of ITEMS, maxDepth ${maxDepth}`);
      const tooDeep = Buffer.concat([array32(2), Buffer.from([0x07]), nestedBytes(maxDepth + 1)]);
      // The message names the configured limit, not the one level ITEMS adds.
      assert.throws(
        () => limited.decodeItems(tooDeep, 3),
        protocolError(new RegExp(`nested deeper than ${maxDepth} levels`)),
        `ITEMS, maxDepth ${maxDepth} + 1`,
      );
      // A map counts as a level like an array.
      const deepMap = Buffer.concat([fixarray(1), Buffer.alloc(maxDepth, 0x91), Buffer.from([0x81, 0xa1, 0x6b, 0xc0])]);
      assert.throws(() => limited.decodeItems(deepMap, 3), protocolError(/nested deeper than/), `a map below maxDepth arrays`);
    }
  });

  it("leaves the plain decode's depth limit as it was after decodeItems, whether it succeeded or failed", () => {
    const maxDepth = 5;
    const limited = new MsgpackCodec({ maxDepth });
    const check = (after: string): void => {
      assert.deepEqual(limited.decode(nestedBytes(maxDepth)), nested(maxDepth), after);
      assert.throws(() => limited.decode(nestedBytes(maxDepth + 1)), protocolError(/nested deeper than 5 levels/), after);
    };
    check("before");
    limited.decodeItems(Buffer.concat([fixarray(1), nestedBytes(maxDepth)]), 1);
    check("after a good ITEMS");
    assert.throws(() => limited.decodeItems(Buffer.concat([fixarray(1), nestedBytes(maxDepth + 1)]), 1), protocolError(/deeper/));
    check("after an ITEMS too deep");
    assert.throws(() => limited.decodeItems(Buffer.from([0x92, 0x91, 0x01]), 2), protocolError(/^malformed MessagePack/));
    check("after a truncated ITEMS");
    assert.throws(() => limited.decodeItems(Buffer.concat([fixarray(1), Buffer.from([0xd4, 0x55, 0x00])]), 1), protocolError(/extension/));
    check("after an ITEMS with an unknown extension");
    assert.throws(() => limited.decodeItems(array16(3), 2), protocolError(/exceeds maxBatchItems/));
    check("after an ITEMS of too many items");
  });

  it("keeps the codec's other limits on the items and on the array", () => {
    const limited = new MsgpackCodec({ maxArrayLength: 4, maxStrLength: 8 });
    assert.deepEqual(limited.decodeItems(items(fixarray(4), [1, 2, 3, "12345678"]), 10), [1, 2, 3, "12345678"]);
    assert.throws(() => limited.decodeItems(items(fixarray(5), [1, 2, 3, 4, 5]), 10), protocolError(/^malformed MessagePack/));
    assert.throws(() => limited.decodeItems(items(fixarray(1), ["123456789"]), 10), protocolError(/^malformed MessagePack/));
  });

  it("on seeded random bytes, either returns 1 to maxItems items or throws PROTOCOL_ERROR", () => {
    const rand = prng(20261122);
    const maxItems = 8;
    let decoded = 0;
    for (let i = 0; i < 5000; i++) {
      const length = between(rand, 0, 40);
      const bytes = Buffer.alloc(length);
      for (let j = 0; j < length; j++) bytes[j] = Math.floor(rand() * 256);
      // Half start as an array, so the decoder gets past the header.
      if (length > 0 && rand() < 0.5) bytes[0] = 0x90 | between(rand, 0, 10);
      let result: unknown;
      try {
        result = codec.decodeItems(bytes, maxItems);
      } catch (e) {
        assert.ok(e instanceof RpcError && e.code === ErrorCode.PROTOCOL_ERROR, `${bytes.toString("hex")}: ${String(e)}`);
        continue;
      }
      assert.ok(Array.isArray(result), bytes.toString("hex"));
      assert.ok(result.length >= 1 && result.length <= maxItems, `${bytes.toString("hex")}: ${result.length} items`);
      decoded++;
    }
    assert.ok(decoded > 0, "some random inputs are valid ITEMS");
  });
});
