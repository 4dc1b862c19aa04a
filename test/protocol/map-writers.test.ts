import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Encoder } from "@msgpack/msgpack";
import { MAX_WRITER_KEYS, MapWriters } from "../../src/protocol/map-writers.js";
import { PlainEncoder } from "../../src/protocol/plain-encoder.js";
import { NUMBERS, randomObject } from "./random-values.js";
import { between, prng } from "./seeded-random.js";

const general = new Encoder({ maxDepth: 65, ignoreUndefined: false });

/** Encodes `make(i)` for i in [0, times) with `plain`, each checked byte for byte against the general encoder. */
function encodeRepeatedly(plain: PlainEncoder, times: number, make: (i: number) => unknown, label: string): void {
  for (let i = 0; i < times; i++) {
    const value = make(i);
    const ours = plain.encode(value);
    assert.ok(ours !== undefined, `${label} #${i}: the plain encoder took it`);
    assert.deepEqual(Buffer.from(ours), Buffer.from(general.encode(value)), `${label} #${i}`);
  }
}

/**
 * {@link encodeRepeatedly} through `encodeInto`, each time into a target
 * filled with another byte: a byte the writer leaves unwritten shows, where
 * the encoder's own buffer would still hold it from the value before.
 */
function encodeIntoRepeatedly(plain: PlainEncoder, times: number, make: (i: number) => unknown, label: string): void {
  const target = Buffer.alloc(256);
  for (let i = 0; i < times; i++) {
    const value = make(i);
    target.fill(0x11 * ((i % 15) + 1));
    const n = plain.encodeInto(value, target, 3, target.length);
    assert.ok(n >= 0, `${label} #${i}: the plain encoder took it`);
    assert.deepEqual(target.subarray(3, 3 + n), Buffer.from(general.encode(value)), `${label} #${i}`);
  }
}

/** Whether the writers of `plain` have a writer for maps at `level` (reached through the encoder's private field). */
function hasWriter(plain: PlainEncoder, level: number): boolean {
  return (plain as unknown as { writers: MapWriters }).writers.writerAt(level) !== undefined;
}

