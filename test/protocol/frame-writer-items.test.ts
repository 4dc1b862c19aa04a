import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FRAME_HEADER_SIZE, FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { EARLY_FLUSH_BYTES, type FrameSocket, MAX_BATCH_BYTES, FrameWriter, type InPlaceEncoder } from "../../src/protocol/frame-writer.js";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { between, prng } from "./seeded-random.js";

/** The ITEMS payload header rapt writes: MessagePack array32, then the count. */
const ARRAY32 = 0xdd;
const ITEMS_HEADER_SIZE = 5;
/** The writer's largest slab: a batch of small frames (and so an ITEMS frame joined in place) stays within it. */

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
  /** Index of the socket write the frame's header arrived in. */
  chunk: number;
  /** Where the frame ends, counted from the start of that write. */
  endInChunk: number;
}

/**
 * A socket that accepts everything and keeps the chunks it was given by
 * reference, as a real socket holds them until they are sent, and counts
 * them as unwritten (they never are): a writer that reused bytes it had
 * already handed over would show up as corrupt frames.
 */
class FakeSocket implements FrameSocket {
  readonly chunks: Uint8Array[] = [];
  writableLength = 0;
  destroyed = false;

  write(chunk: Uint8Array): boolean {
    this.chunks.push(chunk);
    this.writableLength += chunk.length;
    return true;
  }

  cork(): void {}

  uncork(): void {}

  on(): unknown {
    return this;
  }

  /** Every frame written so far, parsed back from the bytes; fails on a partial frame. */
  frames(): Frame[] {
    const bytes = Buffer.concat(this.chunks);
    const starts: number[] = [];
    let total = 0;
    for (const chunk of this.chunks) {
      starts.push(total);
      total += chunk.length;
    }
    const frames: Frame[] = [];
    let offset = 0;
    let chunk = 0;
    while (offset < bytes.length) {
      assert.ok(offset + FRAME_HEADER_SIZE <= bytes.length, `a partial frame header at byte ${offset}`);
      const length = bytes.readUInt32BE(offset);
      const end = offset + FRAME_HEADER_SIZE + length;
      assert.ok(end <= bytes.length, `a frame at byte ${offset} runs past the written bytes`);
      while (chunk + 1 < starts.length && (starts[chunk + 1] as number) <= offset) chunk++;
      frames.push({
        type: bytes[offset + 4] as number,
        flags: bytes[offset + 5] as number,
        streamId: bytes.readUInt32BE(offset + 6),
        payload: bytes.subarray(offset + FRAME_HEADER_SIZE, end),
        chunk,
        endInChunk: end - (starts[chunk] as number),
      });
      offset = end;
    }
    return frames;
  }
}

const codec = new MsgpackCodec();

/** An item's encoding: a MessagePack bin of `size` bytes tagged with `tag` (so items differ). */
function item(size: number, tag: number): Buffer {
  const content = Buffer.alloc(size, tag & 0xff);
  if (size >= 4) content.writeUInt32BE(tag >>> 0, 0);
  return codec.encode(content);
}

/** An ITEMS payload as rapt writes it. */
function itemsPayload(items: Buffer[]): Buffer {
  const head = Buffer.alloc(ITEMS_HEADER_SIZE);
  head[0] = ARRAY32;
  head.writeUInt32BE(items.length, 1);
  return Buffer.concat([head, ...items]);
}

/** The items a frame carries, decoded back to their encodings (each decoded value encodes to the same bytes). */
function itemsOf(frame: Frame, maxItems = 1 << 30): Buffer[] {
  if (frame.type === FrameType.ITEM) return [Buffer.from(frame.payload)];
  assert.equal(frame.type, FrameType.ITEMS, "an item frame");
  return codec.decodeItems(frame.payload, maxItems).map((value) => codec.encode(value));
}

const summary = (frames: Frame[]): Array<[number, number, number]> =>
  frames.map((f) => [f.type, f.streamId, f.type === FrameType.ITEMS ? f.payload.readUInt32BE(1) : f.payload.length]);

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(fragmentSize = 64 * 1024): { socket: FakeSocket; writer: FrameWriter } {
  const socket = new FakeSocket();
  return { socket, writer: new FrameWriter(socket, { fragmentSize }) };
}

