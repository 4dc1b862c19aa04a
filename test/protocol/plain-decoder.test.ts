import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Decoder, Encoder } from "@msgpack/msgpack";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { NOT_PLAIN, PlainDecoder } from "../../src/protocol/plain-decoder.js";
import { randomPlainValue } from "./random-values.js";
import { between, prng } from "./seeded-random.js";

const LIMITS = { maxStrLength: 1 << 20, maxBinLength: 1 << 20, maxArrayLength: 1000, maxMapLength: 100, maxDepth: 64 };
const general = new Decoder({ ...LIMITS, maxExtLength: 1024 });
const encoder = new Encoder({ ignoreUndefined: false });

/** What a decode gives: the value, or the fact that it threw. */
function outcome(decode: () => unknown): { value?: unknown; threw?: true } {
  try {
    return { value: decode() };
  } catch {
    return { threw: true };
  }
}

/** PlainDecoder: the values @msgpack/msgpack gives, or NOT_PLAIN for the general decoder to decide. */
describe("PlainDecoder", () => {
  it("decodes 3,000 seeded random plain values exactly as the general decoder", () => {
    const rand = prng(0xdec0de);
    const plain = new PlainDecoder(LIMITS);
    for (let run = 0; run < 3000; run++) {
      const bytes = Buffer.from(encoder.encode(randomPlainValue(rand)));
      const ours = plain.decode(bytes);
      assert.notEqual(ours, NOT_PLAIN, `run ${run}: plain data was not decoded`);
      assert.deepEqual(ours, general.decode(bytes), `run ${run}`);
    }
  });

  it("decodes short strings of every length to 30, ASCII or with a non-ASCII character at each position, as the general decoder", () => {
    const plain = new PlainDecoder(LIMITS);
    for (let length = 0; length <= 30; length++) {
      const ascii = Array.from({ length }, (_, i) => String.fromCharCode(0x20 + ((i * 7) % 95))).join("");
      const variants = [ascii, ...Array.from({ length }, (_, at) => ascii.slice(0, at) + "é" + ascii.slice(at + 1))];
      for (const text of variants) {
        // Alone (the str forms) and as a map value next to a key (the key cache is not involved in values).
        for (const value of [text, { k: text }]) {
          const bytes = Buffer.from(encoder.encode(value));
          assert.deepEqual(plain.decode(bytes), value, JSON.stringify(value));
        }
      }
    }
    // A byte that is not UTF-8 at all goes to the general decoder, whatever the length.
    for (const length of [1, 4, 5, 24]) {
      const bytes = Buffer.concat([Buffer.from([0xa0 + length]), Buffer.alloc(length - 1, 0x61), Buffer.from([0xff])]);
      assert.equal(plain.decode(bytes), NOT_PLAIN, `length ${length}`);
    }
  });

  it("on seeded random garbage and mutations, gives the general decoder's value or leaves the bytes to it", () => {
    const rand = prng(0xbad);
    const plain = new PlainDecoder(LIMITS);
    let decided = 0;
    for (let run = 0; run < 5000; run++) {
      let bytes: Buffer;
      if (run % 2 === 0) bytes = Buffer.from(Array.from({ length: between(rand, 0, 40) }, () => between(rand, 0, 255)));
      else {
        bytes = Buffer.from(encoder.encode(randomPlainValue(rand)));
        for (let i = between(rand, 1, 3); i > 0 && bytes.length > 0; i--) bytes[between(rand, 0, bytes.length - 1)] = between(rand, 0, 255);
        if (rand() < 0.3) bytes = bytes.subarray(0, between(rand, 0, bytes.length));
      }
      const ours = plain.decode(bytes);
      if (ours === NOT_PLAIN) continue;
      decided++;
      const theirs = outcome(() => general.decode(bytes));
      assert.ok(theirs.threw !== true, `run ${run}: ${bytes.toString("hex")} decoded here but the general decoder refuses it`);
      // Invalid UTF-8 (from the mutations) becomes U+FFFD here; the general decoder's JavaScript path decodes it leniently to other characters.
      if (JSON.stringify(ours, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)).includes("\ufffd")) continue;
      assert.deepEqual(ours, theirs.value, `run ${run}: ${bytes.toString("hex")}`);
    }
    assert.ok(decided > 500, `only ${decided} inputs were plain`);
  });

  it("leaves to the general decoder what it must refuse or knows better: limits, depth, __proto__, odd keys, extensions, 64-bit ints, trailing bytes", () => {
    const plain = new PlainDecoder(LIMITS);
    const deep = (levels: number): unknown => {
      let v: unknown = 1;
      for (let i = 0; i < levels; i++) v = [v];
      return v;
    };
    const cases: Array<[string, Uint8Array]> = [
      ["array past maxArrayLength", encoder.encode(Array.from({ length: 1001 }, () => 0))],
      ["map past maxMapLength", encoder.encode(Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, i])))],
      ["string past maxStrLength", encoder.encode("s".repeat((1 << 20) + 1))],
      ["65 levels", encoder.encode(deep(65))],
      ["__proto__ key", Buffer.from([0x81, 0xa9, ...Buffer.from("__proto__"), 0x01])],
      ["array key", Buffer.from([0x81, 0x91, 0x01, 0x02])],
      ["timestamp extension", encoder.encode(new Date(0))],
      ["uint64", Buffer.from([0xcf, 0, 0, 0, 1, 0, 0, 0, 0])],
      ["int64", Buffer.from([0xd3, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0])],
      ["trailing byte", Buffer.from([0x01, 0x02])],
      ["0xc1", Buffer.from([0xc1])],
      ["truncated str", Buffer.from([0xa5, 0x61])],
      ["empty input", Buffer.alloc(0)],
      ["array count past the input", Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])],
    ];
    for (const [what, bytes] of cases) assert.equal(plain.decode(bytes), NOT_PLAIN, what);
    // 64 levels are within the limit, and one more with the ITEMS allowance.
    assert.deepEqual(plain.decode(encoder.encode(deep(64))), deep(64));
    assert.deepEqual(plain.decode(encoder.encode(deep(65)), 1), deep(65));
    // Numbers as keys become property names, as in the general decoder.
    assert.deepEqual(plain.decode(Buffer.from([0x82, 0x01, 0xa1, 0x61, 0xcc, 0xc8, 0xc0])), { 1: "a", 200: null });
  });

  it("leaves invalid UTF-8 to the general decoder, which keeps a lone surrogate as it was sent", () => {
    const plain = new PlainDecoder(LIMITS);
    const lone = Buffer.from([0xa3, 0xed, 0xa0, 0x80]);
    assert.equal(plain.decode(lone), NOT_PLAIN);
    assert.equal(plain.decode(Buffer.from([0x81, 0xa3, 0xed, 0xa0, 0x80, 0x01])), NOT_PLAIN, "as a key too");
    const codec = new MsgpackCodec();
    assert.equal(codec.decode(lone), general.decode(lone));
  });

  it("returns binary as a view of the input, like the general decoder", () => {
    const plain = new PlainDecoder(LIMITS);
    const bytes = Buffer.from(encoder.encode({ data: Buffer.from([1, 2, 3]) }));
    const { data } = plain.decode(bytes) as { data: Uint8Array };
    assert.deepEqual([...data], [1, 2, 3]);
    assert.equal(data.buffer, bytes.buffer, "a view, not a copy");
    assert.equal(Buffer.isBuffer(data), Buffer.isBuffer((general.decode(bytes) as { data: Uint8Array }).data));
  });

  it("the codec gives the general decoder's errors and extension values through the fast path", () => {
    const codec = new MsgpackCodec({ maxArrayLength: 10 });
    assert.throws(
      () => codec.decode(encoder.encode(Array.from({ length: 11 }, () => 0))),
      (e: unknown) => (e as { code?: string }).code === "PROTOCOL_ERROR" && /maxArrayLength/.test((e as Error).message),
    );
    assert.throws(
      () => codec.decode(Buffer.from([0x81, 0xa9, ...Buffer.from("__proto__"), 0x01])),
      (e: unknown) => (e as { code?: string }).code === "PROTOCOL_ERROR" && /__proto__/.test((e as Error).message),
    );
    assert.deepEqual(codec.decode(codec.encode({ at: new Date(1000), n: 12345678901234567890n })), {
      at: new Date(1000),
      n: 12345678901234567890n,
    });
  });
});
