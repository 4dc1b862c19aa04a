import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BulkBufferPool, POOLED_MIN_BYTES, bulkBuffers } from "../../src/protocol/bulk-buffer-pool.js";
import { FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { FrameDecoder } from "../../src/protocol/frame-decoder.js";
import { FrameWriter, type FrameSocket } from "../../src/protocol/frame-writer.js";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { PlainEncoder } from "../../src/protocol/plain-encoder.js";

const KiB = 1024;
const MiB = 1024 * KiB;

function pattern(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

describe("BulkBufferPool", () => {
  it("hands out whole buffers of at least the size asked, in 64 KiB steps, over memory of their own", () => {
    const pool = new BulkBufferPool();
    for (const size of [1, POOLED_MIN_BYTES - 1, POOLED_MIN_BYTES, POOLED_MIN_BYTES + 1, 3 * MiB + 5]) {
      const buffer = pool.take(size);
      assert.ok(buffer.length >= size, `${buffer.length} for ${size}`);
      assert.equal(buffer.length % POOLED_MIN_BYTES, 0);
      assert.ok(buffer.length < size + POOLED_MIN_BYTES);
      assert.equal(buffer.byteOffset, 0);
      assert.equal(buffer.buffer.byteLength, buffer.length);
    }
  });

  it("gives back the smallest kept buffer that fits, and not one more than twice the size asked", () => {
    const pool = new BulkBufferPool();
    const small = pool.take(100 * KiB);
    const middle = pool.take(1 * MiB);
    const large = pool.take(4 * MiB);
    for (const b of [large, small, middle]) pool.give(b.buffer as ArrayBuffer);
    assert.equal(pool.count, 3);
    assert.equal(pool.take(900 * KiB).buffer, middle.buffer);
    // 4 MiB is more than twice 1.5 MiB: a new buffer, the kept one stays.
    const fresh = pool.take(1.5 * MiB);
    assert.notEqual(fresh.buffer, large.buffer);
    assert.equal(pool.count, 2);
    assert.equal(pool.take(3 * MiB).buffer, large.buffer);
    assert.equal(pool.take(40 * KiB).buffer, small.buffer);
    assert.equal(pool.count, 0);
    assert.equal(pool.bytes, 0);
  });

  it("keeps at most its limits in bytes and in buffers, and never memory it cannot have made", () => {
    const pool = new BulkBufferPool({ maxBytes: 1 * MiB, maxBuffers: 3 });
    pool.give(pool.take(600 * KiB).buffer as ArrayBuffer);
    pool.give(pool.take(600 * KiB).buffer as ArrayBuffer); // would pass 1 MiB
    assert.equal(pool.count, 1);
    for (let i = 0; i < 5; i++) pool.give(pool.take(64 * KiB).buffer as ArrayBuffer);
    // The takes above reused one another's buffers: fill with distinct ones.
    const held = [pool.take(64 * KiB), pool.take(64 * KiB), pool.take(64 * KiB)];
    for (const b of held) pool.give(b.buffer as ArrayBuffer);
    assert.equal(pool.count, 3);
    assert.ok(pool.bytes <= 1 * MiB);
    const other = new BulkBufferPool();
    // A slice of Node's shared buffer pool, and memory of odd sizes.
    other.give(Buffer.allocUnsafe(100).buffer as ArrayBuffer);
    other.give(new ArrayBuffer(100 * KiB));
    other.give(new ArrayBuffer(32 * KiB));
    assert.equal(other.count, 0);
    other.give(new ArrayBuffer(128 * KiB));
    assert.equal(other.count, 1);
  });
});

describe("PlainEncoder.release", () => {
  it("hands over the pooled memory of a large encoding and goes back to its small buffer", () => {
    const encoder = new PlainEncoder(64);
    const data = pattern(300 * KiB, 1);
    const view = encoder.encode([data]) as Uint8Array;
    assert.equal(view.byteOffset, 0);
    assert.ok(view.buffer.byteLength >= POOLED_MIN_BYTES);
    assert.equal(encoder.release(view), true);
    // The next encodings do not touch the released memory.
    const copy = Buffer.from(view);
    const small = encoder.encode({ a: 1 }) as Uint8Array;
    assert.notEqual(small.buffer, view.buffer);
    const other = encoder.encode([pattern(300 * KiB, 2)]) as Uint8Array;
    assert.notEqual(other.buffer, view.buffer);
    assert.ok(Buffer.from(view).equals(copy));
    // Once only, and only the last encoding's memory.
    assert.equal(encoder.release(view), false);
    assert.equal(encoder.release(other.subarray(0, 10)), true);
  });

  it("releases nothing for a small encoding, a foreign view or a stale one", () => {
    const encoder = new PlainEncoder(64);
    const small = encoder.encode([1, 2, 3]) as Uint8Array;
    assert.equal(encoder.release(small), false);
    // Grown past its first buffer, but not into pooled memory: nothing to hand over.
    const middle = encoder.encode([Buffer.alloc(20 * KiB)]) as Uint8Array;
    assert.ok(middle.buffer.byteLength < POOLED_MIN_BYTES);
    assert.equal(encoder.release(middle), false);
    assert.equal(encoder.release(Buffer.alloc(200 * KiB)), false);
    const large = encoder.encode([pattern(200 * KiB, 3)]) as Uint8Array;
    // An encoding that outgrew the 200 KiB buffer moved to a larger one: the old view is stale.
    const larger = encoder.encode([pattern(1 * MiB, 4)]) as Uint8Array;
    assert.notEqual(larger.buffer, large.buffer);
    assert.equal(encoder.release(large), false);
    assert.equal(encoder.release(larger), true);
  });

  it("encodes values that outgrow its buffer into pooled memory, byte for byte what the general encoder writes", () => {
    const encoder = new PlainEncoder(64);
    const codec = new MsgpackCodec();
    const values = [
      [pattern(1 * MiB, 5), "after"],
      { list: Array.from({ length: 40_000 }, (_, i) => i * 7), tail: pattern(70 * KiB, 6) },
      ["x".repeat(200 * KiB), pattern(10, 7)],
    ];
    for (const value of values) {
      const view = encoder.encode(value) as Uint8Array;
      assert.ok(view.buffer.byteLength >= POOLED_MIN_BYTES);
      assert.ok(Buffer.from(view).equals(codec.encode(value)));
    }
  });
});

/** A socket that records writes and reports `pending` bytes as unwritten until told otherwise. */
function backedSocket(): FrameSocket & { writes: Buffer[]; pending: number; drain: () => void } {
  let onDrain: (() => void) | undefined;
  const socket = {
    writes: [] as Buffer[],
    pending: 0,
    write(chunk: Uint8Array): boolean {
      socket.writes.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      return socket.pending === 0;
    },
    cork() {},
    uncork() {},
    get writableLength() {
      return socket.pending;
    },
    destroyed: false,
    on(_event: "drain", listener: () => void) {
      onDrain = listener;
    },
    drain() {
      socket.pending = 0;
      onDrain?.call(socket);
    },
  };
  return socket;
}

/** Decodes recorded writes into each stream's joined payload and its frames' flags. */
function received(writes: readonly Buffer[]): Map<number, { bytes: Buffer; flags: number[] }> {
  const out = new Map<number, { bytes: Buffer[]; flags: number[] }>();
  const decoder = new FrameDecoder(
    {
      onFrame(_type, flags, streamId, payload) {
        const entry = out.get(streamId) ?? { bytes: [], flags: [] };
        entry.bytes.push(Buffer.from(payload));
        entry.flags.push(flags);
        out.set(streamId, entry);
      },
    },
    { maxFrameSize: 1 << 30, allowedFlags: FrameFlag.FOLLOWS },
  );
  for (const write of writes) decoder.push(Buffer.from(write));
  return new Map([...out].map(([id, e]) => [id, { bytes: Buffer.concat(e.bytes), flags: e.flags }]));
}

async function flushAll(writer: FrameWriter, socket: { writes: Buffer[] }, turns = 200): Promise<void> {
  for (let i = 0; i < turns && writer.queuedBulkBytes > 0; i++) {
    writer.flush();
    await new Promise((resolve) => setImmediate(resolve));
  }
  writer.flush();
  assert.equal(writer.queuedBulkBytes, 0, `still queued after ${socket.writes.length} writes`);
}

describe("FrameWriter and the pool", () => {
  it("copies a borrowed large message into pooled memory and gives it back only once the socket has written it all", async () => {
    const pool = new BulkBufferPool();
    const socket = backedSocket();
    const writer = new FrameWriter(socket, { pool, fragmentSize: 64 * KiB, highWaterMark: 16 * MiB });
    const message = pattern(1 * MiB, 7);
    const expected = Buffer.from(message);
    socket.pending = 1; // the socket reports unwritten bytes throughout
    writer.writeMessage(FrameType.RESULT, 1, message);
    message.fill(0); // the caller's buffer is free at once
    await flushAll(writer, socket);
    assert.equal(pool.count, 0, "not given back while the socket holds unwritten bytes");
    socket.drain();
    assert.equal(pool.count, 1);
    assert.ok(pool.bytes >= expected.length);
    const got = received(socket.writes).get(1);
    assert.ok(got?.bytes.equals(expected));
  });

  it("gives back at the flush that finds the socket empty when no drain is due", async () => {
    const pool = new BulkBufferPool();
    const socket = backedSocket();
    const writer = new FrameWriter(socket, { pool, highWaterMark: 16 * MiB });
    writer.writeMessage(FrameType.RESULT, 1, pattern(300 * KiB, 8));
    await flushAll(writer, socket);
    assert.equal(pool.count, 1);
  });

  it("sends a pooled message from its memory without a copy, and a small pooled one from the batch", async () => {
    const pool = new BulkBufferPool();
    const socket = backedSocket();
    const writer = new FrameWriter(socket, { pool, fragmentSize: 64 * KiB, highWaterMark: 16 * MiB });
    const memory = pool.take(500 * KiB);
    const data = memory.subarray(0, 400 * KiB);
    pattern(400 * KiB, 9).copy(data);
    writer.writeMessage(FrameType.RESULT, 1, data, "pooled");
    await flushAll(writer, socket);
    // Every fragment, the first too: 7 of at most 64 KiB.
    const fromMemory = socket.writes.filter((w) => w.buffer === memory.buffer);
    assert.equal(fromMemory.length, Math.ceil(400 / 64), "writes straight from the message's memory");
    assert.ok(
      received(socket.writes)
        .get(1)
        ?.bytes.equals(pattern(400 * KiB, 9)),
    );
    assert.equal(pool.count, 1);
    // A pooled message that fits one frame is copied into the batch; its memory goes back at once.
    const small = pool.take(100);
    writer.writeMessage(FrameType.RESULT, 3, small.subarray(0, 100).fill(3), "pooled");
    assert.equal(pool.count, 2);
    assert.equal(pool.take(100).buffer, small.buffer);
    writer.flush();
    assert.ok(received(socket.writes).get(3)?.bytes.equals(Buffer.alloc(100, 3)));
  });

  it("writes a two-part message's head into its first fragment and the rest from the second part", async () => {
    const pool = new BulkBufferPool();
    for (const bytes of ["borrowed", "pooled"] as const) {
      const socket = backedSocket();
      const writer = new FrameWriter(socket, { pool, fragmentSize: 64 * KiB, highWaterMark: 16 * MiB });
      const head = pattern(37, 10);
      const memory = pool.take(300 * KiB);
      const args = bytes === "pooled" ? memory.subarray(0, 300 * KiB) : pattern(300 * KiB, 11);
      if (bytes === "pooled") pattern(300 * KiB, 11).copy(args);
      writer.writeMessageParts(FrameType.CALL, 1, head, args, bytes);
      await flushAll(writer, socket);
      const got = received(socket.writes).get(1);
      assert.ok(got !== undefined && got.bytes.equals(Buffer.concat([head, pattern(300 * KiB, 11)])), bytes);
      assert.equal(got.flags.at(-1), 0);
      assert.ok(got.flags.slice(0, -1).every((f) => f === FrameFlag.FOLLOWS));
      // The first frame is a whole fragment, head and the start of the
      // arguments: 5 frames in all, not a frame of its own for the head.
      assert.equal(got.flags.length, Math.ceil((37 + 300 * KiB) / (64 * KiB)));
      // Only the head is copied into the batch: every byte of the arguments
      // is written from the pooled memory (the given one, or the copy).
      const fromPool = socket.writes.filter((w) => w.buffer.byteLength === 320 * KiB);
      assert.equal(
        fromPool.reduce((n, w) => n + w.length, 0),
        300 * KiB,
      );
      // Either way one pooled buffer (the copy, or the given memory) came back.
      assert.ok(pool.count >= 1);
    }
    // A small two-part message goes out as one frame.
    const socket = backedSocket();
    const writer = new FrameWriter(socket, { pool });
    writer.writeMessageParts(FrameType.CALL, 5, Buffer.from("head"), Buffer.from("args"));
    writer.flush();
    assert.deepEqual(received(socket.writes).get(5), { bytes: Buffer.from("headargs"), flags: [0] });
  });

  it("does not give back the memory of a message cut off by dropStream, nor after close", async () => {
    const pool = new BulkBufferPool();
    const socket = backedSocket();
    const writer = new FrameWriter(socket, { pool, highWaterMark: 128 * KiB });
    socket.pending = 1;
    writer.writeMessage(FrameType.RESULT, 1, pattern(1 * MiB, 12));
    writer.flush();
    assert.equal(writer.dropStream(1), true);
    writer.writeMessage(FrameType.RESULT, 3, pattern(200 * KiB, 13));
    await flushAll(writer, socket);
    writer.close();
    socket.drain();
    assert.equal(pool.count, 0);
  });

  it("uses the process-wide pool by default: a writer's next large message reuses another's memory", async () => {
    // A size no other test of this process keeps in the pool.
    const size = 5 * MiB + 3;
    const memories: ArrayBufferLike[] = [];
    for (let i = 0; i < 2; i++) {
      const socket = backedSocket();
      const writer = new FrameWriter(socket, { highWaterMark: 16 * MiB });
      writer.writeMessage(FrameType.RESULT, 1, pattern(size, 14 + i));
      await flushAll(writer, socket);
      assert.ok(
        received(socket.writes)
          .get(1)
          ?.bytes.equals(pattern(size, 14 + i)),
      );
      const fromPool = socket.writes.find((w) => w.buffer.byteLength >= size && w.buffer.byteLength % POOLED_MIN_BYTES === 0);
      assert.ok(fromPool !== undefined, "fragments written from pooled memory");
      memories.push(fromPool.buffer);
    }
    assert.equal(memories[0], memories[1]);
    assert.ok(bulkBuffers.count >= 1);
  });
});
