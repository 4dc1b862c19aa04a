import assert from "node:assert/strict";
import { type AddressInfo, type Server, type Socket, createServer, connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { FRAME_HEADER_SIZE, FrameFlag, FrameType } from "../../src/protocol/frame.js";
import { FrameDecoder } from "../../src/protocol/frame-decoder.js";
import { FrameWriter } from "../../src/protocol/frame-writer.js";
import { RecordDecoder } from "../../src/protocol/record-decoder.js";

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** Guards every wait: a writer that stalls fails the test instead of hanging it. */
const WAIT_LIMIT_MS = 10_000;

/** Decodes what arrives on the receiving socket and lets a test wait for a condition. */
class Receiver {
  readonly frames: Frame[] = [];
  ended = false;
  private readonly checks = new Set<() => void>();

  /** With `records`, the bytes are toy records (u32be length, then frame bytes) around the frames. */
  constructor(socket: Socket, maxFrameSize: number, records = false) {
    const decoder = new FrameDecoder(
      {
        onFrame: (type, flags, streamId, payload) => {
          this.frames.push({ type, flags, streamId, payload: Buffer.from(payload) });
          this.poke();
        },
      },
      { maxFrameSize },
    );
    const reader = records
      ? new RecordDecoder({ onRecord: (body) => decoder.push(Buffer.from(body)) }, { minRecordSize: 1, maxRecordSize: 1 << 30 })
      : undefined;
    socket.on("data", (chunk: Buffer) => (reader === undefined ? decoder.push(chunk) : reader.push(chunk)));
    socket.on("end", () => {
      this.ended = true;
      this.poke();
    });
  }

  /** Resolves once `done()` holds; rejects naming `what` if it does not within the limit. */
  until(done: () => boolean, what: string): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!done()) return;
        clearTimeout(timer);
        this.checks.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.checks.delete(check);
        reject(new Error(`timed out waiting for ${what} (${this.frames.length} frames received)`));
      }, WAIT_LIMIT_MS);
      this.checks.add(check);
    });
  }

  /** Concatenated payloads of one stream's frames, in arrival order. */
  bytesOf(streamId: number): Buffer {
    return Buffer.concat(this.frames.filter((f) => f.streamId === streamId).map((f) => f.payload));
  }

  private poke(): void {
    for (const check of [...this.checks]) check();
  }
}

function pattern(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) out.writeUInt32LE((Math.imul(i, 2654435761) ^ seed) >>> 0, i);
  return out;
}

