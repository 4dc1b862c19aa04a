import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FRAME_HEADER_SIZE, FrameFlag, FrameType, writeFrameHeader } from "../../src/protocol/frame.js";
import { FrameDecoder, type FrameSink } from "../../src/protocol/frame-decoder.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";
import { between, prng } from "./seeded-random.js";

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

function encodeFrame(frame: Frame): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_SIZE + frame.payload.length);
  writeFrameHeader(out, 0, frame.payload.length, frame.type, frame.flags, frame.streamId);
  frame.payload.copy(out, FRAME_HEADER_SIZE);
  return out;
}

function randomBytes(rand: () => number, n: number): Buffer {
  const out = Buffer.alloc(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) out.writeUInt32LE((rand() * 0x1_0000_0000) >>> 0, i);
  for (; i < n; i++) out[i] = (rand() * 256) | 0;
  return out;
}

/** A copy in its own ArrayBuffer (small Buffer.from copies share a pool, which would hide a copy). */
function unpooled(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(bytes.length);
  out.set(bytes);
  return out;
}

function header(length: number, type: number, flags: number, streamId: number): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_SIZE);
  writeFrameHeader(out, 0, length, type, flags, streamId);
  return out;
}

/**
 * A decoder whose sink records a copy of every frame (the payload may be a
 * view into a chunk). With `parts`, the sink takes fragments that span
 * chunks as views of them (onFragmentParts) and counts them in `partFrames`.
 */
function recorder(
  options: { maxFrameSize: number; maxBufferedParts?: number },
  parts = false,
): {
  decoder: FrameDecoder;
  frames: Frame[];
  partFrames: () => number;
} {
  const frames: Frame[] = [];
  let partFrames = 0;
  const sink: FrameSink = {
    onFrame(type, flags, streamId, payload) {
      frames.push({ type, flags, streamId, payload: Buffer.from(payload) });
    },
  };
  if (parts) {
    sink.onFragmentParts = (type, flags, streamId, views, length) => {
      assert.equal(
        views.reduce((n, v) => n + v.length, 0),
        length,
      );
      assert.ok(views.length >= 2, "only a fragment spanning chunks comes in parts");
      partFrames++;
      frames.push({ type, flags, streamId, payload: Buffer.concat(views) });
    };
  }
  return { decoder: new FrameDecoder(sink, options), frames, partFrames: () => partFrames };
}

function assertFramesEqual(actual: Frame[], expected: Frame[], context: string): void {
  assert.equal(actual.length, expected.length, `${context}: frame count`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i] as Frame;
    const e = expected[i] as Frame;
    assert.deepEqual([a.type, a.flags, a.streamId], [e.type, e.flags, e.streamId], `${context}: header of frame ${i}`);
    assert.ok(a.payload.equals(e.payload), `${context}: payload of frame ${i} (${a.payload.length} vs ${e.payload.length} bytes)`);
  }
}

function isProtocolError(pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RpcError, `expected an RpcError, got ${String(e)}`);
    assert.equal(e.code, ErrorCode.PROTOCOL_ERROR);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

