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

  it("takes bytes as views of the chunks they lie in, copying nothing", () => {
    const list = new ChunkList();
    const chunks = ["abc", "defgh", "ij"].map((text) => Buffer.from(text));
    for (const chunk of chunks) list.push(chunk);
    assert.equal(list.firstLength, 3);
    const parts = list.takeParts(6);
    assert.deepEqual(
      parts.map((p) => p.toString()),
      ["abc", "def"],
    );
    assert.equal(parts[0], chunks[0], "a whole chunk is given as it is");
    assert.equal(parts[1]?.buffer, chunks[1]?.buffer);
    assert.equal(list.copied, false);
    assert.equal(list.length, 4);
    assert.equal(list.firstLength, 2);
    assert.deepEqual(
      list.takeParts(4).map((p) => p.toString()),
      ["gh", "ij"],
    );
    assert.equal(list.length, 0);
    assert.equal(list.count, 0);
    assert.equal(list.firstLength, 0);
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

describe("ChunkList that has never held bytes", () => {
  it("keeps what is pushed to itself: empty lists share nothing a push can reach", () => {
    const a = new ChunkList();
    const b = new ChunkList();
    assert.deepEqual(a.drain(), []);
    a.push(Buffer.from("ab"));
    assert.deepEqual([a.count, b.count, b.length], [1, 0, 0]);
    assert.deepEqual(b.drain(), []);
    b.push(Buffer.from("xyz"));
    assert.equal(a.take(2).toString(), "ab");
    assert.equal(b.take(3).toString(), "xyz");
  });

  it("takes pushes again after clear, gather and drain", () => {
    const list = new ChunkList();
    list.push(Buffer.from("a"));
    list.clear();
    assert.deepEqual([list.length, list.count], [0, 0]);
    list.push(Buffer.from("bc"));
    assert.equal(list.gather(2).toString(), "bc");
    list.push(Buffer.from("d"));
    assert.deepEqual(
      list.drain().map((b) => b.toString()),
      ["d"],
    );
    list.push(Buffer.from("ef"));
    list.push(Buffer.from("g"));
    assert.equal(list.take(3).toString(), "efg");
    assert.equal(list.gather(4).length, 4, "gathering nothing still gives a buffer of the size asked");
  });
});