let bigMessage: Buffer | undefined;
/** 32 MiB, more than loopback socket buffers hold, so a paused receiver backs the sender up. */
function big(): Buffer {
  bigMessage ??= pattern(32 * 1024 * 1024, 10);
  return bigMessage;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("FrameWriter over a loopback socket", () => {
  let server: Server;
  const sockets: Socket[] = [];

  before(async () => {
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });

  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** A connected pair: `sender` (client side) and `receiver` (accepted side). */
  async function pair(options: { writableHighWaterMark?: number } = {}): Promise<{ sender: Socket; receiver: Socket }> {
    const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
    const { port } = server.address() as AddressInfo;
    const sender = connect({ port, host: "127.0.0.1", ...options });
    sockets.push(sender);
    await new Promise<void>((resolve, reject) => {
      sender.once("connect", resolve);
      sender.once("error", reject);
    });
    const receiver = await accepted;
    sockets.push(receiver);
    return { sender, receiver };
  }

  it("writes 1000 small frames from one turn as one batch, intact and in order", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 1024);
    let writeCalls = 0;
    let corked = 0;
    let batches = 0;
    const write = sender.write.bind(sender) as (chunk: Uint8Array) => boolean;
    const cork = sender.cork.bind(sender);
    const uncork = sender.uncork.bind(sender);
    Object.assign(sender, {
      write(chunk: Uint8Array): boolean {
        writeCalls++;
        if (corked === 0) batches++;
        return write(chunk);
      },
      cork(): void {
        corked++;
        cork();
      },
      uncork(): void {
        corked--;
        if (corked === 0) batches++;
        uncork();
      },
    });
    const writer = new FrameWriter(sender);
    const expected: Frame[] = [];
    for (let i = 0; i < 1000; i++) {
      const payload = Buffer.from(`frame ${i} `.repeat(i % 5));
      expected.push({ type: FrameType.ITEM, flags: 0, streamId: 1 + 2 * (i % 7), payload });
      writer.writeFrame(FrameType.ITEM, 0, 1 + 2 * (i % 7), payload);
      // The caller may reuse its buffer at once.
      payload.fill(0);
    }
    assert.equal(writeCalls, 0, "nothing is written before the end of the turn");
    await rx.until(() => rx.frames.length >= 1000, "1000 frames");
    assert.equal(batches, 1, "one batch handed to the kernel");
    assert.ok(writeCalls <= 50, `${writeCalls} write calls for 1000 frames`);
    assert.equal(rx.frames.length, 1000);
    for (let i = 0; i < 1000; i++) {
      const got = rx.frames[i] as Frame;
      const want = expected[i] as Frame;
      assert.deepEqual([got.type, got.flags, got.streamId], [want.type, want.flags, want.streamId], `frame ${i}`);
      assert.equal(got.payload.toString(), `frame ${i} `.repeat(i % 5), `payload ${i}`);
    }
  });

  it("hands a turn of small frames up to 64 KiB to the socket in one write, growing its buffer instead of splitting the batch", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 1024);
    const writes: number[] = [];
    const write = sender.write.bind(sender) as (chunk: Uint8Array) => boolean;
    Object.assign(sender, {
      write(chunk: Uint8Array): boolean {
        writes.push(chunk.length);
        return write(chunk);
      },
    });
    const writer = new FrameWriter(sender);
    // 40 KiB in 1000 frames, some written as two parts (a CALL's head and arguments).
    const head = Buffer.from("head");
    for (let i = 0; i < 1000; i++) {
      if (i % 2 === 0) writer.writeFrame(FrameType.ITEM, 0, 1, Buffer.alloc(31, i & 0xff));
      else writer.writeFrameParts(FrameType.CALL, 0, 2 * i + 1, head, Buffer.alloc(27, i & 0xff));
    }
    await rx.until(() => rx.frames.length >= 1000, "1000 frames");
    assert.deepEqual(writes, [1000 * (FRAME_HEADER_SIZE + 31)], "one write of the whole batch");
    for (let i = 0; i < 1000; i++) {
      const got = rx.frames[i] as Frame;
      const expected = i % 2 === 0 ? Buffer.alloc(31, i & 0xff) : Buffer.concat([head, Buffer.alloc(27, i & 0xff)]);
      assert.deepEqual(got.payload, expected, `frame ${i}`);
    }
  });

  it("fragments a 5 MB message into frames of at most fragmentSize, FOLLOWS on all but the last", async () => {
    const { sender, receiver } = await pair();
    const fragmentSize = 64 * 1024;
    // The receiving decoder refuses anything larger than a fragment.
    const rx = new Receiver(receiver, fragmentSize);
    const writer = new FrameWriter(sender, { fragmentSize });
    const message = pattern(5 * 1024 * 1024 + 123, 1);
    writer.writeMessage(FrameType.RESULT, 9, message);
    assert.ok(writer.queuedBulkBytes > 0);
    await rx.until(() => rx.frames.at(-1)?.flags === 0, "the last fragment");
    const frames = rx.frames;
    assert.equal(frames.length, Math.ceil(message.length / fragmentSize));
    for (const [i, frame] of frames.entries()) {
      assert.equal(frame.type, FrameType.RESULT);
      assert.equal(frame.streamId, 9);
      assert.ok(frame.payload.length <= fragmentSize);
      assert.equal(frame.flags, i === frames.length - 1 ? 0 : FrameFlag.FOLLOWS, `flags of fragment ${i}`);
    }
    assert.ok(rx.bytesOf(9).equals(message), "reassembles byte-exact");
    assert.equal(writer.queuedBulkBytes, 0);
  });

  it("sends a message that fits one fragment as a single unflagged frame", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 1024);
    const writer = new FrameWriter(sender, { fragmentSize: 1024 });
    writer.writeMessage(FrameType.RESULT, 1, pattern(1024, 2));
    writer.writeMessage(FrameType.RESULT, 3, Buffer.alloc(0));
    await rx.until(() => rx.frames.length === 2, "two frames");
    assert.deepEqual(
      rx.frames.map((f) => [f.streamId, f.flags, f.payload.length]),
      [
        [1, 0, 1024],
        [3, 0, 0],
      ],
    );
    assert.ok(rx.frames[0]?.payload.equals(pattern(1024, 2)));
  });

  it("writes the first fragment of a large message before small frames queued after it", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 16 * 1024);
    const writer = new FrameWriter(sender, { fragmentSize: 16 * 1024 });
    writer.writeMessage(FrameType.CALL, 1, pattern(100_000, 3));
    writer.writeFrame(FrameType.CALL, 0, 3, Buffer.from("small"));
    await rx.until(() => rx.frames.some((f) => f.streamId === 1 && f.flags === 0), "the end of stream 1");
    assert.deepEqual(
      rx.frames.slice(0, 2).map((f) => [f.streamId, f.flags]),
      [
        [1, FrameFlag.FOLLOWS],
        [3, 0],
      ],
    );
    assert.ok(rx.bytesOf(1).equals(pattern(100_000, 3)));
  });

  it("lets small frames of other streams overtake a large message in flight", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 64 * 1024);
    const writer = new FrameWriter(sender);
    const large = pattern(5 * 1024 * 1024, 4);
    writer.writeMessage(FrameType.RESULT, 1, large);
    // Queued in the same turn, and in a later turn while fragments are going out.
    writer.writeFrame(FrameType.RESULT, 0, 3, Buffer.from("same turn"));
    await turn();
    await turn();
    assert.ok(writer.queuedBulkBytes > 0, "the large message is still being sent");
    writer.writeMessage(FrameType.RESULT, 5, Buffer.from("later turn"));
    await rx.until(() => rx.frames.some((f) => f.streamId === 1 && f.flags === 0), "the large message's last fragment");
    await rx.until(() => rx.frames.some((f) => f.streamId === 5), "the later small frame");
    const lastLarge = rx.frames.findIndex((f) => f.streamId === 1 && f.flags === 0);
    for (const streamId of [3, 5]) {
      const at = rx.frames.findIndex((f) => f.streamId === streamId);
      assert.ok(at >= 0 && at < lastLarge, `stream ${streamId}'s frame (#${at}) arrives before the last fragment (#${lastLarge})`);
    }
    assert.equal(rx.frames.find((f) => f.streamId === 5)?.payload.toString(), "later turn");
    assert.ok(rx.bytesOf(1).equals(large));
  });

  it("keeps the order of messages on one stream: a small one waits for the large one before it", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 64 * 1024);
    const writer = new FrameWriter(sender);
    const large = pattern(1024 * 1024, 5);
    writer.writeMessage(FrameType.ITEM, 1, large);
    writer.writeMessage(FrameType.ITEM, 1, Buffer.from("small, same turn"));
    await turn();
    writer.writeMessage(FrameType.ITEM, 1, Buffer.from("small, later turn"));
    writer.writeMessage(FrameType.END, 1, Buffer.alloc(0));
    await rx.until(() => rx.frames.some((f) => f.type === FrameType.END), "END");
    const frames = rx.frames;
    assert.ok(frames.every((f) => f.streamId === 1));
    // Message boundaries: everything up to the first unflagged frame is the large message.
    const firstEnd = frames.findIndex((f) => f.flags === 0);
    assert.ok(Buffer.concat(frames.slice(0, firstEnd + 1).map((f) => f.payload)).equals(large));
    assert.deepEqual(
      frames.slice(firstEnd + 1).map((f) => f.payload.toString()),
      ["small, same turn", "small, later turn", ""],
    );
  });

  it("interleaves two large messages of different streams round-robin", async () => {
    const { sender, receiver } = await pair();
    const fragmentSize = 16 * 1024;
    const rx = new Receiver(receiver, fragmentSize);
    const writer = new FrameWriter(sender, { fragmentSize });
    const a = pattern(40 * fragmentSize, 6);
    const b = pattern(40 * fragmentSize, 7);
    writer.writeMessage(FrameType.RESULT, 1, a);
    writer.writeMessage(FrameType.RESULT, 3, b);
    await rx.until(() => rx.frames.filter((f) => f.flags === 0).length === 2, "both messages");
    const order = rx.frames.map((f) => f.streamId);
    assert.equal(order.length, 80);
    for (let i = 0; i < order.length; i++) assert.equal(order[i], i % 2 === 0 ? 1 : 3, `fragment ${i} (order ${order.join(",")})`);
    assert.ok(rx.bytesOf(1).equals(a));
    assert.ok(rx.bytesOf(3).equals(b));
  });

  it("dropStream cuts off the rest of a queued message and the messages behind it", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 16 * 1024);
    const writer = new FrameWriter(sender, { fragmentSize: 16 * 1024 });
    writer.writeMessage(FrameType.RESULT, 5, pattern(1024 * 1024, 8));
    writer.writeMessage(FrameType.RESULT, 5, Buffer.from("behind it"));
    writer.writeMessage(FrameType.RESULT, 7, pattern(100_000, 9));
    assert.equal(writer.dropStream(5), true, "a partly sent message was cut");
    assert.equal(writer.dropStream(5), false, "nothing left to drop");
    assert.equal(writer.dropStream(11), false, "unknown stream");
    await rx.until(() => rx.frames.some((f) => f.streamId === 7 && f.flags === 0), "stream 7");
    // Give the writer a few more turns to send anything it still (wrongly) holds, then end.
    for (let i = 0; i < 5; i++) await turn();
    writer.writeFrame(FrameType.END, 0, 9);
    writer.flush();
    sender.end();
    await rx.until(() => rx.ended, "end of stream");
    const five = rx.frames.filter((f) => f.streamId === 5);
    assert.deepEqual(
      five.map((f) => [f.flags, f.payload.length]),
      [[FrameFlag.FOLLOWS, 16 * 1024]],
    );
    assert.ok(rx.bytesOf(7).equals(pattern(100_000, 9)));
    assert.equal(rx.frames.at(-1)?.streamId, 9);
    assert.equal(writer.queuedBulkBytes, 0);
  });

  it("keeps sending when its high-water mark is below the socket's (no drain is ever due)", async () => {
    // The socket's own high-water mark (1 MiB) is far above the writer's (32 KiB):
    // write() keeps returning true, so waiting for 'drain' would wait forever.
    const { sender, receiver } = await pair({ writableHighWaterMark: 1024 * 1024 });
    receiver.pause();
    const fragmentSize = 16 * 1024;
    const rx = new Receiver(receiver, fragmentSize);
    const writer = new FrameWriter(sender, { fragmentSize, highWaterMark: 32 * 1024 });
    const message = big();
    writer.writeMessage(FrameType.RESULT, 1, message, "owned");
    // Fill the kernel buffers until the socket holds bytes itself.
    for (let i = 0; i < 20_000 && sender.writableLength === 0; i++) await turn();
    assert.ok(sender.writableLength > 0, "the socket is backed up");
    for (let i = 0; i < 20; i++) await turn();
    receiver.resume();
    await rx.until(() => rx.frames.some((f) => f.flags === 0), "the last fragment");
    assert.ok(rx.bytesOf(1).equals(message));
  });

  it("paces a large message by drain when the receiver is slow, without losing bytes", async () => {
    const { sender, receiver } = await pair();
    receiver.pause();
    const rx = new Receiver(receiver, 64 * 1024);
    const writer = new FrameWriter(sender);
    const message = big();
    writer.writeMessage(FrameType.RESULT, 1, message, "owned");
    for (let i = 0; i < 20_000 && sender.writableLength === 0; i++) await turn();
    assert.ok(sender.writableLength > 0, "the socket is backed up");
    // Backed up: the writer holds the rest instead of piling it onto the socket.
    for (let i = 0; i < 20; i++) await turn();
    assert.ok(sender.writableLength < 256 * 1024 + 64 * 1024 + FRAME_HEADER_SIZE * 8, `socket holds ${sender.writableLength} bytes`);
    assert.ok(writer.queuedBulkBytes > 0);
    writer.writeFrame(FrameType.PING, 0, 0, Buffer.alloc(8));
    receiver.resume();
    await rx.until(() => rx.frames.some((f) => f.streamId === 1 && f.flags === 0), "the last fragment");
    assert.ok(rx.bytesOf(1).equals(message));
    const ping = rx.frames.findIndex((f) => f.type === FrameType.PING);
    assert.ok(ping >= 0 && ping < rx.frames.length - 1, "the PING was not held behind the whole message");
  });

  it("discards everything queued after close()", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 64 * 1024);
    const writer = new FrameWriter(sender);
    writer.writeFrame(FrameType.ITEM, 0, 1, Buffer.from("sent"));
    writer.flush();
    writer.writeFrame(FrameType.ITEM, 0, 1, Buffer.from("queued"));
    writer.writeMessage(FrameType.ITEM, 3, pattern(1024 * 1024, 12));
    writer.close();
    writer.writeFrame(FrameType.ITEM, 0, 1, Buffer.from("after close"));
    for (let i = 0; i < 5; i++) await turn();
    sender.end();
    await rx.until(() => rx.ended, "end of stream");
    assert.deepEqual(
      rx.frames.map((f) => f.payload.toString()),
      ["sent"],
    );
  });

  /** A toy record layer for the output hook: each batch becomes one length-prefixed chunk. Counts batches and their sizes. */
  function toyRecords(): { output: (chunks: readonly Uint8Array[]) => Uint8Array[]; batches: number[] } {
    const batches: number[] = [];
    return {
      batches,
      output(chunks) {
        const bytes = Buffer.concat(chunks);
        batches.push(bytes.length);
        const length = Buffer.alloc(4);
        length.writeUInt32BE(bytes.length);
        return [length, bytes];
      },
    };
  }

  it("passes each flush through its output hook: the frames of one turn are one batch, its output one corked write", async () => {
    const { sender, receiver } = await pair();
    const rx = new Receiver(receiver, 1024, true);
    let corks = 0;
    const cork = sender.cork.bind(sender);
    Object.assign(sender, {
      cork(): void {
        corks++;
        cork();
      },
    });
    const writer = new FrameWriter(sender);
    const toy = toyRecords();
    writer.output = toy.output;
    for (let i = 0; i < 1000; i++) writer.writeFrame(FrameType.ITEM, 0, 1, Buffer.from(`frame ${i}`));
    await rx.until(() => rx.frames.length >= 1000, "1000 frames");
    assert.equal(toy.batches.length, 1, "one batch for the turn");
    assert.equal(corks, 1, "the output's two chunks went out corked");
    assert.deepEqual(
      rx.frames.map((f) => f.payload.toString()),
      Array.from({ length: 1000 }, (_, i) => `frame ${i}`),
    );
  });

  it("keeps pacing a large message by drain with an output hook, each batch bounded, without losing bytes", async () => {
    const { sender, receiver } = await pair();
    receiver.pause();
    const rx = new Receiver(receiver, 64 * 1024, true);
    const writer = new FrameWriter(sender);
    const toy = toyRecords();
    writer.output = toy.output;
    const message = big();
    writer.writeMessage(FrameType.RESULT, 1, message, "owned");
    for (let i = 0; i < 20_000 && sender.writableLength === 0; i++) await turn();
    for (let i = 0; i < 20; i++) await turn();
    assert.ok(sender.writableLength < 256 * 1024 + 64 * 1024 + 64, `socket holds ${sender.writableLength} bytes`);
    assert.ok(writer.queuedBulkBytes > 0, "the writer holds the rest while the socket is backed up");
    receiver.resume();
    await rx.until(() => rx.frames.some((f) => f.streamId === 1 && f.flags === 0), "the last fragment");
    assert.ok(rx.bytesOf(1).equals(message));
    assert.ok(toy.batches.length > 16, `${toy.batches.length} batches`);
    assert.ok(
      Math.max(...toy.batches) <= 256 * 1024 + 2 * (64 * 1024 + FRAME_HEADER_SIZE),
      `largest batch ${Math.max(...toy.batches)} bytes`,
    );
  });
});
