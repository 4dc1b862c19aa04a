import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { decode } from "@msgpack/msgpack";
import { Connection, type ConnectionOwner, DEFAULT_LIMITS, FIRST_BATCH_ITEMS } from "../../src/protocol/connection.js";
import { FRAME_HEADER_SIZE, FrameType } from "../../src/protocol/frame.js";
import { RpcError } from "../../src/protocol/rpc-error.js";
import { type RawFrame, SocketPairs, takeFrames, waitFor } from "../integration/helpers.js";

/**
 * What a Connection writes to its socket before the end of the event-loop
 * turn instead of with the turn's other frames: a stream's first frame of
 * items, and CREDIT. Each is there to wake a peer that waits for it.
 */
describe("Connection: frames written at once", () => {
  let pairs: SocketPairs;

  before(async () => {
    pairs = await SocketPairs.start();
  });

  after(() => pairs.close());

  const owner: ConnectionOwner = {
    onHandshake() {},
    onCall() {},
    onGoaway() {},
    onClose() {},
  };

  /** An open server-side Connection on `far` whose peer takes ITEMS, and the frames `near` receives. */
  async function open(): Promise<{ connection: Connection; far: Socket; received: RawFrame[] }> {
    const { near, far } = await pairs.pair();
    const connection = new Connection(far, owner, { role: "server", limits: DEFAULT_LIMITS, keepalive: false, handshakeTimeout: 5000 });
    connection.open({ ...DEFAULT_LIMITS });
    const received: RawFrame[] = [];
    let buffer: Buffer = Buffer.alloc(0);
    near.on("data", (chunk: Buffer) => {
      buffer = takeFrames(Buffer.concat([buffer, chunk]), (f) => received.push(f));
    });
    return { connection, far, received };
  }

  it("writes a stream's first FIRST_BATCH_ITEMS items as soon as it has them; later items, and items sent without a count, wait for the turn", async () => {
    const { connection, far, received } = await open();
    const start = far.bytesWritten;
    for (let i = 0; i < FIRST_BATCH_ITEMS - 1; i++) connection.sendItem(2, i, i);
    assert.equal(far.bytesWritten, start, "nothing before the first frame is full");
    connection.sendItem(2, FIRST_BATCH_ITEMS - 1, FIRST_BATCH_ITEMS - 1);
    const first = far.bytesWritten;
    assert.ok(first > start, "the first frame is written at once");
    for (let i = FIRST_BATCH_ITEMS; i < 300; i++) connection.sendItem(2, i, i);
    // Channel messages come without a count: never written early.
    for (let i = 0; i < 40; i++) connection.sendItem(4, i);
    assert.equal(far.bytesWritten, first, "the rest waits for the end of the turn");
    await waitFor(() => received.length === 3, 2000, "three frames");
    assert.deepEqual(
      received.map((f) => [f.type, f.streamId, (decode(f.payload) as number[]).length]),
      [
        [FrameType.ITEMS, 2, FIRST_BATCH_ITEMS],
        [FrameType.ITEMS, 2, 300 - FIRST_BATCH_ITEMS],
        [FrameType.ITEMS, 4, 40],
      ],
    );
    assert.deepEqual(
      received.slice(0, 2).flatMap((f) => decode(f.payload) as number[]),
      Array.from({ length: 300 }, (_, i) => i),
    );
    connection.close(new RpcError("CANCELLED", "test over"));
  });

  it("writes CREDIT at once, with the frames the turn had queued", async () => {
    const { connection, far, received } = await open();
    const start = far.bytesWritten;
    connection.sendItem(4, "queued");
    connection.sendCredit(6, 100);
    assert.ok(far.bytesWritten >= start + FRAME_HEADER_SIZE + 4, "CREDIT is written before the turn ends");
    await waitFor(() => received.length === 2, 2000, "two frames");
    // Frames of different streams keep no order between them (batches go after the turn's other frames).
    assert.deepEqual(
      received.map((f) => [f.type, f.streamId]).sort((a, b) => (a[1] as number) - (b[1] as number)),
      [
        [FrameType.ITEM, 4],
        [FrameType.CREDIT, 6],
      ],
    );
    assert.equal(received.find((f) => f.type === FrameType.CREDIT)?.payload.readUInt32BE(0), 100);
    connection.close(new RpcError("CANCELLED", "test over"));
  });
});