describe("FrameWriter.writeItem", () => {
  it("sends a lone item as a plain ITEM frame whose payload is the item", async () => {
    const { socket, writer } = setup();
    const one = item(20, 1);
    assert.equal(writer.writeItem(7, one, 1024, 64 * 1024), true);
    await turn();
    const frames = socket.frames();
    assert.equal(frames.length, 1);
    const frame = frames[0] as Frame;
    assert.deepEqual([frame.type, frame.flags, frame.streamId], [FrameType.ITEM, 0, 7]);
    assert.ok(frame.payload.equals(one));
    writer.close();
  });

  it("joins the items of one stream written in a turn into one ITEMS frame: 0xdd, the count, the items in order", async () => {
    // 500 items of up to 40 bytes stay below the early flush.
    for (const n of [2, 3, 17, 500]) {
      const { socket, writer } = setup();
      const items = Array.from({ length: n }, (_, i) => item(i % 40, i));
      for (const one of items) assert.equal(writer.writeItem(5, one, 1024, 64 * 1024), true);
      assert.equal(socket.chunks.length, 0, "nothing is written before the end of the turn");
      await turn();
      const frames = socket.frames();
      assert.equal(frames.length, 1, `${n} items: one frame`);
      const frame = frames[0] as Frame;
      assert.deepEqual([frame.type, frame.flags, frame.streamId], [FrameType.ITEMS, 0, 5], `${n} items`);
      assert.ok(frame.payload.equals(itemsPayload(items)), `${n} items: the payload is 0xdd, count:u32be, then the items`);
      assert.deepEqual(
        codec.decodeItems(frame.payload, n),
        items.map((one) => codec.decode(one)),
        `${n} items decode in order`,
      );
      writer.close();
    }
  });

  it("starts a new frame after maxItems items", () => {
    const { socket, writer } = setup();
    const items = Array.from({ length: 10 }, (_, i) => item(3, i));
    for (const one of items) assert.equal(writer.writeItem(1, one, 3, 64 * 1024), true);
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(summary(frames), [
      [FrameType.ITEMS, 1, 3],
      [FrameType.ITEMS, 1, 3],
      [FrameType.ITEMS, 1, 3],
      [FrameType.ITEM, 1, 5],
    ]);
    assert.deepEqual(
      frames.flatMap((f) => itemsOf(f, 3)),
      items,
    );
    writer.close();
  });

  it("sends every item alone with maxItems 1", () => {
    const { socket, writer } = setup();
    for (let i = 0; i < 4; i++) assert.equal(writer.writeItem(1, item(3, i), 1, 64 * 1024), true);
    writer.flush();
    assert.deepEqual(
      socket.frames().map((f) => f.type),
      [FrameType.ITEM, FrameType.ITEM, FrameType.ITEM, FrameType.ITEM],
    );
    writer.close();
  });

  it("starts a new frame when the next item would take the payload past maxBytes, and fills it up to maxBytes exactly", () => {
    // Items of 10 bytes (bin 8: 2 bytes of header, 8 of content).
    const items = Array.from({ length: 7 }, (_, i) => item(8, i));
    assert.equal(items[0]?.length, 10);
    for (const [maxBytes, perFrame] of [
      [ITEMS_HEADER_SIZE + 3 * 10, 3],
      [ITEMS_HEADER_SIZE + 3 * 10 - 1, 2],
      [ITEMS_HEADER_SIZE + 2 * 10, 2],
      [ITEMS_HEADER_SIZE + 10, 1],
    ] as const) {
      const { socket, writer } = setup();
      for (const one of items) assert.equal(writer.writeItem(1, one, 1024, maxBytes), true, `maxBytes ${maxBytes}`);
      writer.flush();
      const frames = socket.frames();
      const expected: number[] = [];
      for (let left = items.length; left > 0; left -= perFrame) expected.push(Math.min(perFrame, left));
      assert.deepEqual(
        frames.map((f) => itemsOf(f).length),
        expected,
        `maxBytes ${maxBytes}: items per frame`,
      );
      for (const frame of frames) assert.ok(frame.payload.length <= maxBytes, `maxBytes ${maxBytes}: a payload of ${frame.payload.length}`);
      assert.deepEqual(
        frames.flatMap((f) => itemsOf(f)),
        items,
      );
      writer.close();
    }
  });

  it("refuses, queuing nothing, an item too large to share a frame (item + 5 > maxBytes), and takes one that just fits", () => {
    const { socket, writer } = setup();
    const first = item(8, 1);
    assert.equal(writer.writeItem(1, first, 1024, 100), true);
    const big = item(94, 2);
    assert.equal(big.length, 96);
    assert.equal(writer.writeItem(1, big, 1024, big.length + ITEMS_HEADER_SIZE - 1), false, "one byte too large");
    assert.equal(writer.writeItem(3, big, 1024, big.length + ITEMS_HEADER_SIZE - 1), false, "one byte too large, another stream");
    writer.flush();
    assert.deepEqual(summary(socket.frames()), [[FrameType.ITEM, 1, first.length]], "only the first item was written");
    // Alone, an item of exactly maxBytes - 5 goes as an ITEM.
    assert.equal(writer.writeItem(1, big, 1024, big.length + ITEMS_HEADER_SIZE), true, "fits exactly");
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(summary(frames), [
      [FrameType.ITEM, 1, first.length],
      [FrameType.ITEM, 1, big.length],
    ]);
    assert.ok(frames[1]?.payload.equals(big));
    writer.close();
  });

  it("ends a stream's batch at another frame of that stream; other streams' frames and items do not, and each stream keeps its order", () => {
    const { socket, writer } = setup();
    const a = Array.from({ length: 6 }, (_, i) => item(5, i));
    const b = [item(5, 100), item(5, 101)];
    writer.writeItem(1, a[0] as Buffer, 1024, 4096);
    writer.writeItem(1, a[1] as Buffer, 1024, 4096);
    writer.writeFrame(FrameType.CREDIT, 0, 3, Buffer.from([0, 0, 0, 9]));
    writer.writeItem(1, a[2] as Buffer, 1024, 4096);
    writer.writeItem(3, b[0] as Buffer, 1024, 4096);
    // A frame of stream 1 itself: its three items go first.
    writer.writeFrame(FrameType.CREDIT, 0, 1, Buffer.from([0, 0, 0, 1]));
    writer.writeItem(1, a[3] as Buffer, 1024, 4096);
    writer.writeItem(3, b[1] as Buffer, 1024, 4096);
    writer.writeItem(1, a[4] as Buffer, 1024, 4096);
    writer.writeFrameParts(FrameType.CALL, 0, 5, Buffer.from("head"), Buffer.from("args"));
    writer.writeItem(1, a[5] as Buffer, 1024, 4096);
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(summary(frames), [
      [FrameType.CREDIT, 3, 4],
      [FrameType.ITEMS, 1, 3],
      [FrameType.CREDIT, 1, 4],
      [FrameType.CALL, 5, 8],
      // At the flush, in the order the batches began.
      [FrameType.ITEMS, 3, 2],
      [FrameType.ITEMS, 1, 3],
    ]);
    assert.deepEqual(
      frames.filter((f) => f.streamId === 1 && f.type !== FrameType.CREDIT).flatMap((f) => itemsOf(f)),
      a,
    );
    assert.deepEqual(
      frames.filter((f) => f.streamId === 3 && f.type !== FrameType.CREDIT).flatMap((f) => itemsOf(f)),
      b,
    );
    writer.close();
  });

  it("batches the items of interleaved streams each in their own frame", () => {
    const { socket, writer } = setup();
    const streams = [1, 3, 5, 7];
    for (let i = 0; i < 100; i++)
      for (const streamId of streams) writer.writeItem(streamId, item(10, streamId * 1000 + i), 1024, 64 * 1024);
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.streamId, itemsOf(f).length]),
      streams.map((streamId) => [FrameType.ITEMS, streamId, 100]),
    );
    for (const frame of frames) {
      assert.deepEqual(
        itemsOf(frame),
        Array.from({ length: 100 }, (_, i) => item(10, frame.streamId * 1000 + i)),
      );
    }
    writer.close();
  });

  it("ends a batch at a message of the same stream (END), which stays after the items before it", () => {
    const { socket, writer } = setup();
    const a = Array.from({ length: 5 }, (_, i) => item(5, i));
    writer.writeItem(1, a[0] as Buffer, 1024, 4096);
    writer.writeItem(1, a[1] as Buffer, 1024, 4096);
    writer.writeItem(1, a[2] as Buffer, 1024, 4096);
    writer.writeMessage(FrameType.END, 1, Buffer.alloc(0));
    writer.writeItem(1, a[3] as Buffer, 1024, 4096);
    writer.writeItem(1, a[4] as Buffer, 1024, 4096);
    writer.writeMessage(FrameType.END, 1, Buffer.alloc(0));
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(summary(frames), [
      [FrameType.ITEMS, 1, 3],
      [FrameType.END, 1, 0],
      [FrameType.ITEMS, 1, 2],
      [FrameType.END, 1, 0],
    ]);
    assert.deepEqual(
      frames.filter((f) => f.type !== FrameType.END).flatMap((f) => itemsOf(f)),
      a,
    );
    writer.close();
  });

  it("starts a new frame for items written after a flush", async () => {
    const { socket, writer } = setup();
    const a = Array.from({ length: 5 }, (_, i) => item(5, i));
    writer.writeItem(1, a[0] as Buffer, 1024, 4096);
    writer.writeItem(1, a[1] as Buffer, 1024, 4096);
    writer.flush();
    writer.writeItem(1, a[2] as Buffer, 1024, 4096);
    await turn();
    writer.writeItem(1, a[3] as Buffer, 1024, 4096);
    writer.writeItem(1, a[4] as Buffer, 1024, 4096);
    await turn();
    const frames = socket.frames();
    assert.deepEqual(summary(frames), [
      [FrameType.ITEMS, 1, 2],
      [FrameType.ITEM, 1, 7],
      [FrameType.ITEMS, 1, 2],
    ]);
    assert.deepEqual(
      frames.map((f) => f.chunk),
      [0, 1, 2],
      "one write per flush",
    );
    assert.deepEqual(
      frames.flatMap((f) => itemsOf(f)),
      a,
    );
    writer.close();
  });

  it("refuses items of a stream whose large message is still queued, takes other streams' items, and that stream's again once it is sent", () => {
    const { socket, writer } = setup(1024);
    const large = Buffer.alloc(5000, 0x5a);
    writer.writeMessage(FrameType.RESULT, 1, large);
    assert.equal(writer.hasQueued(1), true);
    const mine = item(5, 1);
    const other = item(5, 2);
    assert.equal(writer.writeItem(1, mine, 1024, 1024), false, "queued behind the large message");
    assert.equal(writer.writeItem(3, other, 1024, 1024), true, "another stream's item");
    for (let i = 0; i < 100 && writer.hasQueued(1); i++) writer.flush();
    assert.equal(writer.hasQueued(1), false, "the large message went out");
    assert.equal(writer.writeItem(1, mine, 1024, 1024), true);
    writer.flush();
    const frames = socket.frames();
    const one = frames.filter((f) => f.streamId === 1);
    assert.ok(Buffer.concat(one.slice(0, -1).map((f) => f.payload)).equals(large), "the large message, whole");
    assert.ok(
      one.slice(0, -1).every((f) => f.type === FrameType.RESULT),
      "nothing of the refused item went out",
    );
    assert.deepEqual(summary(one.slice(-1)), [[FrameType.ITEM, 1, mine.length]]);
    assert.deepEqual(summary(frames.filter((f) => f.streamId === 3)), [[FrameType.ITEM, 3, other.length]]);
    writer.close();
  });

  it("keeps a batch whole while it moves to a larger slab, also when the slab held an earlier batch", () => {
    const { socket, writer } = setup();
    // A first batch that leaves the 2 KiB slab in use, so the next batch starts mid-slab.
    writer.writeFrame(FrameType.RESULT, 0, 9, Buffer.alloc(600, 1));
    writer.flush();
    writer.writeFrame(FrameType.CREDIT, 0, 3, Buffer.from([0, 0, 0, 1]));
    // About 11 KB: past the 2 KiB slab, below the early flush.
    const items = Array.from({ length: 40 }, (_, i) => item(i % 3 === 0 ? 700 : 60, i));
    for (const one of items) assert.equal(writer.writeItem(1, one, 1024, 64 * 1024), true);
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(summary(frames), [
      [FrameType.RESULT, 9, 600],
      [FrameType.CREDIT, 3, 4],
      [FrameType.ITEMS, 1, 40],
    ]);
    assert.equal(frames[2]?.chunk, 1, "the second batch is one write");
    assert.ok(frames[2]?.payload.equals(itemsPayload(items)));
    writer.close();
  });

  it("writes the turn's bytes at once when a full batch brings them to EARLY_FLUSH_BYTES, every item intact", async () => {
    const { socket, writer } = setup(256 * 1024);
    const items = Array.from({ length: 30 }, (_, i) => item(1500 + (i % 7), i));
    for (const one of items) assert.equal(writer.writeItem(1, one, 1024, 256 * 1024), true);
    // Ten 1.5 KB items fill a batch of MAX_BATCH_BYTES; each full batch went out at once, the third at the end of the turn.
    assert.ok(EARLY_FLUSH_BYTES < MAX_BATCH_BYTES);
    assert.equal(socket.chunks.length, 2, "written before the end of the turn");
    await turn();
    const frames = socket.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.chunk, itemsOf(f).length]),
      [
        [FrameType.ITEMS, 0, 10],
        [FrameType.ITEMS, 1, 10],
        [FrameType.ITEMS, 2, 10],
      ],
    );
    for (const frame of frames) assert.ok(frame.payload.length <= MAX_BATCH_BYTES);
    assert.deepEqual(
      frames.flatMap((f) => itemsOf(f)),
      items,
    );
    writer.close();
  });

  it("writes an eager batch as soon as it is full, with the frames queued before it; the stream's next batch waits for the turn", async () => {
    const { socket, writer } = setup();
    const items = Array.from({ length: 10 }, (_, i) => item(5, i));
    writer.writeFrame(FrameType.CREDIT, 0, 3, Buffer.from([0, 0, 0, 9]));
    for (let i = 0; i < 3; i++) writer.writeItem(1, items[i] as Buffer, 4, 64 * 1024, true);
    assert.equal(socket.chunks.length, 0, "not full yet");
    writer.writeItem(1, items[3] as Buffer, 4, 64 * 1024, true);
    assert.equal(socket.chunks.length, 1, "written when its fourth item came");
    // The batch's limit and eagerness are fixed when it opens: these open an ordinary one.
    for (let i = 4; i < 10; i++) writer.writeItem(1, items[i] as Buffer, 1024, 64 * 1024, false);
    assert.equal(socket.chunks.length, 1);
    await turn();
    assert.deepEqual(
      socket.frames().map((f) => [f.type, f.streamId, f.chunk, f.type === FrameType.CREDIT ? 0 : itemsOf(f).length]),
      [
        [FrameType.CREDIT, 3, 0, 0],
        [FrameType.ITEMS, 1, 0, 4],
        [FrameType.ITEMS, 1, 1, 6],
      ],
    );
    assert.deepEqual(
      socket.frames().flatMap((f) => (f.type === FrameType.CREDIT ? [] : itemsOf(f))),
      items,
    );
    // An eager batch that is not full waits for the turn like any other.
    writer.writeItem(5, items[0] as Buffer, 4, 64 * 1024, true);
    assert.equal(socket.chunks.length, 2);
    await turn();
    assert.equal(socket.chunks.length, 3);
    writer.close();
  });

  it("writeFrameInPlace: prefix then the encoded value in one frame, after the stream's items; false, queuing nothing, when it cannot", () => {
    const { socket, writer } = setup();
    writer.writeItem(1, item(5, 1), 1024, 64 * 1024);
    const prefix = Buffer.from([0, 0, 0, 2, 0x91, 0xa1]);
    assert.equal(writer.writeFrameInPlace(FrameType.CALL, 1, codec, prefix, [1, "two"], 1000), true);
    assert.equal(writer.writeFrameInPlace(FrameType.RESULT, 3, codec, Buffer.alloc(0), { a: 1 }, 1000), true);
    // Not plain data, more than maxPayload, a prefix alone past maxPayload: nothing queued.
    assert.equal(writer.writeFrameInPlace(FrameType.RESULT, 5, codec, Buffer.alloc(0), new Date(0), 1000), false);
    assert.equal(writer.writeFrameInPlace(FrameType.RESULT, 5, codec, Buffer.alloc(0), "x".repeat(100), 50), false);
    assert.equal(writer.writeFrameInPlace(FrameType.RESULT, 5, codec, Buffer.alloc(60), 1, 50), false);
    // A value that writes to the same writer while it is encoded (a getter) would overwrite it: refused, and the
    // encoding fails; a flush meanwhile waits. The writer goes on as before.
    let flushedInside = -1;
    const reentrant = {
      get value(): number {
        writer.flush();
        flushedInside = socket.chunks.length;
        writer.writeFrame(FrameType.CREDIT, 0, 7, Buffer.from([0, 0, 0, 1]));
        return 1;
      },
    };
    assert.throws(() => writer.writeFrameInPlace(FrameType.RESULT, 9, codec, Buffer.alloc(0), reentrant, 1000), {
      code: "INVALID_ARGUMENT",
      message: /wrote to its own connection while it was encoded/,
    });
    assert.equal(flushedInside, 0, "no flush while a value is encoded in place");
    writer.writeFrame(FrameType.CREDIT, 0, 7, Buffer.from([0, 0, 0, 1]));
    writer.flush();
    const frames = socket.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.streamId]),
      [
        [FrameType.ITEM, 1],
        [FrameType.CALL, 1],
        [FrameType.RESULT, 3],
        [FrameType.CREDIT, 7],
      ],
    );
    assert.deepEqual(frames[1]?.payload, Buffer.concat([prefix, codec.encode([1, "two"])]));
    assert.deepEqual(codec.decode(frames[2]?.payload as Buffer), { a: 1 });
    assert.equal(frames[3]?.payload.readUInt32BE(0), 1);
    // Behind a large message of the stream still being fragmented out: false, so the order holds.
    const big = setup(1024);
    big.writer.writeMessage(FrameType.ITEM, 1, Buffer.alloc(10_000));
    assert.equal(big.writer.writeFrameInPlace(FrameType.RESULT, 1, codec, Buffer.alloc(0), 1, 1000), false);
    assert.equal(big.writer.writeFrameInPlace(FrameType.RESULT, 3, codec, Buffer.alloc(0), 1, 1000), true);
    writer.close();
    big.writer.close();
  });

  it("reuses the batch buffers of up to 16 streams from turn to turn, and drops them after a turn with no items", () => {
    const targets: Buffer[] = [];
    const recording: InPlaceEncoder = {
      encodeInto(value, target, offset, end) {
        if (!targets.includes(target)) targets.push(target);
        return copyEncoder.encodeInto(value, target, offset, end);
      },
    };
    const { socket, writer } = setup();
    const streams = Array.from({ length: 20 }, (_, i) => 2 * i + 1);
    const turn = (): Buffer[] => {
      targets.length = 0;
      for (const id of streams) assert.equal(writer.writeItemInPlace(id, recording, item(8, id), 1024, 1 << 20), true);
      writer.flush();
      return [...targets];
    };
    const first = turn();
    assert.equal(first.length, 20, "a batch buffer per stream");
    const second = turn();
    const reused = second.filter((b) => first.includes(b));
    assert.equal(reused.length, 16, "16 kept from the turn before");
    writer.flush(); // a turn with no items
    const third = turn();
    assert.equal(third.filter((b) => second.includes(b)).length, 0, "none kept past a quiet turn");
    // Every item arrived whole, one frame per stream per turn.
    assert.equal(socket.frames().length, 60);
  });

  it("passes seeded random writes of items, other frames and flushes on 1-5 streams, every item whole, in order, in bounded frames", async () => {
    const seen: Seen = {
      inPlace: 0,
      itemsOver2KiB: 0,
      splitByCount: 0,
      splitByBytes: 0,
      splitByEarlyFlush: 0,
      fragmentedItems: 0,
    };
    for (let seed = 1; seed <= 300; seed++) await fuzzRun(seed, seen);
    // The runs reach every case they are meant to: ITEMS frames that grew the slab past 2 KiB,
    // frames cut at maxItems, at maxBytes and at the 64 KiB batch, and items sent as large messages.
    for (const [what, count] of Object.entries(seen)) assert.ok(count > 0, `${what}: ${count}`);
  });
});