describe("FrameDecoder", () => {
  it("decodes any split of a random frame stream exactly (many seeds)", () => {
    const maxFrameSize = 200 * 1024;
    let inParts = 0;
    for (let seed = 1; seed <= 60; seed++) {
      const rand = prng(seed);
      // Chunking modes: 1-byte chunks, tiny, mixed, and large chunks.
      const mode = seed % 4;
      const maxChunk = mode === 0 ? 1 : mode === 1 ? 16 : mode === 2 ? 3000 : 300_000;
      // Byte-at-a-time runs keep their frames smaller, to keep the test fast.
      const largest = mode === 0 ? 30_000 : maxFrameSize;
      const expected: Frame[] = [];
      const count = between(rand, 1, 40);
      for (let i = 0; i < count; i++) {
        const r = rand();
        // Mostly small frames, some empty, a few up to the 200 KiB maximum.
        const size =
          r < 0.15 ? 0 : r < 0.8 ? between(rand, 1, 300) : r < 0.95 ? between(rand, 301, 20_000) : between(rand, 20_001, largest);
        expected.push({
          type: between(rand, FrameType.HELLO, FrameType.GOAWAY),
          flags: rand() < 0.3 ? FrameFlag.FOLLOWS : 0,
          streamId: rand() < 0.2 ? 0 : rand() < 0.1 ? 0xffff_ffff : (rand() * 0x1_0000_0000) >>> 0,
          payload: randomBytes(rand, size),
        });
      }
      const stream = Buffer.concat(expected.map(encodeFrame));
      const maxBufferedParts = [undefined, 1, 2, 64][Math.floor(seed / 4) % 4];
      // Odd seeds take fragments spanning chunks in parts.
      const parts = seed % 2 === 1;
      const { decoder, frames, partFrames } = recorder(
        maxBufferedParts === undefined ? { maxFrameSize } : { maxFrameSize, maxBufferedParts },
        parts,
      );
      let offset = 0;
      for (let pushes = 0; offset < stream.length && pushes <= stream.length; pushes++) {
        const size = Math.min(stream.length - offset, rand() < 0.1 ? 1 : between(rand, 1, maxChunk));
        decoder.push(stream.subarray(offset, offset + size));
        offset += size;
      }
      assert.equal(offset, stream.length);
      assertFramesEqual(frames, expected, `seed ${seed} (chunks <= ${maxChunk}, maxBufferedParts ${maxBufferedParts}, parts ${parts})`);
      assert.equal(decoder.bufferedBytes, 0, `seed ${seed}: nothing left buffered`);
      inParts += partFrames();
    }
    assert.ok(inParts >= 10, `${inParts} fragments came in parts`);
  });

  it("tells the sink which payloads are its own copies (a frame spanning chunks) and which are views of a chunk", () => {
    const seen: Array<{ payload: string; owned: boolean }> = [];
    const decoder = new FrameDecoder(
      {
        onFrame(_type, _flags, _streamId, payload, owned) {
          seen.push({ payload: payload.toString(), owned: owned === true });
        },
      },
      { maxFrameSize: 1024 },
    );
    const frame = (text: string): Buffer => Buffer.concat([header(text.length, FrameType.ITEM, 0, 1), Buffer.from(text)]);
    const spanning = frame("spans two chunks");
    decoder.push(Buffer.concat([frame("inside one chunk"), spanning.subarray(0, 14)]));
    decoder.push(spanning.subarray(14));
    assert.deepEqual(seen, [
      { payload: "inside one chunk", owned: false },
      { payload: "spans two chunks", owned: true },
    ]);
  });

  it("gives a sink that takes parts each fragment spanning chunks as views of them; other frames as before", () => {
    const seen: Array<{ payload: string; how: string }> = [];
    const chunks: Buffer[] = [];
    const decoder = new FrameDecoder(
      {
        onFrame(_type, _flags, _streamId, payload, owned) {
          seen.push({ payload: payload.toString(), how: owned === true ? "owned" : "view" });
        },
        onFragmentParts(_type, flags, _streamId, parts, length) {
          assert.equal(flags, FrameFlag.FOLLOWS);
          // Views of the pushed chunks, nothing copied.
          for (const part of parts) assert.ok(chunks.some((c) => c.buffer === part.buffer));
          seen.push({ payload: Buffer.concat(parts, length).toString(), how: `${parts.length} parts` });
        },
      },
      { maxFrameSize: 1024 },
    );
    const frame = (text: string, flags: number): Buffer =>
      Buffer.concat([header(text.length, FrameType.ITEM, flags, 1), Buffer.from(text)]);
    const stream = Buffer.concat([
      frame("fragment in one chunk", FrameFlag.FOLLOWS),
      frame("fragment over three chunks", FrameFlag.FOLLOWS),
      frame("last fragment over two", 0),
    ]);
    // Cut inside the second frame's payload twice, and inside the third's.
    const first = FRAME_HEADER_SIZE + 21;
    const cuts = [0, first + FRAME_HEADER_SIZE + 5, first + FRAME_HEADER_SIZE + 15, stream.length - 6, stream.length];
    for (let i = 1; i < cuts.length; i++) {
      const chunk = unpooled(stream.subarray(cuts[i - 1], cuts[i]));
      chunks.push(chunk);
      decoder.push(chunk);
    }
    assert.deepEqual(seen, [
      { payload: "fragment in one chunk", how: "view" },
      { payload: "fragment over three chunks", how: "3 parts" },
      { payload: "last fragment over two", how: "owned" },
    ]);
  });

  it("decodes one frame arriving in more than 100 chunks", () => {
    const rand = prng(7);
    const frame: Frame = { type: FrameType.ITEM, flags: FrameFlag.FOLLOWS, streamId: 12345, payload: randomBytes(rand, 50_000) };
    const bytes = encodeFrame(frame);
    const { decoder, frames } = recorder({ maxFrameSize: 64 * 1024 });
    const chunks = 150;
    const step = Math.ceil(bytes.length / chunks);
    for (let i = 0; i < chunks; i++) {
      assert.equal(frames.length, 0, "no frame before its last byte");
      decoder.push(bytes.subarray(i * step, Math.min(bytes.length, (i + 1) * step)));
    }
    assertFramesEqual(frames, [frame], "150 chunks");
  });

  it("decodes 100 frames arriving in one chunk", () => {
    const rand = prng(8);
    const expected: Frame[] = [];
    for (let i = 0; i < 100; i++) {
      expected.push({ type: FrameType.RESULT, flags: 0, streamId: 2 * i + 1, payload: randomBytes(rand, i * 3) });
    }
    const { decoder, frames } = recorder({ maxFrameSize: 1024 });
    decoder.push(Buffer.concat(expected.map(encodeFrame)));
    assertFramesEqual(frames, expected, "one chunk");
  });

  it("decodes a frame trickling in as more than 64 tiny chunks, then more frames in the final chunk", () => {
    const rand = prng(9);
    const big: Frame = { type: FrameType.CALL, flags: 0, streamId: 3, payload: randomBytes(rand, 500) };
    const after: Frame[] = [
      { type: FrameType.END, flags: 0, streamId: 3, payload: Buffer.alloc(0) },
      { type: FrameType.ITEM, flags: FrameFlag.FOLLOWS, streamId: 5, payload: randomBytes(rand, 40) },
      { type: FrameType.ITEM, flags: 0, streamId: 5, payload: randomBytes(rand, 41) },
    ];
    const tail: Frame = { type: FrameType.CANCEL, flags: 0, streamId: 7, payload: randomBytes(rand, 9) };
    const bigBytes = encodeFrame(big);
    const tailBytes = encodeFrame(tail);
    const { decoder, frames } = recorder({ maxFrameSize: 1024 });
    // Header and 200 payload bytes one at a time: well past the 64-part list.
    const trickled = FRAME_HEADER_SIZE + 200;
    for (let i = 0; i < trickled; i++) decoder.push(bigBytes.subarray(i, i + 1));
    assert.equal(frames.length, 0);
    assert.equal(decoder.bufferedBytes, 200);
    // The final chunk: the rest of the big frame, three whole frames and the start of another.
    decoder.push(Buffer.concat([bigBytes.subarray(trickled), ...after.map(encodeFrame), tailBytes.subarray(0, 4)]));
    assertFramesEqual(frames, [big, ...after], "after the spill");
    assert.equal(decoder.bufferedBytes, 4);
    decoder.push(tailBytes.subarray(4));
    assertFramesEqual(frames, [big, ...after, tail], "tail");
    assert.equal(decoder.bufferedBytes, 0);
  });

  it("hands out a payload that lies inside one chunk without copying it", () => {
    const chunk = unpooled(
      Buffer.concat([
        encodeFrame({ type: FrameType.RESULT, flags: 0, streamId: 1, payload: Buffer.from("first") }),
        encodeFrame({ type: FrameType.RESULT, flags: 0, streamId: 3, payload: Buffer.from("second") }),
      ]),
    );
    const seen: Buffer[] = [];
    const decoder = new FrameDecoder({ onFrame: (_t, _f, _s, payload) => seen.push(payload) }, { maxFrameSize: 1024 });
    decoder.push(chunk);
    assert.equal(seen.length, 2);
    assert.equal(seen[0]?.buffer, chunk.buffer);
    assert.equal(seen[0]?.byteOffset, chunk.byteOffset + FRAME_HEADER_SIZE);
    assert.equal(seen[0]?.toString(), "first");
    assert.equal(seen[1]?.buffer, chunk.buffer);
    assert.equal(seen[1]?.toString(), "second");

    // Same when the header came in an earlier chunk and the payload arrives whole.
    const split = encodeFrame({ type: FrameType.ITEM, flags: 0, streamId: 5, payload: Buffer.from("payload in its own chunk") });
    const payloadChunk = unpooled(split.subarray(FRAME_HEADER_SIZE));
    decoder.push(split.subarray(0, FRAME_HEADER_SIZE));
    decoder.push(payloadChunk);
    assert.equal(seen.length, 3);
    assert.equal(seen[2]?.buffer, payloadChunk.buffer);
    assert.equal(seen[2]?.byteOffset, payloadChunk.byteOffset);

    // And when part of the header was buffered: the payload is still a view of the chunk holding it.
    const straddling = encodeFrame({ type: FrameType.ITEM, flags: 0, streamId: 7, payload: Buffer.from("after a split header") });
    const rest = unpooled(straddling.subarray(4));
    decoder.push(straddling.subarray(0, 4));
    decoder.push(rest);
    assert.equal(seen.length, 4);
    assert.equal(seen[3]?.buffer, rest.buffer);
    assert.equal(seen[3]?.byteOffset, rest.byteOffset + FRAME_HEADER_SIZE - 4);
    assert.equal(seen[3]?.toString(), "after a split header");
  });

  it("assembles a 1 MiB frame fed one byte at a time (linear, not quadratic)", () => {
    const size = 1024 * 1024;
    const rand = prng(10);
    const frame: Frame = { type: FrameType.ITEM, flags: 0, streamId: 9, payload: randomBytes(rand, size) };
    const bytes = encodeFrame(frame);
    const { decoder, frames } = recorder({ maxFrameSize: size });
    for (let i = 0; i < bytes.length; i++) decoder.push(bytes.subarray(i, i + 1));
    assertFramesEqual(frames, [frame], "1-byte chunks");
  });

  it("never buffers more than the frame size plus one header and one chunk", () => {
    const maxFrameSize = 256 * 1024;
    const rand = prng(11);
    const frames: Frame[] = [
      { type: FrameType.ITEM, flags: FrameFlag.FOLLOWS, streamId: 1, payload: randomBytes(rand, maxFrameSize) },
      { type: FrameType.ITEM, flags: 0, streamId: 1, payload: randomBytes(rand, maxFrameSize) },
    ];
    const bytes = Buffer.concat(frames.map(encodeFrame));
    for (const maxChunk of [7, 1000, 70_000]) {
      const got = recorder({ maxFrameSize });
      let offset = 0;
      let peak = 0;
      for (let pushes = 0; offset < bytes.length && pushes < bytes.length; pushes++) {
        const size = Math.min(bytes.length - offset, between(rand, 1, maxChunk));
        got.decoder.push(bytes.subarray(offset, offset + size));
        offset += size;
        peak = Math.max(peak, got.decoder.bufferedBytes);
        assert.ok(
          got.decoder.bufferedBytes <= maxFrameSize + FRAME_HEADER_SIZE + maxChunk,
          `buffered ${got.decoder.bufferedBytes} bytes with chunks of up to ${maxChunk}`,
        );
      }
      assertFramesEqual(got.frames, frames, `chunks <= ${maxChunk}`);
      assert.equal(got.decoder.bufferedBytes, 0);
      assert.ok(peak > 0, "bufferedBytes reports what is held");
    }
  });

  it("rejects an oversized length prefix as soon as the header arrives, naming both sizes", () => {
    const { decoder, frames } = recorder({ maxFrameSize: 4096 });
    const bytes = header(4097, FrameType.CALL, 0, 1);
    // Nine header bytes are not enough to judge the frame.
    decoder.push(bytes.subarray(0, 9));
    assert.throws(
      () => decoder.push(bytes.subarray(9)),
      (e: unknown) => {
        assert.ok(e instanceof RpcError);
        assert.equal(e.code, ErrorCode.PROTOCOL_ERROR);
        assert.match(e.message, /\b4097\b/);
        assert.match(e.message, /\b4096\b/);
        assert.deepEqual(e.data, { size: 4097, limit: 4096 });
        return true;
      },
    );
    assert.equal(frames.length, 0);

    // A length of 2^32 - 1 with a whole header in one chunk: rejected before any body.
    const other = recorder({ maxFrameSize: 1024 * 1024 });
    assert.throws(() => other.decoder.push(header(0xffff_ffff, FrameType.RESULT, 0, 2)), isProtocolError(/4294967295/));
    assert.equal(other.decoder.bufferedBytes, 0);
  });

  it("accepts a frame of exactly maxFrameSize, and follows a raised maxFrameSize", () => {
    const { decoder, frames } = recorder({ maxFrameSize: 1024 });
    decoder.push(encodeFrame({ type: FrameType.ITEM, flags: 0, streamId: 1, payload: Buffer.alloc(1024, 1) }));
    assert.equal(frames.length, 1);
    decoder.maxFrameSize = 4096;
    decoder.push(encodeFrame({ type: FrameType.ITEM, flags: 0, streamId: 1, payload: Buffer.alloc(4096, 2) }));
    assert.equal(frames.length, 2);
    assert.equal(frames[1]?.payload.length, 4096);
  });

  it("rejects unknown frame types", () => {
    for (const type of [0x00, 0x0e, 0xff]) {
      const { decoder } = recorder({ maxFrameSize: 1024 });
      const name = type.toString(16).padStart(2, "0");
      assert.throws(() => decoder.push(header(0, type, 0, 1)), isProtocolError(new RegExp(`unknown frame type 0x${name}`)));
    }
  });

  it("rejects unknown flag bits", () => {
    for (const flags of [0x02, 0x80, 0x03, 0xff]) {
      const { decoder } = recorder({ maxFrameSize: 1024 });
      assert.throws(() => decoder.push(header(0, FrameType.ITEM, flags, 1)), isProtocolError(/unknown flags/));
    }
  });

  it("delivers the frames before a bad header, then nothing after the error", () => {
    const { decoder, frames } = recorder({ maxFrameSize: 1024 });
    const good: Frame = { type: FrameType.ITEM, flags: 0, streamId: 1, payload: Buffer.from("ok") };
    const bad = header(0, 0x0e, 0, 1);
    assert.throws(() => decoder.push(Buffer.concat([encodeFrame(good), bad, encodeFrame(good)])), isProtocolError());
    assertFramesEqual(frames, [good], "before the error");
    // Valid frames pushed afterwards are ignored, whole or split.
    const again = encodeFrame(good);
    decoder.push(again);
    decoder.push(again.subarray(0, 3));
    decoder.push(again.subarray(3));
    assert.equal(frames.length, 1);
    assert.equal(decoder.bufferedBytes, 0);
  });

  it("rejects a bad header assembled from buffered chunks, then ignores everything", () => {
    const { decoder, frames } = recorder({ maxFrameSize: 100 });
    const good = encodeFrame({ type: FrameType.ITEM, flags: 0, streamId: 1, payload: Buffer.alloc(50, 7) });
    const bad = header(101, FrameType.ITEM, 0, 3);
    decoder.push(good.subarray(0, 20));
    // The rest of the good frame and half of the oversized header.
    decoder.push(Buffer.concat([good.subarray(20), bad.subarray(0, 5)]));
    assert.equal(frames.length, 1);
    assert.equal(decoder.bufferedBytes, 5);
    assert.throws(() => decoder.push(bad.subarray(5)), isProtocolError(/101 bytes on stream 3/));
    assert.equal(decoder.bufferedBytes, 0);
    decoder.push(good);
    assert.equal(frames.length, 1);
  });

  it("stops delivering when the sink stops the decoder mid-chunk", () => {
    const seen: number[] = [];
    const decoder: FrameDecoder = new FrameDecoder(
      {
        onFrame(_type, _flags, streamId) {
          seen.push(streamId);
          if (streamId === 2) decoder.stop();
        },
      },
      { maxFrameSize: 1024 },
    );
    const frames = [1, 2, 3, 4].map((streamId) => encodeFrame({ type: FrameType.ITEM, flags: 0, streamId, payload: Buffer.alloc(5) }));
    decoder.push(Buffer.concat(frames));
    decoder.push(frames[0] as Buffer);
    assert.deepEqual(seen, [1, 2]);
  });
});

