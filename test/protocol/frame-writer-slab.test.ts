import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FRAME_HEADER_SIZE, FrameType } from "../../src/protocol/frame.js";
import { FrameDecoder } from "../../src/protocol/frame-decoder.js";
import { FrameWriter, type FrameSocket } from "../../src/protocol/frame-writer.js";

/** A socket that records each write (nothing is sent). */
function recordingSocket(): FrameSocket & { writes: Buffer[] } {
  return {
    writes: [],
    write(chunk: Uint8Array): boolean {
      this.writes.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      return true;
    },
    cork() {},
    uncork() {},
    writableLength: 0,
    destroyed: false,
    on() {},
  };
}

/**
 * The slab a quiet connection starts a batch in: small, since an idle
 * connection's batches are lone PINGs and PONGs, and 10,000 of them each
 * taking 2 KiB of Node's buffer pool per PING kept a server's memory up.
 */
describe("FrameWriter slab of a quiet connection", () => {
  it("takes a small slice of the buffer pool for a lone PING", () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < 4; i++) {
      const socket = recordingSocket();
      const writer = new FrameWriter(socket);
      writer.writeFrame(FrameType.PING, 0, 0, Buffer.alloc(8, i));
      writer.flush();
      assert.equal(socket.writes.length, 1);
      chunks.push(socket.writes[0] as Buffer);
    }
    let neighbours = 0;
    for (let i = 1; i < chunks.length; i++) {
      const [previous, chunk] = [chunks[i - 1] as Buffer, chunks[i] as Buffer];
      assert.equal(chunk.length, FRAME_HEADER_SIZE + 8);
      if (chunk.buffer !== previous.buffer) continue; // the pool moved on to a new buffer
      neighbours++;
      assert.ok(chunk.byteOffset - previous.byteOffset <= 256, `slabs ${chunk.byteOffset - previous.byteOffset} bytes apart`);
    }
    assert.ok(neighbours > 0, "consecutive slabs came from one pool buffer");
  });

  it("still writes a large batch after a quiet spell as one write, frames in order", () => {
    const socket = recordingSocket();
    const writer = new FrameWriter(socket);
    writer.writeFrame(FrameType.PING, 0, 0, Buffer.alloc(8));
    writer.flush();
    const count = 300;
    for (let i = 0; i < count; i++) writer.writeFrame(FrameType.RESULT, 0, 2 * i + 2, Buffer.alloc(100, i & 0xff));
    writer.flush();
    assert.equal(socket.writes.length, 2, "one write per flush");
    const seen: Array<[number, number, number]> = [];
    const decoder = new FrameDecoder(
      { onFrame: (type, _flags, streamId, payload) => seen.push([type, streamId, payload[0] as number]) },
      { maxFrameSize: 1024 },
    );
    decoder.push(socket.writes[1] as Buffer);
    assert.equal(seen.length, count);
    for (let i = 0; i < count; i++) assert.deepEqual(seen[i], [FrameType.RESULT, 2 * i + 2, i & 0xff]);
  });
});