describe("MapWriters", () => {
  it("makes a writer for a key sequence met 8 times in a row at one level, not for one broken off or of too many keys", () => {
    const writers = new MapWriters();
    const walk = (level: number, keys: string[]): void => {
      const learnt = writers.keysAt(level) as string[];
      let same = true;
      keys.forEach((key, i) => {
        if (learnt[i] !== key) {
          if (i < MAX_WRITER_KEYS) learnt[i] = key;
          same = false;
        }
      });
      writers.learned(level, keys.length, same);
    };
    for (let i = 0; i < 7; i++) walk(1, ["seq", "value"]);
    assert.equal(writers.writerAt(1), undefined, "7 in a row");
    walk(1, ["seq"]);
    for (let i = 0; i < 7; i++) walk(1, ["seq", "value"]);
    assert.equal(writers.writerAt(1), undefined, "the run was broken by a shorter sequence");
    walk(1, ["seq", "value"]);
    assert.ok(writers.writerAt(1) !== undefined, "8 in a row");
    assert.equal(writers.writerAt(2), undefined, "levels learn apart");
    const many = Array.from({ length: MAX_WRITER_KEYS + 1 }, (_, i) => `k${i}`);
    for (let i = 0; i < 20; i++) walk(2, many);
    assert.equal(writers.writerAt(2), undefined, `${MAX_WRITER_KEYS + 1} keys`);
  });

  it("writes maps of learnt key sequences byte for byte as the general encoder, whatever their values, shapes interleaved", () => {
    const rand = prng(0x5eed);
    const plain = new PlainEncoder(65);
    const shapes = [["seq", "value"], ["a"], ["id", "name", "tags", "nested", "n"], ["0", "1", "x"], ["é", "ключ", "日本", "k"]];
    const object = (keys: string[]): Record<string, unknown> => randomObject(rand, keys);
    for (const keys of shapes) encodeRepeatedly(plain, 30, () => object(keys), keys.join(","));
    assert.ok(hasWriter(plain, 1), "the last shape has a writer");
    // Then at random, in runs of random length: each shape's first map after another fails the writer and is learnt again.
    for (let run = 0; run < 200; run++) {
      const keys = shapes[between(rand, 0, shapes.length - 1)] as string[];
      encodeRepeatedly(plain, between(rand, 1, 12), () => object(keys), `run ${run}: ${keys.join(",")}`);
    }
    // Nested: maps of learnt shapes inside arrays and maps, at several levels.
    encodeRepeatedly(
      plain,
      30,
      (i) => ({
        seq: i,
        value: {
          a: [
            { seq: i, value: "x" },
            { seq: i * 1000, value: null },
          ],
        },
      }),
      "nested",
    );
    assert.ok(hasWriter(plain, 1) && hasWriter(plain, 2) && hasWriter(plain, 4), "levels 1, 2 and 4 have writers");
  });

  it("writes the small unsigned integers it writes in place, and every other number, in the general encoder's forms", () => {
    const plain = new PlainEncoder(65);
    const numbers = [...NUMBERS, 0, -0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 1.5, -1, Number.NaN, 2 ** 31, -(2 ** 31)];
    encodeRepeatedly(plain, 20, (i) => ({ n: i }), "warm up");
    assert.ok(hasWriter(plain, 1));
    for (const n of numbers) encodeRepeatedly(plain, 1, () => ({ n }), `n = ${n}`);
  });

  it("writes the string a value position kept (encoded in up to 16 bytes) for that string only: every length, ASCII or not, in turn", () => {
    const plain = new PlainEncoder(65);
    encodeIntoRepeatedly(plain, 20, (i) => ({ seq: i, value: "v" }), "warm up");
    assert.ok(hasWriter(plain, 1));
    for (let length = 0; length <= 20; length++) {
      const ascii = "abcdefghijklmnopqrstuvwxyz".slice(0, length);
      const texts = [ascii, ascii.replace(/.$/, "é"), ascii.toUpperCase(), "ж".repeat(Math.ceil(length / 2))];
      // Each text three times in a row (kept after the first), then the next: the kept one must not be written for it.
      for (const text of texts) encodeIntoRepeatedly(plain, 3, (i) => ({ seq: i, value: text }), `${JSON.stringify(text)} (${length})`);
      // A string equal to the kept one but built anew (not the same string object) is written the same.
      encodeIntoRepeatedly(plain, 2, () => ({ seq: 1, value: [...ascii].join("") }), `${JSON.stringify(ascii)} built anew`);
      encodeIntoRepeatedly(plain, 1, () => ({ seq: 1, value: length }), `then a number`);
    }
  });

  it("checks the keys of every object: one more, one fewer, another order, an inherited key, another prototype", () => {
    const plain = new PlainEncoder(65);
    encodeRepeatedly(plain, 20, (i) => ({ seq: i, value: "v" }), "warm up");
    encodeRepeatedly(plain, 1, () => ({ seq: 1, value: "v", more: true }), "one more");
    encodeRepeatedly(plain, 20, (i) => ({ seq: i, value: "v" }), "warm up again");
    encodeRepeatedly(plain, 1, () => ({ seq: 1 }), "one fewer");
    encodeRepeatedly(plain, 1, () => ({ value: "v", seq: 1 }), "another order");
    const bare = Object.create(null) as Record<string, unknown>;
    bare.seq = 1;
    bare.value = "v";
    encodeRepeatedly(plain, 20, (i) => ({ seq: i, value: "v" }), "warm up again");
    encodeRepeatedly(plain, 1, () => bare, "a null-prototype object is plain too");
    class Item {
      constructor(
        readonly seq: number,
        readonly value: string,
      ) {}
    }
    assert.equal(plain.encode(new Item(1, "v")), undefined, "a class instance is the general encoder's");
    const inheriting = Object.create({ extra: 1 }) as Record<string, unknown>;
    inheriting.seq = 1;
    inheriting.value = "v";
    assert.equal(plain.encode(inheriting), undefined, "an object with its own prototype is the general encoder's");
    const proto = Object.prototype as Record<string, unknown>;
    proto.polluted = 1;
    try {
      assert.equal(plain.encode({ seq: 1, value: "v" }), undefined, "Object.prototype has an enumerable key: for-in would visit it");
    } finally {
      delete proto.polluted;
    }
    encodeRepeatedly(plain, 1, () => ({ seq: 2, value: "v" }), "after the pollution is gone");
  });

  it("compiles any key as a literal (an own __proto__ too), and leaves lone surrogates and long keys to the key-by-key path", () => {
    const plain = new PlainEncoder(65);
    const hostile = [
      '"',
      "\\",
      "'",
      "`${x}`",
      "\n",
      "\u2028",
      "\u2029",
      "*/",
      "a\u0000b",
      "});throw 1;({",
      "constructor",
      "hasOwnProperty",
    ];
    for (const key of hostile) {
      encodeRepeatedly(plain, 20, (i) => ({ [key]: i, after: key }), JSON.stringify(key));
      assert.ok(hasWriter(plain, 1), `a writer for ${JSON.stringify(key)}`);
    }
    const own = JSON.parse('{"__proto__": 1, "x": 2}') as Record<string, unknown>;
    encodeRepeatedly(plain, 20, () => own, "an own __proto__ key");
    assert.ok(hasWriter(plain, 1), "a writer for an own __proto__ key");
    const long = "k".repeat(65);
    encodeRepeatedly(plain, 20, (i) => ({ [long]: i }), "a 65-byte key");
    const longest = "é".repeat(32);
    encodeRepeatedly(plain, 20, (i) => ({ [longest]: i }), "a 64-byte key");
    for (let i = 0; i < 20; i++) assert.equal(plain.encode({ ["\ud800"]: i }), undefined, "a lone surrogate is the general encoder's");
  });

  it("uses no byte at or past the end it is given, and says when a map does not fit", () => {
    const plain = new PlainEncoder(65);
    const target = Buffer.alloc(64);
    const value = { seq: 300, value: "item", nested: { a: 70000 } };
    const expected = Buffer.from(general.encode(value));
    for (let round = 0; round < 3; round++) {
      for (let end = 0; end <= expected.length + 4; end++) {
        target.fill(0xee);
        const n = plain.encodeInto(value, target, 2, 2 + end);
        if (n >= 0) assert.deepEqual(target.subarray(2, 2 + n), expected, `end ${end}`);
        else assert.ok(end < expected.length + 9, `end ${end}: gave up with room to spare`);
        assert.ok(
          target.subarray(2 + end).every((b) => b === 0xee),
          `end ${end}: wrote past the end`,
        );
        assert.equal(target[0], 0xee);
      }
      encodeRepeatedly(plain, 20, () => value, "learn");
    }
  });

  it("makes at most 256 writers, and keeps writing maps right past that", () => {
    const plain = new PlainEncoder(65);
    for (let shape = 0; shape < 300; shape++) encodeRepeatedly(plain, 8, (i) => ({ [`k${shape}`]: i }), `shape ${shape}`);
    const made = (plain as unknown as { writers: { made: Map<string, unknown> } }).writers.made;
    assert.equal(made.size, 256);
    assert.equal(hasWriter(plain, 1), false, "the 300th shape has none");
  });

  it("writes the same where code generation from strings is disallowed", () => {
    const script = `
      import { PlainEncoder } from ${JSON.stringify(fileURLToPath(new URL("../../src/protocol/plain-encoder.js", import.meta.url)))};
      import { encode } from "@msgpack/msgpack";
      const plain = new PlainEncoder(65);
      let same = 0;
      for (let i = 0; i < 40; i++) {
        const value = { seq: i * 100, value: "item" };
        if (Buffer.from(plain.encode(value)).equals(Buffer.from(encode(value)))) same++;
      }
      console.log(same);
    `;
    const result = spawnSync(process.execPath, ["--disallow-code-generation-from-strings", "--input-type=module", "-e", script], {
      cwd: fileURLToPath(new URL("../../..", import.meta.url)),
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout.trim(), "40");
  });
});