/** An in-place encoder for the fuzz's items, which are their own bytes: copied if they fit. */
const copyEncoder: InPlaceEncoder = {
  encodeInto(value: unknown, target: Buffer, offset: number, end: number): number {
    const bytes = value as Buffer;
    if (offset + bytes.length > end) return -1;
    bytes.copy(target, offset);
    return bytes.length;
  },
};

/** How often the seeded runs hit each case. */
interface Seen {
  inPlace: number;
  itemsOver2KiB: number;
  splitByCount: number;
  splitByBytes: number;
  splitByEarlyFlush: number;
  fragmentedItems: number;
}

interface Expected {
  /** An item's encoding, or another message's payload. */
  bytes: Buffer;
  /** 0 for an item, else the message's frame type. */
  type: number;
  /** Items of one run (taken one after another on one stream, nothing written into the batch in between) may share a frame. */
  run: number;
}

/** One seeded run: random operations on a writer, then every frame parsed back and checked against what was written. */
async function fuzzRun(seed: number, seen: Seen): Promise<void> {
  const rand = prng(seed);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(rand() * values.length)] as T;
  const context = (what: string): string => `seed ${seed}: ${what}`;
  const streams = Array.from({ length: between(rand, 1, 5) }, (_, i) => 2 * i + 1);
  const maxItems = pick([1, 2, 3, 7, 64, 1024]);
  const fragmentSize = pick([1024, 16 * 1024, 64 * 1024, 128 * 1024]);
  const maxBytes = Math.min(fragmentSize, pick([16, 100, 1000, 8192, 64 * 1024, 128 * 1024]));
  const { socket, writer } = setup(fragmentSize);
  const expected = new Map<number, Expected[]>([[0, []], ...streams.map((s): [number, Expected[]] => [s, []])]);
  let run = 0;
  /** Each stream's open run: items that may still share its batch. */
  const runOf = new Map<number, number>();
  let tag = seed * 100_000;

  // Half the runs also write items in place, as a connection does first, falling back to writeItem.
  const inPlace = rand() < 0.5;
  const writeItem = (streamId: number, size: number): void => {
    const bytes = item(size, tag++);
    const queued = writer.hasQueued(streamId);
    let taken = inPlace && rand() < 0.7 && writer.writeItemInPlace(streamId, copyEncoder, bytes, maxItems, maxBytes);
    const fits = bytes.length + ITEMS_HEADER_SIZE <= Math.min(maxBytes, MAX_BATCH_BYTES);
    if (taken) {
      assert.ok(fits && !queued, context(`writeItemInPlace took ${bytes.length} bytes`));
      seen.inPlace++;
    } else taken = writer.writeItem(streamId, bytes, maxItems, maxBytes);
    assert.equal(taken, fits && !queued, context(`writeItem of ${bytes.length} bytes, queued ${queued}`));
    if (taken && !runOf.has(streamId)) runOf.set(streamId, ++run);
    // A refused item goes alone, so it is in no run.
    (expected.get(streamId) as Expected[]).push({ bytes, type: 0, run: taken ? (runOf.get(streamId) as number) : -1 });
    if (!taken) {
      // As a connection does: the item goes as an ordinary message, which
      // ends the stream's batch (other streams' batches go on).
      runOf.delete(streamId);
      writer.writeMessage(FrameType.ITEM, streamId, bytes);
    }
  };

  const ops = between(rand, 1, 150);
  for (let op = 0; op < ops; op++) {
    const r = rand();
    const streamId = pick(streams);
    if (r < 0.55) {
      const s = rand();
      const size =
        s < 0.6
          ? between(rand, 0, 40)
          : s < 0.85
            ? between(rand, 41, 3000)
            : s < 0.97
              ? between(rand, 3001, 40_000)
              : between(rand, 40_001, 140_000);
      writeItem(streamId, size);
    } else if (r < 0.65) {
      // A burst of small items on one stream, as a producer's turn.
      const n = between(rand, 2, 60);
      for (let i = 0; i < n; i++) writeItem(streamId, between(rand, 0, rand() < 0.9 ? 50 : 2000));
    } else if (r < 0.8) {
      const target = rand() < 0.2 ? 0 : streamId;
      const type = pick([FrameType.CREDIT, FrameType.CANCEL, FrameType.RESULT]);
      const payload = Buffer.alloc(between(rand, 0, 64), tag++ & 0xff);
      runOf.delete(target);
      if (writer.hasQueued(target) || rand() < 0.4) writer.writeMessage(type, target, payload);
      else if (rand() < 0.5) writer.writeFrame(type, 0, target, payload);
      else writer.writeFrameParts(type, 0, target, payload.subarray(0, payload.length >> 1), payload.subarray(payload.length >> 1));
      (expected.get(target) as Expected[]).push({ bytes: payload, type, run: -1 });
    } else if (r < 0.93) {
      writer.flush();
      runOf.clear();
    } else {
      await turn();
      runOf.clear();
    }
  }
  for (let i = 0; i < 10_000 && writer.queuedBulkBytes > 0; i++) writer.flush();
  assert.equal(writer.queuedBulkBytes, 0, context("everything was sent"));
  writer.flush();
  writer.close();

  const frames = socket.frames();
  const byStream = new Map<number, Frame[]>();
  for (const frame of frames) {
    assert.ok(expected.has(frame.streamId), context(`a frame of unknown stream ${frame.streamId}`));
    assert.ok(frame.payload.length <= fragmentSize, context(`a frame of ${frame.payload.length} bytes`));
    const list = byStream.get(frame.streamId) ?? [];
    list.push(frame);
    byStream.set(frame.streamId, list);
  }
  for (const [streamId, want] of expected) {
    const got = byStream.get(streamId) ?? [];
    let next = 0;
    let previous: { frame: Frame; count: number; run: number } | undefined;
    for (let f = 0; f < got.length; f++) {
      const frame = got[f] as Frame;
      const where = context(`stream ${streamId}, frame ${f} of ${got.length}`);
      if (frame.type === FrameType.ITEMS) {
        assert.equal(frame.flags, 0, `${where}: an ITEMS frame is never fragmented`);
        assert.equal(frame.payload[0], ARRAY32, `${where}: array32 header`);
        const count = frame.payload.readUInt32BE(1);
        assert.ok(count >= 2 && count <= maxItems, `${where}: ITEMS of ${count} items (maxItems ${maxItems})`);
        assert.ok(frame.payload.length <= maxBytes, `${where}: ITEMS payload of ${frame.payload.length} bytes (maxBytes ${maxBytes})`);
        const entries = want.slice(next, next + count);
        assert.equal(entries.length, count, `${where}: more items than were written`);
        const run = (entries[0] as Expected).run;
        assert.ok(run >= 0, `${where}: an item that writeItem refused is in an ITEMS frame`);
        for (const entry of entries) {
          assert.equal(entry.type, 0, `${where}: an ITEMS frame where another message was written`);
          assert.equal(entry.run, run, `${where}: items written apart share a frame`);
        }
        assert.ok(frame.payload.subarray(ITEMS_HEADER_SIZE).equals(Buffer.concat(entries.map((e) => e.bytes))), `${where}: the items`);
        if (frame.payload.length > 2048) seen.itemsOver2KiB++;
        const decoded = codec.decodeItems(frame.payload, maxItems);
        assert.equal(decoded.length, count, `${where}: decodes`);
        checkSplit(previous, entries[0] as Expected, where, frame);
        previous = { frame, count, run };
        next += count;
        continue;
      }
      // A message of one frame, or the fragments of one (FOLLOWS on all but the last).
      const parts = [frame];
      while ((parts.at(-1) as Frame).flags & FrameFlag.FOLLOWS) {
        f++;
        assert.ok(f < got.length, `${where}: a message cut off`);
        const part = got[f] as Frame;
        assert.equal(part.type, frame.type, `${where}: fragments of one message share the type`);
        parts.push(part);
      }
      const entry = want[next];
      assert.ok(entry !== undefined, `${where}: more messages than were written`);
      const payload = Buffer.concat(parts.map((p) => p.payload));
      if (parts.length > 1 && frame.type === FrameType.ITEM) seen.fragmentedItems++;
      assert.equal(frame.type, entry.type === 0 ? FrameType.ITEM : entry.type, `${where}: message type`);
      assert.ok(payload.equals(entry.bytes), `${where}: payload (${payload.length} vs ${entry.bytes.length} bytes)`);
      if (parts.length === 1 && frame.type === FrameType.ITEM) checkSplit(previous, entry, where, frame);
      previous = parts.length === 1 && frame.type === FrameType.ITEM ? { frame, count: 1, run: entry.run } : undefined;
      next++;
    }
    assert.equal(next, want.length, context(`stream ${streamId}: ${want.length - next} messages missing`));
  }

  /**
   * Items of one run (one stream, no flush or other frame of the stream
   * between them) that start a new frame must have had a reason: maxItems,
   * the batch's bytes (maxBytes or MAX_BATCH_BYTES), or an early flush,
   * which put the next frame in a later write.
   */
  function checkSplit(
    previous: { frame: Frame; count: number; run: number } | undefined,
    first: Expected,
    where: string,
    next: Frame,
  ): void {
    if (previous === undefined || previous.run !== first.run || first.type !== 0 || first.run < 0) return;
    const itemBytes = previous.count === 1 ? previous.frame.payload.length : previous.frame.payload.length - ITEMS_HEADER_SIZE;
    const byCount = previous.count >= maxItems;
    const byBytes = itemBytes + first.bytes.length > Math.min(maxBytes, MAX_BATCH_BYTES) - ITEMS_HEADER_SIZE;
    const byFlush = next.chunk !== previous.frame.chunk;
    if (byCount) seen.splitByCount++;
    if (byBytes) seen.splitByBytes++;
    if (byFlush) seen.splitByEarlyFlush++;
    assert.ok(
      byCount || byBytes || byFlush,
      `${where}: a frame of ${previous.count} items was left with room for the next item of its run`,
    );
  }
}
