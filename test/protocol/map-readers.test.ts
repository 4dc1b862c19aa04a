import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Decoder, Encoder } from "@msgpack/msgpack";
import { MISS, MapReaders } from "../../src/protocol/map-readers.js";
import { NOT_PLAIN, PlainDecoder } from "../../src/protocol/plain-decoder.js";
import { randomObject } from "./random-values.js";
import { between, prng } from "./seeded-random.js";

const LIMITS = { maxStrLength: 1 << 20, maxBinLength: 1 << 20, maxArrayLength: 1000, maxMapLength: 100, maxDepth: 64 };
const general = new Decoder({ ...LIMITS, maxExtLength: 1024 });
const encoder = new Encoder({ ignoreUndefined: false });

/** The readers of `plain` (its private field). */
function readersOf(plain: PlainDecoder): MapReaders {
  return (plain as unknown as { readers: MapReaders }).readers;
}

/** Decodes `bytes` with `plain`, checked against the general decoder: the same value, keys in the same order. */
function decodeChecked(plain: PlainDecoder, bytes: Uint8Array, label: string): unknown {
  const ours = plain.decode(bytes);
  assert.notEqual(ours, NOT_PLAIN, `${label}: plain data was not decoded`);
  const theirs = general.decode(bytes);
  assert.deepEqual(ours, theirs, label);
  assert.equal(JSON.stringify(ours), JSON.stringify(theirs), `${label}: key order`);
  return ours;
}

/** A map of raw entries: keys encoded as given (any MessagePack form), values encoded by @msgpack/msgpack. */
function rawMap(entries: Array<[Uint8Array, unknown]>): Buffer {
  const parts = entries.flatMap(([k, v]) => [Buffer.from(k), Buffer.from(encoder.encode(v))]);
  return Buffer.concat([Buffer.from([0x80 + entries.length]), ...parts]);
}

