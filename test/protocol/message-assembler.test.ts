import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { MessageAssembler } from "../../src/protocol/message-assembler.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";

const F = FrameFlag.FOLLOWS;

function bytes(text: string): Buffer {
  return Buffer.from(text);
}

function rejects(code: ErrorCode, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RpcError, `expected an RpcError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

describe("MessageAssembler", () => {
  it("reassembles messages of interleaved streams", () => {
    const asm = new MessageAssembler({ maxMessageSize: 1000, maxBufferedBytes: 10_000 });
    assert.equal(asm.add(FrameType.CALL, F, 1, bytes("a1-")), null);
    assert.equal(asm.add(FrameType.ITEM, F, 2, bytes("b1-")), null);
    assert.equal(asm.busy, true);
    assert.equal(asm.has(1), true);
    assert.equal(asm.has(2), true);
    assert.equal(asm.has(3), false);
    // A whole message on a third stream passes straight through meanwhile.
    assert.equal(asm.add(FrameType.RESULT, 0, 3, bytes("c"))?.toString(), "c");
    assert.equal(asm.add(FrameType.CALL, F, 1, bytes("a2-")), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 2, bytes("b2"))?.toString(), "b1-b2");
    assert.equal(asm.has(2), false);
    assert.equal(asm.add(FrameType.CALL, F, 1, Buffer.alloc(0)), null);
    assert.equal(asm.add(FrameType.CALL, 0, 1, bytes("a3"))?.toString(), "a1-a2-a3");
    assert.equal(asm.busy, false);
    // The stream can carry another message afterwards.
    assert.equal(asm.add(FrameType.ITEM, F, 2, bytes("x")), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 2, bytes("y"))?.toString(), "xy");
  });

  it("keeps a fragment that is most of its chunk's memory as a view while the message is at most 256 KiB, and copies the rest", () => {
    const asm = new MessageAssembler({ maxMessageSize: 1 << 20, maxBufferedBytes: 1 << 22 });
    // Chunks of memory of their own, as Node reads a socket into.
    const chunk = (size: number, fill: number): Buffer => Buffer.allocUnsafeSlow(size).fill(fill);
    const whole = chunk(1000, 1);
    const mostly = chunk(1000, 2).subarray(0, 600);
    const little = chunk(1000, 3).subarray(0, 400);
    asm.add(FrameType.RESULT, F, 1, whole);
    asm.add(FrameType.RESULT, F, 1, mostly);
    asm.add(FrameType.RESULT, F, 1, little);
    // A change after adding shows through a kept view only.
    for (const b of [whole, mostly, little]) b.fill(9);
    const joined = asm.add(FrameType.RESULT, 0, 1, Buffer.alloc(0)) as Buffer;
    assert.deepEqual([joined[0], joined[1000], joined[1600]], [9, 9, 3]);
    // Past 256 KiB, fragments are copied (views would hold their chunks until the message is complete).
    const early = chunk(200 * 1024, 4);
    const late = chunk(100 * 1024, 5);
    const parts = [chunk(10 * 1024, 6), chunk(10 * 1024, 7)];
    asm.add(FrameType.RESULT, F, 3, early);
    asm.add(FrameType.RESULT, F, 3, late);
    assert.equal(asm.addParts(FrameType.RESULT, F, 3, parts, 20 * 1024), null);
    for (const b of [early, late, ...parts]) b.fill(9);
    const large = asm.add(FrameType.RESULT, 0, 3, Buffer.alloc(0)) as Buffer;
    assert.equal(large.length, 320 * 1024);
    assert.deepEqual([large[0], large[200 * 1024], large[300 * 1024], large[310 * 1024]], [9, 5, 6, 7]);
  });

  it("joins fragments given as parts, within the same limits, their bytes copied once", () => {
    const asm = new MessageAssembler({ maxMessageSize: 100, maxBufferedBytes: 1000 });
    const a = Buffer.allocUnsafeSlow(30).fill(0x61);
    const b = Buffer.allocUnsafeSlow(30).fill(0x62);
    assert.equal(asm.addParts(FrameType.ITEM, F, 1, [a, b.subarray(0, 20)], 50), null);
    a.fill(0x41); // a kept view: shows through
    assert.equal(
      asm.addParts(FrameType.ITEM, 0, 1, [b.subarray(20), Buffer.from("z")], 11)?.toString(),
      `${"A".repeat(30)}${"b".repeat(30)}z`,
    );
    // A message in parts over the limit is refused and the rest of it dropped.
    assert.equal(asm.addParts(FrameType.ITEM, F, 3, [Buffer.alloc(60), Buffer.alloc(30)], 90), null);
    assert.throws(
      () => asm.addParts(FrameType.ITEM, F, 3, [Buffer.alloc(10), Buffer.alloc(10)], 20),
      rejects(ErrorCode.RESOURCE_EXHAUSTED),
    );
    assert.equal(asm.addParts(FrameType.ITEM, 0, 3, [Buffer.alloc(10), Buffer.alloc(10)], 20), null);
    assert.equal(asm.busy, false);
  });

  it("copies a fragment that is a small part of its memory: later changes to that memory do not leak in", () => {
    const asm = new MessageAssembler({ maxMessageSize: 1000, maxBufferedBytes: 10_000 });
    const chunk = bytes("first");
    asm.add(FrameType.ITEM, F, 1, chunk);
    chunk.fill(0x21);
    assert.equal(asm.add(FrameType.ITEM, 0, 1, bytes("+last"))?.toString(), "first+last");
  });

  it("keeps an owned fragment (one the frame decoder already copied) without copying it again", () => {
    const asm = new MessageAssembler({ maxMessageSize: 1000, maxBufferedBytes: 10_000 });
    const owned = bytes("first");
    asm.add(FrameType.ITEM, F, 1, owned, true);
    // Not copied: the assembler holds this very buffer (a change shows through).
    owned.write("FIRST");
    assert.equal(asm.add(FrameType.ITEM, 0, 1, bytes("+last"))?.toString(), "FIRST+last");
  });

  it("returns the same Buffer for a single-frame message", () => {
    const asm = new MessageAssembler({ maxMessageSize: 10, maxBufferedBytes: 100 });
    const payload = bytes("whole");
    assert.equal(asm.add(FrameType.RESULT, 0, 1, payload), payload);
    // Also while another stream is mid-message.
    asm.add(FrameType.ITEM, F, 3, bytes("part"));
    assert.equal(asm.add(FrameType.RESULT, 0, 5, payload), payload);
  });

  it("drops an oversized message after one RESOURCE_EXHAUSTED, then the stream works again", () => {
    const asm = new MessageAssembler({ maxMessageSize: 10, maxBufferedBytes: 1000 });
    assert.equal(asm.add(FrameType.ITEM, F, 7, Buffer.alloc(6)), null);
    assert.throws(
      () => asm.add(FrameType.ITEM, F, 7, Buffer.alloc(6)),
      (e: unknown) => {
        rejects(ErrorCode.RESOURCE_EXHAUSTED, /maximum message size of 10 bytes/)(e);
        assert.deepEqual((e as RpcError).data, { streamId: 7, limit: 10 });
        return true;
      },
    );
    // The rest of that message is dropped silently, however large.
    assert.equal(asm.add(FrameType.ITEM, F, 7, Buffer.alloc(500)), null);
    assert.equal(asm.add(FrameType.ITEM, F, 7, Buffer.alloc(500)), null);
    assert.equal(asm.has(7), true);
    // Other streams are unaffected meanwhile.
    assert.equal(asm.add(FrameType.ITEM, F, 9, bytes("ok")), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 9, bytes("!"))?.toString(), "ok!");
    // The last fragment ends the discarding and is itself dropped.
    assert.equal(asm.add(FrameType.ITEM, 0, 7, bytes("tail")), null);
    assert.equal(asm.has(7), false);
    assert.equal(asm.busy, false);
    // The next message on that stream is assembled normally.
    assert.equal(asm.add(FrameType.ITEM, F, 7, bytes("new ")), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 7, bytes("msg"))?.toString(), "new msg");
  });

  it("rejects an oversized last fragment without discarding what follows", () => {
    const asm = new MessageAssembler({ maxMessageSize: 10, maxBufferedBytes: 1000 });
    asm.add(FrameType.RESULT, F, 1, Buffer.alloc(10));
    assert.throws(() => asm.add(FrameType.RESULT, 0, 1, Buffer.alloc(1)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    assert.equal(asm.busy, false);
    const next = bytes("next");
    assert.equal(asm.add(FrameType.RESULT, 0, 1, next), next);
    // A first fragment already over the limit starts discarding at once.
    assert.throws(() => asm.add(FrameType.ITEM, F, 3, Buffer.alloc(11)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    assert.equal(asm.add(FrameType.ITEM, 0, 3, Buffer.alloc(1)), null);
    // So is a single-frame message over the limit, with nothing to discard after it.
    assert.throws(() => asm.add(FrameType.CALL, 0, 7, Buffer.alloc(11)), rejects(ErrorCode.RESOURCE_EXHAUSTED, /CALL message on stream 7/));
    assert.equal(asm.busy, false);
    assert.equal(asm.add(FrameType.CALL, 0, 7, Buffer.alloc(10))?.length, 10);
    // A message of exactly the limit is fine.
    asm.add(FrameType.ITEM, F, 5, Buffer.alloc(4));
    assert.equal(asm.add(FrameType.ITEM, 0, 5, Buffer.alloc(6))?.length, 10);
  });

  it("fails only the message that would push incomplete messages past the total limit", () => {
    const asm = new MessageAssembler({ maxMessageSize: 100, maxBufferedBytes: 150 });
    asm.add(FrameType.ITEM, F, 1, Buffer.alloc(80));
    asm.add(FrameType.ITEM, F, 3, Buffer.alloc(70));
    assert.throws(
      () => asm.add(FrameType.ITEM, F, 5, Buffer.alloc(1)),
      rejects(ErrorCode.RESOURCE_EXHAUSTED, /reassembly limit of 150 bytes/),
    );
    // The rest of stream 5's message is dropped quietly, through its last fragment.
    assert.equal(asm.add(FrameType.ITEM, F, 5, Buffer.alloc(1)), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 5, Buffer.alloc(1)), null);
    assert.equal(asm.has(5), false);
    // Streams 1 and 3 are untouched and complete normally.
    assert.equal(asm.add(FrameType.ITEM, 0, 1, Buffer.alloc(0))?.length, 80);
    assert.equal(asm.add(FrameType.ITEM, 0, 3, Buffer.alloc(10))?.length, 80);
    assert.equal(asm.busy, false);
  });

  it("rejects a different frame type interrupting a fragmented message", () => {
    const asm = new MessageAssembler({ maxMessageSize: 100, maxBufferedBytes: 1000 });
    asm.add(FrameType.CALL, F, 1, bytes("head"));
    for (const type of [FrameType.ITEM, FrameType.END, FrameType.RESULT, FrameType.CREDIT]) {
      for (const flags of [0, F]) {
        assert.throws(
          () => asm.add(type, flags, 1, bytes("x")),
          rejects(ErrorCode.PROTOCOL_ERROR, /frame on stream 1 interrupts a fragmented CALL message/),
        );
      }
    }
  });

  it("lets ERROR and CANCEL cut off a partial message and delivers them", () => {
    const asm = new MessageAssembler({ maxMessageSize: 100, maxBufferedBytes: 100 });
    asm.add(FrameType.ITEM, F, 1, Buffer.alloc(60));
    const error = bytes("error body");
    assert.equal(asm.add(FrameType.ERROR, 0, 1, error), error);
    assert.equal(asm.has(1), false);
    // The voided 60 bytes no longer count against the total.
    assert.equal(asm.add(FrameType.ITEM, F, 3, Buffer.alloc(90)), null);
    const cancel = Buffer.alloc(0);
    assert.equal(asm.add(FrameType.CANCEL, 0, 3, cancel), cancel);
    assert.equal(asm.busy, false);
    // A fragmented ERROR cutting off a RESULT is itself reassembled.
    asm.add(FrameType.RESULT, F, 5, Buffer.alloc(50));
    assert.equal(asm.add(FrameType.ERROR, F, 5, bytes("e1")), null);
    assert.equal(asm.add(FrameType.ERROR, 0, 5, bytes("e2"))?.toString(), "e1e2");
  });

  it("delivers ERROR or CANCEL cutting off a message that is being discarded", () => {
    const asm = new MessageAssembler({ maxMessageSize: 10, maxBufferedBytes: 100 });
    assert.throws(() => asm.add(FrameType.CALL, F, 1, Buffer.alloc(20)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    const cancel = Buffer.alloc(0);
    assert.equal(asm.add(FrameType.CANCEL, 0, 1, cancel), cancel);
    assert.equal(asm.busy, false);
    assert.throws(() => asm.add(FrameType.RESULT, F, 3, Buffer.alloc(20)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    assert.throws(
      () => asm.add(FrameType.ITEM, 0, 3, Buffer.alloc(1)),
      rejects(ErrorCode.PROTOCOL_ERROR, /interrupts a fragmented RESULT/),
    );
    const error = bytes("err");
    assert.equal(asm.add(FrameType.ERROR, 0, 3, error), error);
    assert.equal(asm.busy, false);
  });

  it("forget releases a stream's bytes and its discarding state", () => {
    const asm = new MessageAssembler({ maxMessageSize: 100, maxBufferedBytes: 150 });
    asm.add(FrameType.ITEM, F, 1, Buffer.alloc(100));
    assert.throws(() => asm.add(FrameType.ITEM, F, 3, Buffer.alloc(60)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    asm.forget(1);
    asm.forget(3);
    assert.equal(asm.has(1), false);
    // With stream 1's bytes released, 100 + 50 fits again.
    assert.equal(asm.add(FrameType.ITEM, F, 5, Buffer.alloc(100)), null);
    assert.equal(asm.add(FrameType.ITEM, F, 7, Buffer.alloc(50)), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 7, Buffer.alloc(0))?.length, 50);
    // forget of an unknown stream changes nothing.
    asm.forget(99);
    assert.throws(() => asm.add(FrameType.ITEM, F, 9, Buffer.alloc(51)), rejects(ErrorCode.RESOURCE_EXHAUSTED));

    // A stream closed while its oversized message was being discarded is not left busy.
    const other = new MessageAssembler({ maxMessageSize: 10, maxBufferedBytes: 100 });
    assert.throws(() => other.add(FrameType.ITEM, F, 2, Buffer.alloc(11)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    other.forget(2);
    assert.equal(other.busy, false);
    assert.equal(other.has(2), false);
  });

  it("clear releases everything", () => {
    const asm = new MessageAssembler({ maxMessageSize: 100, maxBufferedBytes: 150 });
    asm.add(FrameType.ITEM, F, 1, Buffer.alloc(100));
    asm.add(FrameType.ITEM, F, 3, Buffer.alloc(50));
    assert.throws(() => asm.add(FrameType.ITEM, F, 5, Buffer.alloc(101)), rejects(ErrorCode.RESOURCE_EXHAUSTED));
    asm.clear();
    assert.equal(asm.busy, false);
    assert.equal(asm.has(1), false);
    assert.equal(asm.has(5), false);
    assert.equal(asm.add(FrameType.ITEM, F, 1, Buffer.alloc(100)), null);
    assert.equal(asm.add(FrameType.ITEM, F, 3, Buffer.alloc(50)), null);
    assert.equal(asm.add(FrameType.ITEM, 0, 1, Buffer.alloc(0))?.length, 100);
  });
});
