import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Encoder } from "@msgpack/msgpack";
import { PlainEncoder } from "../../src/protocol/plain-encoder.js";
import { SLOT_BYTES, StringSlots } from "../../src/protocol/string-slots.js";
import { between, prng } from "./seeded-random.js";

const general = new Encoder({ maxDepth: 65, ignoreUndefined: false });

/** Few keys and values, so places see the same strings again (learnt) and others in turn (replaced). */
const KEYS = ["seq", "value", "k", "fifteen-chars-x", "sixteen-chars-xy", "ключ", "😀"];
const VALUES = ["item", "", "a", "ok", "fifteen-chars-x", "é".repeat(8), "sixteen-chars-xy", "x".repeat(40), "\u2028"];

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[between(rand, 0, list.length - 1)] as T;
}

/** An object or array of the pools' strings, up to `depth` levels deep and 10 entries wide (positions past 8 share slots). */
function pooled(rand: () => number, depth: number): unknown {
  const roll = rand();
  if (depth === 0 || roll < 0.3) return roll < 0.15 ? pick(rand, VALUES) : between(rand, -5, 70_000);
  const width = between(rand, 0, 10);
  if (roll < 0.5) return Array.from({ length: width }, () => pooled(rand, depth - 1));
  const object: Record<string, unknown> = {};
  for (let i = 0; i < width; i++) object[pick(rand, KEYS)] = pooled(rand, depth - 1);
  return object;
}

describe("StringSlots", () => {
  it("writes nothing until a slot has met the same string twice in a row, then its encoding", () => {
    const slots = new StringSlots();
    const target = Buffer.alloc(64);
    const encoding = Buffer.from(general.encode("value"));
    assert.equal(slots.write("value", 3, target, 0), 0, "never met");
    slots.learn("value", 3, encoding, 0, encoding.length);
    assert.equal(slots.write("value", 3, target, 0), 0, "met once: only remembered");
    const padded = Buffer.alloc(SLOT_BYTES);
    encoding.copy(padded);
    slots.learn("value", 3, padded, 0, encoding.length);
    assert.equal(slots.write("value", 3, target, 5), encoding.length);
    assert.deepEqual(target.subarray(5, 5 + encoding.length), encoding);
    assert.equal(slots.write("value", 4, target, 0), 0, "another slot has not learnt it");
    assert.equal(slots.write("other", 3, target, 0), 0, "another string in the slot");
    // A different string in the slot replaces it: the old one is forgotten.
    slots.learn("other", 3, padded, 0, encoding.length);
    assert.equal(slots.write("value", 3, target, 0), 0);
  });

  it("writes into whichever buffer it is given, each through its own view", () => {
    const slots = new StringSlots();
    const source = Buffer.alloc(SLOT_BYTES);
    const encoding = Buffer.from(general.encode("seq"));
    encoding.copy(source);
    slots.learn("seq", 0, source, 0, encoding.length);
    slots.learn("seq", 0, source, 0, encoding.length);
    // Buffers that are views into one larger pool at different offsets.
    const pool = Buffer.alloc(256, 0xee);
    const first = pool.subarray(16, 64);
    const second = pool.subarray(100, 160);
    for (const target of [first, second, first, Buffer.alloc(32)]) {
      assert.equal(slots.write("seq", 0, target, 7), encoding.length);
      assert.deepEqual(target.subarray(7, 7 + encoding.length), encoding);
    }
    assert.ok(
      pool.subarray(0, 16).every((b) => b === 0xee) && pool.subarray(64, 100).every((b) => b === 0xee),
      "nothing outside the views",
    );
  });

  it("does not remember strings longer than a slot holds", () => {
    const slots = new StringSlots();
    const long = "sixteen-chars-xy";
    const source = Buffer.alloc(64);
    const encoding = Buffer.from(general.encode(long));
    encoding.copy(source);
    slots.learn(long, 1, source, 0, encoding.length);
    slots.learn(long, 1, source, 0, encoding.length);
    assert.equal(slots.write(long, 1, Buffer.alloc(64), 0), 0);
  });
});

describe("PlainEncoder with string slots", () => {
  it("encodes a stream of same-shaped items byte for byte as the general encoder, first to last", () => {
    const plain = new PlainEncoder(65);
    const target = Buffer.alloc(4096);
    for (let seq = 0; seq < 50; seq++) {
      const item = {
        seq,
        value: seq % 7 === 3 ? "other" : "item",
        tags: ["a", "b", seq % 2 === 0 ? "even" : "odd"],
        nested: { value: "item" },
      };
      const expected = Buffer.from(general.encode(item));
      assert.deepEqual(Buffer.from(plain.encode(item) as Uint8Array), expected, `encode, item ${seq}`);
      const at = seq * 13;
      const written = plain.encodeInto(item, target, at, target.length);
      assert.equal(written, expected.length);
      assert.deepEqual(target.subarray(at, at + written), expected, `encodeInto, item ${seq}`);
    }
  });

  it("matches the general encoder on 3,000 seeded values built from few strings, through its own buffer and two others", () => {
    const rand = prng(0x51075);
    const plain = new PlainEncoder(65);
    const targets = [Buffer.alloc(1 << 16), Buffer.alloc(1 << 16)];
    for (let run = 0; run < 3000; run++) {
      const value = pooled(rand, 6);
      const expected = Buffer.from(general.encode(value));
      const ours = plain.encode(value);
      assert.ok(ours !== undefined, `run ${run}: refused`);
      assert.deepEqual(Buffer.from(ours), expected, `run ${run}`);
      const target = targets[run % 2] as Buffer;
      const offset = between(rand, 0, 64);
      const written = plain.encodeInto(value, target, offset, target.length);
      assert.equal(written, expected.length, `run ${run}: encodeInto length`);
      assert.deepEqual(target.subarray(offset, offset + written), expected, `run ${run}: encodeInto bytes`);
    }
  });

  it("writes a learnt string near the end of the room without a byte past it, or gives up", () => {
    const plain = new PlainEncoder(65);
    const item = { seq: 1, value: "item" };
    const expected = Buffer.from(general.encode(item));
    // Learn the strings first.
    for (let i = 0; i < 3; i++) plain.encode(item);
    for (let room = expected.length; room <= expected.length + SLOT_BYTES + 2; room++) {
      const target = Buffer.alloc(expected.length + 40, 0xee);
      const written = plain.encodeInto(item, target, 4, 4 + room);
      assert.equal(written, expected.length, `room ${room}`);
      assert.deepEqual(target.subarray(4, 4 + written), expected);
      assert.ok(
        target.subarray(4 + room).every((b) => b === 0xee),
        `room ${room}: nothing at or past the end`,
      );
    }
  });

  it("still refuses a string past the depth limit, learnt or not", () => {
    const plain = new PlainEncoder(3);
    assert.ok(plain.encode({ a: { b: "x" } }) !== undefined, "three levels");
    for (let i = 0; i < 3; i++) {
      assert.ok(plain.encode({ a: { b: "x" } }) !== undefined);
      assert.equal(plain.encode({ a: { b: { c: "x" } } }), undefined, "four levels");
      assert.equal(plain.encode({ a: { b: ["x"] } }), undefined, "four levels, in an array");
    }
  });
});
