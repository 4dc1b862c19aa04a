import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Decoder, Encoder } from "@msgpack/msgpack";
import { ObjectShapes } from "../../src/protocol/object-shapes.js";
import { PlainDecoder } from "../../src/protocol/plain-decoder.js";

const LIMITS = { maxStrLength: 1 << 20, maxBinLength: 1 << 20, maxArrayLength: 1000, maxMapLength: 100, maxDepth: 64 };
const general = new Decoder({ ...LIMITS, maxExtLength: 1024 });
const encoder = new Encoder({ ignoreUndefined: false });

/** Decodes `bytes` often enough for its key sequences to get makers, checking every result against the general decoder. */
function decodeRepeatedly(plain: PlainDecoder, bytes: Uint8Array, label: string): void {
  const expected = general.decode(bytes) as Record<string, unknown>;
  for (let round = 0; round < 20; round++) {
    const ours = plain.decode(bytes) as Record<string, unknown>;
    assert.deepEqual(ours, expected, `${label}, round ${round}`);
    assert.deepEqual(Object.keys(ours), Object.keys(expected), `${label}, round ${round}: key order`);
    assert.equal(Object.getPrototypeOf(ours), Object.prototype, label);
    for (const key of Object.keys(ours)) {
      assert.deepEqual(Object.getOwnPropertyDescriptor(ours, key), Object.getOwnPropertyDescriptor(expected, key), `${label}: ${key}`);
    }
  }
}

/** A map of raw entries (keys may repeat, or be numbers), as another implementation might send it. */
function rawMap(entries: Array<[unknown, unknown]>): Uint8Array {
  const parts = entries.flatMap(([k, v]) => [Buffer.from(encoder.encode(k)), Buffer.from(encoder.encode(v))]);
  return Buffer.concat([Buffer.from([0x80 + entries.length]), ...parts]);
}

describe("ObjectShapes", () => {
  it("makes a maker for a key sequence once it has been met 8 times, building the literal of its keys", () => {
    const shapes = new ObjectShapes();
    let node = shapes.next(shapes.root, "seq");
    node = shapes.next(node!, "value");
    for (let i = 1; i < 8; i++) assert.equal(shapes.maker(node!), undefined, `use ${i}`);
    const maker = shapes.maker(node!);
    assert.ok(maker !== undefined);
    assert.deepEqual(maker(1, "item", undefined, undefined), { seq: 1, value: "item" });
    assert.equal(shapes.next(shapes.next(shapes.root, "seq")!, "value"), node, "the same sequence is the same node");
    assert.notEqual(shapes.next(shapes.root, "value"), shapes.next(shapes.root, "seq"));
  });

  it("tracks no sequence with a key longer than 64 characters, and at most 2,048 sequences", () => {
    const shapes = new ObjectShapes();
    assert.equal(shapes.next(shapes.root, "k".repeat(65)), undefined);
    assert.ok(shapes.next(shapes.root, "k".repeat(64)) !== undefined);
    let tracked = 0;
    for (let i = 0; i < 3000; i++) if (shapes.next(shapes.root, `key${i}`) !== undefined) tracked++;
    assert.equal(tracked, 2046, "the root and the 64-character key count too");
    assert.ok(shapes.next(shapes.root, "key5") !== undefined, "sequences already tracked still are");
  });

  it("writes every key into the maker as a string literal, whatever characters it holds", () => {
    const shapes = new ObjectShapes();
    const hostile = ['"}; throw new Error("injected"); ({"', "a\\", "line\nbreak", "\u2028\u2029", "`${x}`", "</script>", "", "0"];
    for (const key of hostile) {
      const node = shapes.next(shapes.next(shapes.root, key)!, "after")!;
      let maker;
      for (let i = 0; i < 8; i++) maker = shapes.maker(node);
      assert.ok(maker !== undefined, JSON.stringify(key));
      const made = maker(1, 2, undefined, undefined);
      const assigned: Record<string, unknown> = {};
      assigned[key] = 1;
      assigned["after"] = 2;
      assert.deepEqual(made, assigned, JSON.stringify(key));
      assert.deepEqual(Object.keys(made), Object.keys(assigned), JSON.stringify(key));
      assert.equal(made[key], 1);
    }
  });
});

describe("PlainDecoder builds small maps by key sequence", () => {
  it("gives what the general decoder gives, before and after a sequence has its maker, for 1 to 6 keys and nested maps", () => {
    const plain = new PlainDecoder(LIMITS);
    const values: unknown[] = [
      { seq: 1, value: "item" },
      { a: 1 },
      { a: 1, b: [1, { c: null }], c: { d: { e: "f" } }, d: true },
      { one: 1, two: 2, three: 3, four: 4, five: 5 },
      { one: 1, two: 2, three: 3, four: 4, five: 5, six: 6 },
      { constructor: 1, toString: "x", hasOwnProperty: null, then: 2 },
      { "1": "one", b: "two", "0": "zero" },
      {},
    ];
    for (const value of values) decodeRepeatedly(plain, encoder.encode(value), JSON.stringify(value));
  });

  it("keeps the last of repeated keys where the first was, and names number keys as assignment does", () => {
    const plain = new PlainDecoder(LIMITS);
    decodeRepeatedly(
      plain,
      rawMap([
        ["a", 1],
        ["b", 2],
        ["a", 3],
      ]),
      "repeated key",
    );
    decodeRepeatedly(
      plain,
      rawMap([
        [1, "int"],
        [-1, "negative"],
        [1.5, "float"],
        ["x", 0],
      ]),
      "number keys",
    );
    decodeRepeatedly(
      plain,
      rawMap([
        ["'\"\\\n\u2028", 1],
        ["}", 2],
      ]),
      "keys with quotes, backslashes and line breaks",
    );
  });

  it("still leaves __proto__ keys to the general decoder", () => {
    const plain = new PlainDecoder(LIMITS);
    const bytes = rawMap([
      ["__proto__", { polluted: true }],
      ["a", 1],
    ]);
    for (let i = 0; i < 10; i++) assert.equal(typeof plain.decode(bytes), "symbol", "NOT_PLAIN");
    assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
  });

  it("decodes the same where code generation from strings is disallowed", () => {
    const script = `
      import { PlainDecoder } from ${JSON.stringify(fileURLToPath(new URL("../../src/protocol/plain-decoder.js", import.meta.url)))};
      import { encode } from "@msgpack/msgpack";
      const plain = new PlainDecoder(${JSON.stringify(LIMITS)});
      const bytes = encode({ seq: 7, value: "item" });
      const out = [];
      for (let i = 0; i < 20; i++) out.push(plain.decode(bytes));
      console.log(JSON.stringify(out[19]));
    `;
    const result = spawnSync(process.execPath, ["--disallow-code-generation-from-strings", "--input-type=module", "-e", script], {
      cwd: fileURLToPath(new URL("../../..", import.meta.url)),
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { seq: 7, value: "item" });
  });
});