describe("MapReaders", () => {
  it("gives a level the reader of a key sequence once it has a maker (8 maps), not before, and not for other levels", () => {
    const plain = new PlainDecoder(LIMITS);
    const bytes = encoder.encode({ seq: 1, value: "item" });
    for (let i = 0; i < 7; i++) decodeChecked(plain, bytes, `map ${i}`);
    assert.equal(readersOf(plain).readerAt(1), undefined, "7 maps");
    decodeChecked(plain, bytes, "map 8");
    const reader = readersOf(plain).readerAt(1);
    assert.equal(reader?.size, 2, "8 maps");
    assert.equal(readersOf(plain).readerAt(2), undefined, "levels are apart");
    // The same keys nested one level down: that level takes the same reader once it meets them.
    decodeChecked(plain, encoder.encode([{ seq: 2, value: "x" }]), "nested");
    assert.equal(readersOf(plain).readerAt(2), reader);
  });

  it("reads maps of learnt key sequences as the general decoder, whatever their values, shapes interleaved and nested", () => {
    const rand = prng(0x4eade5);
    const plain = new PlainDecoder(LIMITS);
    const shapes = [["seq", "value"], ["a"], ["id", "name", "tags", "n"], ["0", "1", "x"], ["é", "ключ", "日本", "k"]];
    const object = (keys: string[]): Record<string, unknown> => randomObject(rand, keys);
    for (const keys of shapes) for (let i = 0; i < 20; i++) decodeChecked(plain, encoder.encode(object(keys)), `${keys.join(",")} #${i}`);
    assert.ok(readersOf(plain).readerAt(1) !== undefined, "the last shape has a reader");
    // In runs of random length: a shape's first map after another misses its level's reader and is read key by key.
    for (let run = 0; run < 300; run++) {
      const keys = shapes[between(rand, 0, shapes.length - 1)] as string[];
      for (let i = between(rand, 1, 10); i > 0; i--) decodeChecked(plain, encoder.encode(object(keys)), `run ${run}: ${keys.join(",")}`);
    }
    // Nested: maps of learnt shapes in arrays and maps, at several levels, as a stream's ITEMS would hold them.
    for (let i = 0; i < 40; i++) {
      const nested = [object(["seq", "value"]), { a: object(["id", "name", "tags", "n"]) }, [{ a: [object(["seq", "value"])] }]];
      decodeChecked(plain, encoder.encode(nested), `nested #${i}`);
    }
  });

  it("gives a string value kept at its position only for the same bytes: other strings of that length, other types, other text", () => {
    const plain = new PlainDecoder(LIMITS);
    const values: unknown[] = [
      "item",
      "item",
      "itex",
      "jtem",
      "item",
      "ítem",
      "item",
      4,
      "item",
      null,
      "item",
      "",
      "",
      "item",
      "x".repeat(16),
    ];
    values.push("x".repeat(16), "x".repeat(15) + "y", "x".repeat(17), "x".repeat(17), "item", true, "item", 1.5, -3, "item", 200, 70000);
    for (let i = 0; i < 10; i++) decodeChecked(plain, encoder.encode({ seq: i, value: "item" }), `warm ${i}`);
    values.forEach((value, i) => {
      const got = decodeChecked(plain, encoder.encode({ seq: i, value }), `value ${JSON.stringify(value)}`) as { value: unknown };
      assert.equal(got.value, value);
    });
    // The bytes are compared, not the length: one byte changed in each position of a kept string.
    const base = rawMap([
      [encoder.encode("seq"), 1],
      [encoder.encode("value"), "abcdefgh"],
    ]);
    for (let i = 0; i < 3; i++) decodeChecked(plain, base, "abcdefgh");
    for (let at = base.length - 8; at < base.length; at++) {
      const changed = Buffer.from(base);
      changed[at] = 0x7a;
      decodeChecked(plain, changed, `byte ${at} changed`);
      decodeChecked(plain, base, `back after byte ${at}`);
    }
  });

  it("compares a kept string whole, a word at a time, wherever it sits: each length, each byte changed, near the end of the input", () => {
    // In an array, as a stream's ITEMS hold them, with more bytes after each
    // string: the reader's words then reach past the string, and only its
    // own bytes may decide.
    const plain = new PlainDecoder(LIMITS);
    const items = (values: unknown[], tail: unknown) => encoder.encode([...values.map((value, seq) => ({ seq, value })), tail]);
    for (let length = 1; length <= 17; length++) {
      const text = "abcdefghijklmnopq".slice(0, length);
      for (let i = 0; i < 3; i++) decodeChecked(plain, items([text, text, text], "z".repeat(20)), `length ${length}`);
      for (let at = 0; at < length; at++) {
        const changed = text.slice(0, at) + "Z" + text.slice(at + 1);
        const got = decodeChecked(plain, items([text, changed, text], "z".repeat(20)), `length ${length}, byte ${at} changed`) as Array<{
          value: string;
        }>;
        assert.equal(got[1]?.value, changed);
      }
      // The same text with the bytes after it differing: still the same string.
      decodeChecked(plain, items([text, text], 0), `length ${length}, other bytes after`);
      decodeChecked(plain, items([text, text], "y".repeat(20)), `length ${length}, other bytes after`);
    }
    // A kept string whose words would reach past the end of the input: the
    // last bytes of a payload, 0 to 3 bytes after it.
    for (let length = 1; length <= 15; length++) {
      const text = "abcdefghijklmno".slice(0, length);
      for (const after of [[], [1], [1, 2], [1, 2, 3]]) {
        for (let i = 0; i < 10; i++)
          decodeChecked(plain, encoder.encode([{ seq: i, value: text }, ...after]), `length ${length}, ${after.length} after`);
        decodeChecked(plain, encoder.encode([{ seq: 1, value: text.slice(0, -1) + "!" }, ...after]), `length ${length}, last changed`);
      }
    }
  });

  it("gives the kept string, without decoding it anew, whatever bytes follow it", () => {
    const plain = new PlainDecoder(LIMITS);
    let decoded = 0;
    const valueAt = plain.valueAt.bind(plain);
    plain.valueAt = (level: number): unknown => {
      decoded++;
      return valueAt(level);
    };
    for (let length = 1; length <= 15; length++) {
      const text = "abcdefghijklmno".slice(0, length);
      for (let i = 0; i < 12; i++) decodeChecked(plain, encoder.encode([{ seq: i, value: text }, "z".repeat(20)]), `length ${length}`);
      // At least 3 bytes after the string: its last word is in the input.
      for (const tail of [1000, "y".repeat(20), [1, 2, 3], { a: 1 }]) {
        decoded = 0;
        decodeChecked(plain, encoder.encode([{ seq: 1, value: text }, tail]), `length ${length}, then ${JSON.stringify(tail)}`);
        assert.equal(decoded, 0, `length ${length}, then ${JSON.stringify(tail)}: the kept string was decoded anew`);
      }
    }
  });

  it("keeps its DataView between inputs only over memory of a socket read's size, and reads inputs at any offset of it", () => {
    const plain = new PlainDecoder(LIMITS);
    const viewOf = () => (plain as unknown as { dataView: DataView | undefined }).dataView;
    const item = encoder.encode({ seq: 7, value: "item" });
    const at = (size: number, offset: number): Buffer => {
      const memory = Buffer.alloc(size, 0xee);
      memory.set(item, offset);
      return memory.subarray(offset, offset + item.length);
    };
    for (let i = 0; i < 12; i++) decodeChecked(plain, at(4096, i * 3), `small memory, offset ${i * 3}`);
    assert.ok(viewOf() !== undefined, "a view over 4 KiB is kept");
    for (let i = 0; i < 3; i++) decodeChecked(plain, at(1 << 20, 100_000 + i), `large memory, offset ${100_000 + i}`);
    assert.equal(viewOf(), undefined, "a view over 1 MiB is not kept");
  });

  it("compares every byte of each key, whatever its length", () => {
    const plain = new PlainDecoder(LIMITS);
    for (let length = 1; length <= 40; length++) {
      const key = "abcdefghijklmnopqrstuvwxyz0123456789ABCD".slice(0, length);
      for (let i = 0; i < 10; i++) decodeChecked(plain, encoder.encode({ [key]: i, v: 1 }), `key of ${length}`);
      for (let at = 0; at < length; at++) {
        const other = key.slice(0, at) + "_" + key.slice(at + 1);
        decodeChecked(plain, encoder.encode({ [other]: 2, v: 1 }), `key of ${length}, byte ${at} changed`);
        decodeChecked(plain, encoder.encode({ [key]: 3, v: 1 }), `key of ${length}, back after byte ${at}`);
      }
    }
  });

  it("reads the same whatever form the keys come in: another key encoding misses the reader, and gets one of its own", () => {
    const plain = new PlainDecoder(LIMITS);
    const fix = encoder.encode("seq");
    const str8 = Buffer.from([0xd9, 3, ...Buffer.from("seq")]);
    const key = (form: Uint8Array, i: number): Buffer =>
      rawMap([
        [form, i],
        [encoder.encode("value"), "v"],
      ]);
    for (let i = 0; i < 12; i++) decodeChecked(plain, key(fix, i), `fixstr ${i}`);
    const reader = readersOf(plain).readerAt(1);
    assert.ok(reader !== undefined);
    for (let i = 0; i < 12; i++) decodeChecked(plain, key(str8, i), `str8 ${i}`);
    assert.equal(readersOf(plain).readerAt(1), reader, "one shape, one reader: the str8 form is read key by key");
    for (let i = 0; i < 12; i++) decodeChecked(plain, key(fix, i), `fixstr again ${i}`);
    // Number keys and their string names are different bytes, the same property.
    for (let i = 0; i < 12; i++) {
      decodeChecked(
        plain,
        rawMap([
          [encoder.encode(1), i],
          [encoder.encode("1x"), i],
        ]),
        `number key ${i}`,
      );
    }
  });

  it("never reads a truncated map, or a changed one, differently from the general decoder", () => {
    const rand = prng(0x7a11);
    const plain = new PlainDecoder(LIMITS);
    const item = (i: number): Uint8Array => encoder.encode({ seq: i * 977, value: i % 2 === 0 ? "item" : "other", f: i / 7, n: { a: -i } });
    for (let i = 0; i < 20; i++) decodeChecked(plain, item(i), `warm ${i}`);
    assert.ok(readersOf(plain).readerAt(1) !== undefined && readersOf(plain).readerAt(2) !== undefined);
    for (let i = 0; i < 40; i++) {
      const bytes = Buffer.from(item(i));
      for (let cut = 0; cut < bytes.length; cut++) assert.equal(plain.decode(bytes.subarray(0, cut)), NOT_PLAIN, `item ${i} cut at ${cut}`);
      assert.equal(plain.decode(Buffer.concat([bytes, Buffer.from([0])])), NOT_PLAIN, `item ${i} with a trailing byte`);
    }
    let decided = 0;
    for (let run = 0; run < 3000; run++) {
      const bytes = Buffer.from(item(run));
      for (let i = between(rand, 1, 2); i > 0; i--) bytes[between(rand, 0, bytes.length - 1)] = between(rand, 0, 255);
      const ours = plain.decode(bytes);
      let theirs: unknown;
      try {
        theirs = general.decode(bytes);
      } catch {
        assert.equal(ours, NOT_PLAIN, `run ${run}: ${bytes.toString("hex")} decoded here but the general decoder refuses it`);
        continue;
      }
      if (ours === NOT_PLAIN) continue;
      decided++;
      // Invalid UTF-8 never gets here (left to the general decoder); the rest must match.
      assert.deepEqual(ours, theirs, `run ${run}: ${bytes.toString("hex")}`);
      assert.equal(JSON.stringify(ours), JSON.stringify(theirs), `run ${run}: key order`);
      decodeChecked(plain, item(run), `run ${run}: unchanged after`);
    }
    assert.ok(decided > 1000, `only ${decided} changed items were plain`);
  });

  it("keeps the decoder's limits on values a reader hands back: depth, string length, map size", () => {
    const plain = new PlainDecoder({ ...LIMITS, maxDepth: 4, maxStrLength: 20, maxMapLength: 5 });
    for (let i = 0; i < 10; i++) decodeChecked(plain, encoder.encode({ seq: i, value: "ok" }), `warm ${i}`);
    assert.ok(readersOf(plain).readerAt(1) !== undefined);
    assert.equal(plain.decode(encoder.encode({ seq: 1, value: [[[["deep"]]]] })), NOT_PLAIN, "nested past maxDepth");
    assert.deepEqual(plain.decode(encoder.encode({ seq: 1, value: [[["deep"]]] })), { seq: 1, value: [[["deep"]]] }, "at maxDepth");
    assert.equal(plain.decode(encoder.encode({ seq: 1, value: "y".repeat(21) })), NOT_PLAIN, "a string past maxStrLength");
    assert.equal(
      plain.decode(encoder.encode({ seq: 1, value: { a: 1, b: 2, c: 3, d: 4, e: 5, f: 6 } })),
      NOT_PLAIN,
      "a map past maxMapLength",
    );
    assert.deepEqual(plain.decode(encoder.encode({ seq: 1, value: "item" })), { seq: 1, value: "item" }, "and still reads");
  });

  it("writes every key name into the reader as a string literal, whatever it holds, and never makes one for __proto__", () => {
    const plain = new PlainDecoder(LIMITS);
    const hostile = [
      '"}; throw new Error("injected"); ({"',
      "a\\",
      "line\nbreak",
      "\u2028\u2029",
      "`${x}`",
      "</script>",
      "",
      "0",
      "constructor",
    ];
    for (const key of hostile) {
      for (let i = 0; i < 12; i++) {
        const got = decodeChecked(plain, encoder.encode({ [key]: i, after: "x" }), JSON.stringify(key)) as Record<string, unknown>;
        assert.equal(got[key], i);
      }
    }
    const proto = rawMap([
      [encoder.encode("__proto__"), { polluted: true }],
      [encoder.encode("a"), 1],
    ]);
    for (let i = 0; i < 12; i++) assert.equal(plain.decode(proto), NOT_PLAIN);
    assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
  });

  it("makes no reader for a key of more than 64 bytes encoded, and at most 256 per decoder", () => {
    const plain = new PlainDecoder(LIMITS);
    const long = "k".repeat(63); // 65 bytes with its str8 header
    for (let i = 0; i < 12; i++) decodeChecked(plain, encoder.encode({ [long]: i }), `long key ${i}`);
    assert.equal(readersOf(plain).readerAt(1), undefined);
    const fits = "k".repeat(62); // 64 bytes
    for (let i = 0; i < 12; i++) decodeChecked(plain, encoder.encode({ [fits]: i }), `64-byte key ${i}`);
    assert.ok(readersOf(plain).readerAt(1) !== undefined);

    const readers = new MapReaders(NOT_PLAIN);
    const key = Buffer.from([0xa1, 0x61]);
    let made = 0;
    for (let i = 0; i < 300; i++) if (readers.make(key, [0, 2], [`name${i}`]) !== null) made++;
    assert.equal(made, 256);
    assert.equal(readers.canMake(1), false);
    assert.equal(new MapReaders(NOT_PLAIN).canMake(8), false, "levels past 8 have no readers");
  });

  it("a reader gives MISS for other key bytes, and the object for its own", () => {
    const readers = new MapReaders(NOT_PLAIN);
    const bytes = Buffer.from(encoder.encode({ seq: 5, value: "v" }));
    // The key ranges after the header byte: "seq" at 1-5, "value" at 6-12.
    const reader = readers.make(bytes, [1, 5, 6, 12], ["seq", "value"]);
    assert.ok(reader !== null);
    const source = (input: Buffer) => ({
      bytes: input,
      pos: 1,
      end: input.length,
      valueAt(): unknown {
        const decoded = general.decode(input.subarray(this.pos, this.pos + 2));
        this.pos += 2;
        return decoded;
      },
      view: () => new DataView(input.buffer),
      viewOffset: input.byteOffset,
    });
    assert.deepEqual(reader.read(source(bytes), 1), { seq: 5, value: "v" });
    assert.equal(reader.read(source(Buffer.from(encoder.encode({ seq: 5, valuf: "v" }))), 1), MISS);
    assert.equal(reader.read(source(Buffer.from(encoder.encode({ seq: 5, value: "v" })).subarray(0, 8)), 1), MISS);
  });

  it("decodes the same, with no reader, where code generation from strings is disallowed", () => {
    const script = `
      import { PlainDecoder } from ${JSON.stringify(fileURLToPath(new URL("../../src/protocol/plain-decoder.js", import.meta.url)))};
      import { encode } from "@msgpack/msgpack";
      const plain = new PlainDecoder(${JSON.stringify(LIMITS)});
      const out = [];
      for (let i = 0; i < 20; i++) out.push(plain.decode(encode({ seq: i, value: "item" })));
      console.log(JSON.stringify({ last: out[19], reader: plain.readers.readerAt(1) !== undefined }));
    `;
    const result = spawnSync(process.execPath, ["--disallow-code-generation-from-strings", "--input-type=module", "-e", script], {
      cwd: fileURLToPath(new URL("../../..", import.meta.url)),
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { last: { seq: 19, value: "item" }, reader: false });
  });
});