describe("FrameDecoder.handOff", () => {
  /** Two frames, the second the "handshake frame" whose sink hands off, then bytes that are not frames. */
  const first = encodeFrame({ type: FrameType.PING, flags: 0, streamId: 0, payload: Buffer.from("12345678") });
  const switchFrame = encodeFrame({ type: FrameType.WELCOME, flags: 0, streamId: 0, payload: Buffer.alloc(300, 7) });
  const after = Buffer.from("\xff\xff\xff\xff not a frame, the records that follow the switch", "latin1");
  const stream = Buffer.concat([first, switchFrame, after]);

  /**
   * Pushes `chunks` in order as a connection does: until a push returns the
   * remainder, after which the chunks go elsewhere. Returns the frame types
   * delivered and every byte after the switch frame, as the connection sees them.
   */
  function run(chunks: Buffer[], maxBufferedParts?: number): { types: number[]; rest: Buffer } {
    const types: number[] = [];
    const decoder: FrameDecoder = new FrameDecoder(
      {
        onFrame(type) {
          types.push(type);
          if (type === FrameType.WELCOME) decoder.handOff();
        },
      },
      maxBufferedParts === undefined ? { maxFrameSize: 1024 } : { maxFrameSize: 1024, maxBufferedParts },
    );
    const elsewhere: Buffer[] = [];
    let handedOff = false;
    for (const chunk of chunks) {
      if (handedOff) {
        elsewhere.push(chunk);
        continue;
      }
      const rest = decoder.push(chunk);
      if (rest !== undefined) {
        handedOff = true;
        elsewhere.push(rest);
      }
    }
    assert.ok(handedOff, "the push that delivered the switch frame returned the remainder");
    assert.equal(decoder.push(Buffer.from("more")), undefined, "a handed-off decoder takes nothing more");
    assert.equal(decoder.bufferedBytes, 0);
    return { types, rest: Buffer.concat(elsewhere) };
  }

  it("returns exactly the bytes after the frame, however the stream is split in two", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const { types, rest } = run([stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(types, [FrameType.PING, FrameType.WELCOME], `cut at ${cut}`);
      assert.ok(rest.equals(after), `cut at ${cut}: the remainder`);
    }
  });

  it("returns exactly the bytes after the frame under random splits, buffered or spilled", () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rand = prng(seed);
      const chunks: Buffer[] = [];
      for (let offset = 0; offset < stream.length;) {
        const size = Math.min(stream.length - offset, between(rand, 1, seed % 2 === 0 ? 3 : 120));
        chunks.push(unpooled(stream.subarray(offset, offset + size)));
        offset += size;
      }
      const { types, rest } = run(chunks, seed % 3 === 0 ? 1 : undefined);
      assert.deepEqual(types, [FrameType.PING, FrameType.WELCOME], `seed ${seed}`);
      assert.ok(rest.equals(after), `seed ${seed}: the remainder`);
    }
  });

  it("returns an empty remainder when the frame ends its chunk", () => {
    const { rest } = run([Buffer.concat([first, switchFrame]), after]);
    assert.ok(rest.equals(after));
    const alone = run([Buffer.concat([first, switchFrame])]);
    assert.equal(alone.rest.length, 0);
  });
});
