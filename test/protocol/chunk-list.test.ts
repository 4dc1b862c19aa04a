import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChunkList } from "../../src/protocol/chunk-list.js";

describe("ChunkList", () => {
  it("takes bytes in order: a view within the first chunk, one copy across chunks", () => {
    const list = new ChunkList();
    const a = Buffer.from("abcd");
    list.push(a);
    list.push(Buffer.from("efgh"));
    assert.equal(list.length, 8);
    assert.equal(list.count, 2);
    const ab = list.take(2);
    assert.equal(ab.toString(), "ab");
    assert.equal(list.copied, false);
    assert.equal(ab.buffer, a.buffer, "a view of the chunk");
    const cdef = list.take(4);
    assert.equal(cdef.toString(), "cdef");
    assert.equal(list.copied, true);
    assert.equal(list.length, 2);
    assert.equal(list.take(2).toString(), "gh");
    assert.equal(list.length, 0);
    assert.equal(list.count, 0);
  });

  it("gathers what it holds into the start of a buffer of a given size, and drains its chunks", () => {
    const list = new ChunkList();
    for (const part of ["ab", "c", "de"]) list.push(Buffer.from(part));
    const target = list.gather(8);
    assert.equal(target.length, 8);
    assert.equal(target.subarray(0, 5).toString(), "abcde");
    assert.deepEqual([list.length, list.count], [0, 0]);
    list.push(Buffer.from("x"));
    list.push(Buffer.from("yz"));
    assert.deepEqual(
      list.drain().map((b) => b.toString()),
      ["x", "yz"],
    );
    assert.deepEqual([list.length, list.count], [0, 0]);
  });
});
