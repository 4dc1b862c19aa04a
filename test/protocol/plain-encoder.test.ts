import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Encoder } from "@msgpack/msgpack";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { PlainEncoder } from "../../src/protocol/plain-encoder.js";
import { NUMBERS, STRINGS, randomPlainValue } from "./random-values.js";
import { between, prng } from "./seeded-random.js";

/** The general encoder as the codec configures it (maxDepth 64 → 65 levels with the leaf). */
const general = new Encoder({ maxDepth: 65, ignoreUndefined: false });

function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

/** PlainEncoder: byte for byte what @msgpack/msgpack writes, for the values it takes. */
describe("PlainEncoder", () => {
  it("writes every number and string form exactly as the general encoder", () => {
    const plain = new PlainEncoder(65);
    for (const value of [
      ...NUMBERS,
      ...STRINGS,
      true,
      false,
      null,
      undefined,
      new Uint8Array(0),
      Buffer.alloc(300, 7),
      Buffer.alloc(70_000, 1),
    ]) {
      const ours = plain.encode(value);
      assert.ok(ours !== undefined, `took ${String(value).slice(0, 20)}`);
      assert.deepEqual(Buffer.from(ours), Buffer.from(general.encode(value)), `encoding of ${String(value).slice(0, 20)}`);
    }
  });

  it("matches the general encoder on 3,000 seeded random plain values, through encode and encodeInto", () => {
    const rand = prng(0x5eed);
    const plain = new PlainEncoder(65);
    const target = Buffer.alloc(1 << 20);
    for (let run = 0; run < 3000; run++) {
      const value = randomPlainValue(rand);
      const expected = Buffer.from(general.encode(value));
      const ours = plain.encode(value);
      assert.ok(ours !== undefined, `run ${run}: a plain value was refused`);
      assert.deepEqual(Buffer.from(ours), expected, `run ${run}`);
      const offset = between(rand, 0, 100);
      const written = plain.encodeInto(value, target, offset, target.length);
      assert.equal(written, expected.length, `run ${run}: encodeInto length`);
      assert.deepEqual(target.subarray(offset, offset + written), expected, `run ${run}: encodeInto bytes`);
    }
  });

  it("gives up on what only the general encoder knows: Date, BigInt, class instances, other typed arrays, wide integers, functions", () => {
    const plain = new PlainEncoder(65);
    class Point {
      x = 1;
    }
    const refused: unknown[] = [
      new Date(0),
      1n,
      new Point(),
      new Map([[1, 2]]),
      new Uint16Array(2),
      2 ** 40,
      -(2 ** 40),
      () => 1,
      Symbol("s"),
      { nested: [1, { deep: new Date(0) }] },
    ];
    for (const value of refused) {
      assert.equal(plain.encode(value), undefined, `refused ${Object.prototype.toString.call(value)}`);
      assert.equal(plain.encodeInto(value, Buffer.alloc(64), 0, 64), -1);
    }
    // The codec falls back to the general encoder for them, with the same bytes.
    const codec = new MsgpackCodec();
    for (const value of [new Date(5), { at: new Date(5) }, 2 ** 40, new Point()]) {
      assert.deepEqual(codec.decode(codec.encodeShared(value)), value instanceof Point ? { x: 1 } : value);
    }
  });

  it("refuses past the depth limit as the general encoder does (the codec then reports INVALID_ARGUMENT)", () => {
    const plain = new PlainEncoder(65);
    assert.ok(plain.encode(nested(64)) !== undefined, "64 arrays around a leaf: 65 levels");
    assert.equal(plain.encode(nested(65)), undefined);
    assert.throws(() => general.encode(nested(65)));
    const codec = new MsgpackCodec();
    assert.throws(
      () => codec.encodeShared(nested(65)),
      (e: unknown) => (e as { code?: string }).code === "INVALID_ARGUMENT",
    );
  });

  it("encodeInto stays within [offset, end) and reports -1 when the value does not fit", () => {
    const plain = new PlainEncoder(65);
    const value = { seq: 12_345, value: "item", list: [1, 2, 3], text: "é".repeat(40) };
    const expected = Buffer.from(general.encode(value));
    for (let room = 0; room <= expected.length + 10; room++) {
      const target = Buffer.alloc(expected.length + 20, 0xee);
      const written = plain.encodeInto(value, target, 10, 10 + room);
      // Room is checked per value with the largest header it may need, so up
      // to 9 bytes short of the end it may give up early; never wrongly.
      if (room < expected.length) assert.equal(written, -1, `room ${room}`);
      else if (written === -1) assert.ok(room < expected.length + 9, `room ${room} refused`);
      else {
        assert.equal(written, expected.length);
        assert.deepEqual(target.subarray(10, 10 + written), expected);
      }
      assert.ok(
        target.subarray(0, 10).every((b) => b === 0xee) && target.subarray(10 + room).every((b) => b === 0xee),
        `room ${room}: no byte outside [offset, end) was touched`,
      );
    }
  });

  it("writes maps of every header size, with the general encoder's key order, in place and into a tight buffer", () => {
    const plain = new PlainEncoder(65);
    const sized = (n: number): Record<string, number> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    const withNumericKeys: Record<string, unknown> = { b: 1, 10: "ten", a: 2, 2: "two" };
    const bare = Object.create(null) as Record<string, unknown>;
    bare["x"] = 1;
    bare["y"] = [true];
    for (const value of [{}, sized(15), sized(16), sized(17), sized(300), sized(70_000), withNumericKeys, bare, { nested: sized(20) }]) {
      const expected = Buffer.from(general.encode(value));
      const ours = plain.encode(value);
      assert.ok(ours !== undefined);
      assert.deepEqual(Buffer.from(ours), expected, `map of ${Object.keys(value).length} keys`);
      // Around the exact size: a map's longer header is written after its
      // entries, and must not push anything past the end either.
      for (let end = Math.max(0, expected.length - 4); end <= expected.length + 9; end++) {
        const target = Buffer.alloc(expected.length + 20, 0xee);
        const written = plain.encodeInto(value, target, 0, end);
        if (end < expected.length) assert.equal(written, -1, `end ${end} of ${expected.length}`);
        else if (end === expected.length + 9) assert.equal(written, expected.length, "taken with room to spare");
        if (written !== -1) assert.deepEqual(target.subarray(0, written), expected, `in place, end ${end}`);
        assert.ok(
          target.subarray(end).every((b) => b === 0xee),
          `end ${end}: nothing written past the end`,
        );
      }
    }
  });

  it("leaves objects to the general encoder while Object.prototype has an enumerable property, so inherited keys are never sent", () => {
    const plain = new PlainEncoder(65);
    const codec = new MsgpackCodec();
    const value = { a: 1 };
    const proto = Object.prototype as Record<string, unknown>;
    proto["polluted"] = "yes";
    try {
      assert.equal(plain.encode(value), undefined);
      assert.equal(plain.encode([1, "x"])?.length, 4, "values without objects are still taken");
      assert.deepEqual(codec.decode(codec.encode(value)), { a: 1 });
    } finally {
      delete proto["polluted"];
    }
    assert.deepEqual(Buffer.from(plain.encode(value) ?? []), Buffer.from(general.encode(value)));
  });

  it("leaves lone surrogates to the general encoder, so they come back as they were sent, keys included", () => {
    const plain = new PlainEncoder(65);
    const codec = new MsgpackCodec();
    const cut = "👍👍".slice(0, 3);
    for (const value of [cut, { "\ud800": 1, "\ud801": 2 }, ["\udfff", "short \ud800"]]) {
      assert.equal(plain.encode(value), undefined);
      assert.deepEqual(codec.decode(codec.encode(value)), value);
    }
    // A long one is the general encoder's too, which writes U+FFFD for it there (as it always did).
    const long = "x".repeat(100) + "\ud800";
    assert.equal(plain.encode(long), undefined);
    assert.deepEqual(Buffer.from(codec.encode(long)), Buffer.from(general.encode(long)));
  });

  it("a getter that throws fails the encoding with INVALID_ARGUMENT naming the problem", () => {
    const codec = new MsgpackCodec();
    const value = {
      get broken(): number {
        throw new Error("no value here");
      },
    };
    assert.throws(
      () => codec.encodeShared(value),
      (e: unknown) => (e as { code?: string }).code === "INVALID_ARGUMENT" && /no value here/.test((e as Error).message),
    );
    assert.throws(
      () => codec.encodeInto(value, Buffer.alloc(64), 0, 64),
      (e: unknown) => (e as { code?: string }).code === "INVALID_ARGUMENT",
    );
  });

  it("a getter that encodes while the encoder is busy gets the general encoder, and both results are right", () => {
    const codec = new MsgpackCodec();
    let inner: unknown;
    const value = {
      get a(): number {
        inner = codec.decode(Buffer.from(codec.encodeShared(["inner", 1])));
        return 5;
      },
    };
    // A getter makes the object still plain: its own enumerable key is read.
    assert.deepEqual(codec.decode(codec.encode(value)), { a: 5 });
    assert.deepEqual(inner, ["inner", 1]);
  });
});
