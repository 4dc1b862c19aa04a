import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { Client } from "../../src/client/index.js";
import { FIRST_BATCH_ITEMS } from "../../src/protocol/connection.js";
import { FrameType } from "../../src/protocol/frame.js";
import { type Channel, Server } from "../../src/server/index.js";
import { FakeServer, RAW_LIMITS, RawPeer, type RawFrame, callPayload, frame, helloFrame, within } from "../integration/helpers.js";

/** The items an ITEM or ITEMS frame carries. */
function itemsOf(f: RawFrame): unknown[] {
  if (f.type === FrameType.ITEM) return [decode(f.payload)];
  assert.equal(f.type, FrameType.ITEMS);
  const items = decode(f.payload);
  assert.ok(Array.isArray(items) && items.length > 0, "an ITEMS payload is a non-empty array");
  return items;
}

/** ITEMS payload with any MessagePack array form (the encoder picks the smallest). */
function itemsPayload(items: unknown[]): Uint8Array {
  return encode(items);
}

/** A CALL streaming argument 0 (head `[method, nil, nil, 0]`, args `[nil]`). */
function streamingCall(streamId: number, method: string): Buffer {
  return frame(FrameType.CALL, 0, streamId, callPayload([method, null, null, 0], [null]));
}

/** Several items per frame (ITEMS, PROTOCOL.md §3.2) between rapt and raw peers over loopback. */
describe("ITEMS frames", () => {
  const server = new Server({ keepalive: false });
  let port: number;
  const peers: RawPeer[] = [];

  async function peer(limits: object = RAW_LIMITS): Promise<RawPeer> {
    const p = await RawPeer.open(port, limits);
    peers.push(p);
    return p;
  }

  /** Reads one stream's ITEM/ITEMS frames up to its END; returns the frames. */
  async function readStream(p: RawPeer, streamId: number): Promise<RawFrame[]> {
    const frames: RawFrame[] = [];
    for (let i = 0; i < 10_000; i++) {
      const f = await p.next();
      assert.equal(f.streamId, streamId);
      if (f.type === FrameType.END) return frames;
      assert.ok(f.type === FrameType.ITEM || f.type === FrameType.ITEMS, `unexpected frame type ${f.type}`);
      frames.push(f);
    }
    return assert.fail("no END within 10,000 frames");
  }

  before(async () => {
    server.register("s", {
      async *count(n: number): AsyncGenerator<number> {
        for (let i = 0; i < n; i++) yield i;
      },
      async sum(values: AsyncIterable<number>): Promise<number> {
        let total = 0;
        for await (const v of values) total += v;
        return total;
      },
      echo: (x: unknown) => x,
    });
    // Sends `n` messages without waiting for the other end: they leave in shared ITEMS frames.
    server.channel("burst", async (channel: Channel<number, number>) => {
      for await (const n of channel) {
        const sends: Promise<void>[] = [];
        for (let i = 0; i < n; i++) sends.push(channel.send(i));
        await Promise.all(sends);
      }
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    port = Number(address.split(":").pop());
  });

  after(async () => {
    for (const p of peers) p.destroy();
    await server.close();
  });

  it("a server stream to a peer that announced maxBatchItems comes in ITEMS frames, within its limit and in order", async () => {
    const p = await peer({ ...RAW_LIMITS, streamWindow: 1000, maxBatchItems: 64 });
    p.write(frame(FrameType.CALL, 0, 1, callPayload(["s.count"], [500])));
    const frames = await readStream(p, 1);
    const items = frames.flatMap(itemsOf);
    assert.deepEqual(
      items,
      Array.from({ length: 500 }, (_, i) => i),
    );
    assert.ok(
      frames.some((f) => f.type === FrameType.ITEMS),
      "items written in one turn share frames",
    );
    assert.ok(frames.length < 50, `500 small items took ${frames.length} frames`);
    for (const f of frames) assert.ok(itemsOf(f).length <= 64, "no ITEMS frame above the peer's maxBatchItems");
    // rapt writes the array header as array32, so it can append in place.
    const batch = frames.find((f) => f.type === FrameType.ITEMS) as RawFrame;
    assert.equal(batch.payload[0], 0xdd);
  });

  it("a server stream's first frame carries FIRST_BATCH_ITEMS items, the rest of the turn's items the next, and a client stream's the same", async () => {
    const p = await peer({ ...RAW_LIMITS, streamWindow: 1000, maxBatchItems: 1024 });
    p.write(frame(FrameType.CALL, 0, 1, callPayload(["s.count"], [300])));
    const frames = await readStream(p, 1);
    assert.deepEqual(
      frames.map((f) => itemsOf(f).length),
      [FIRST_BATCH_ITEMS, 300 - FIRST_BATCH_ITEMS],
    );
    assert.deepEqual(
      frames.flatMap(itemsOf),
      Array.from({ length: 300 }, (_, i) => i),
    );
    // A rapt client's streamed argument, to a server that records the frames.
    const fake = await FakeServer.start({ ...RAW_LIMITS, maxBatchItems: 1024, streamWindow: 1000 });
    const client = new Client(`127.0.0.1:${fake.port}`, { keepalive: false });
    try {
      async function* values(): AsyncGenerator<number> {
        for (let i = 0; i < 100; i++) yield i;
      }
      void client.call("s.sum", [values()]).catch(() => {});
      assert.equal((await fake.inbox.next(FrameType.CALL)).streamId, 1);
      const sent = [await fake.inbox.next(), await fake.inbox.next()];
      assert.deepEqual(
        sent.map((f) => [f.type, itemsOf(f).length]),
        [
          [FrameType.ITEMS, FIRST_BATCH_ITEMS],
          [FrameType.ITEMS, 100 - FIRST_BATCH_ITEMS],
        ],
      );
    } finally {
      // The fake server never answers: the call cannot finish, so no graceful close.
      client.destroy();
      await fake.close();
    }
  });

  it("a peer that announced no maxBatchItems gets every item in its own ITEM", async () => {
    const p = await peer({ ...RAW_LIMITS, streamWindow: 1000 });
    p.write(frame(FrameType.CALL, 0, 1, callPayload(["s.count"], [300])));
    const frames = await readStream(p, 1);
    assert.equal(frames.length, 300);
    assert.ok(frames.every((f) => f.type === FrameType.ITEM));
    assert.deepEqual(
      frames.flatMap(itemsOf),
      Array.from({ length: 300 }, (_, i) => i),
    );
  });

  it("ITEMS from the client feed a streamed argument like ITEMs, in any array form", async () => {
    const p = await peer();
    p.write(streamingCall(1, "s.sum"));
    p.write(frame(FrameType.ITEMS, 0, 1, itemsPayload([1, 2, 3])));
    p.write(frame(FrameType.ITEM, 0, 1, encode(4)));
    // array16 and array32 forms of small arrays are valid MessagePack too.
    p.write(frame(FrameType.ITEMS, 0, 1, Buffer.concat([Buffer.from([0xdc, 0, 2]), encode(5), encode(6)])));
    p.write(frame(FrameType.ITEMS, 0, 1, Buffer.concat([Buffer.from([0xdd, 0, 0, 0, 4]), encode(7), encode(8), encode(9), encode(10)])));
    p.write(frame(FrameType.END, 0, 1));
    assert.deepEqual(await p.nextResult(), { streamId: 1, value: 55 });
  });

  it("ITEMS beyond the credit fail the call with PROTOCOL_ERROR, not the connection", async () => {
    const p = await peer();
    p.write(streamingCall(1, "s.sum"));
    // The server's default window is 256 items.
    p.write(frame(FrameType.ITEMS, 0, 1, itemsPayload(Array.from({ length: 300 }, () => 1))));
    const error = await p.nextError();
    assert.deepEqual([error.streamId, error.code], [1, "PROTOCOL_ERROR"]);
    assert.match(error.message, /s\.sum: ITEMS of 300 items exceeds the credit/);
    p.write(frame(FrameType.CALL, 0, 3, callPayload(["s.echo"], ["still here"])));
    assert.deepEqual(await p.nextResult(), { streamId: 3, value: "still here" });
  });

  it("ITEMS above maxBatchItems, empty, or not an array fail the call with PROTOCOL_ERROR naming the problem", async () => {
    const p = await peer();
    const cases: Array<[Uint8Array, RegExp]> = [
      [itemsPayload(Array.from({ length: 1025 }, () => 0)), /ITEMS of 1025 items exceeds maxBatchItems \(1024\)/],
      [itemsPayload([]), /malformed ITEMS: the array is empty/],
      [encode({ not: "an array" }), /malformed ITEMS: the payload is not a MessagePack array/],
      [Buffer.from([0x93, 0x01]), /malformed MessagePack/],
    ];
    let streamId = 1;
    for (const [payload, message] of cases) {
      p.write(streamingCall(streamId, "s.sum"));
      p.write(frame(FrameType.ITEMS, 0, streamId, payload));
      const error = await p.nextError();
      assert.deepEqual([error.streamId, error.code], [streamId, "PROTOCOL_ERROR"]);
      assert.match(error.message, message);
      streamId += 2;
    }
    p.write(frame(FrameType.CALL, 0, streamId, callPayload(["s.echo"], [1])));
    assert.deepEqual(await p.nextResult(), { streamId, value: 1 });
  });

  it("the server announces maxBatchItems, lowered to its codec's array length limit", async () => {
    const limited = new Server({ codec: { maxArrayLength: 10 } });
    const [address] = (await limited.listen("127.0.0.1:0")) as [string];
    const raw = await RawPeer.connect(Number(address.split(":").pop()));
    try {
      raw.write(helloFrame());
      const welcome = decode((await raw.next(FrameType.WELCOME)).payload) as { limits: Record<string, unknown> };
      assert.equal(welcome.limits.maxBatchItems, 10);
    } finally {
      raw.destroy();
      await limited.close();
    }
  });

  it("a rapt client reads a server stream and a burst of channel messages (sent in ITEMS) complete and in order", async () => {
    const client = new Client(`127.0.0.1:${port}`, { keepalive: false });
    try {
      const items: number[] = [];
      for await (const n of client.stream<number>("s.count", [5000])) items.push(n);
      assert.equal(items.length, 5000);
      assert.ok(items.every((n, i) => n === i));
      const channel = client.channel<number, number>("burst");
      await channel.send(2000);
      const messages: number[] = [];
      for await (const m of channel) {
        messages.push(m);
        if (messages.length === 2000) break;
      }
      assert.ok(messages.every((n, i) => n === i));
      channel.close();
    } finally {
      await client.close();
    }
  });
});

describe("review fixes around items", () => {
  it("a CREDIT between the fragments of an item on its stream is taken, not a connection error", async () => {
    const server = new Server({ keepalive: false });
    server.register("s", {
      async size(values: AsyncIterable<string>): Promise<number> {
        let total = 0;
        for await (const v of values) total += v.length;
        return total;
      },
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const peer = await RawPeer.open(Number(address.split(":").pop()));
    try {
      peer.write(streamingCall(1, "s.size"));
      const item = Buffer.from(encode("x".repeat(100_000)));
      peer.write(frame(FrameType.ITEM, 0x01, 1, item.subarray(0, 60_000)));
      // The client grants credit on the same stream while its item is half sent.
      peer.write(frame(FrameType.CREDIT, 0, 1, Buffer.from([0, 0, 0, 8])));
      peer.write(frame(FrameType.ITEM, 0, 1, item.subarray(60_000)));
      peer.write(frame(FrameType.END, 0, 1));
      assert.deepEqual(await peer.nextResult(), { streamId: 1, value: 100_000 });
      assert.equal(peer.isClosed, false);
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("a peer's limits never become those another peer's connection uses (no key collision in the shared limit sets)", async () => {
    const server = new Server({ keepalive: false });
    server.register("t", {
      async *count(n: number): AsyncGenerator<number> {
        for (let i = 0; i < n; i++) yield i;
      },
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    // One unknown key that, joined as name=value pairs, would read like a legitimate peer's streamWindow and maxBatchItems.
    const hostile = await RawPeer.connect(Number(address.split(":").pop()));
    const client = new Client(address, { keepalive: false, limits: { streamWindow: 16 } });
    try {
      hostile.write(
        helloFrame(1, undefined, {
          maxFrameSize: 1_048_576,
          maxMessageSize: 67_108_864,
          maxConcurrentStreams: 10_000,
          "streamWindow=16,maxBatchItems": 1024,
        }),
      );
      await hostile.next(FrameType.WELCOME);
      let n = 0;
      for await (const _ of client.stream<number>("t.count", [1000])) n++;
      assert.equal(n, 1000);
    } finally {
      hostile.destroy();
      await client.close();
      await server.close();
    }
  });

  it("limits.maxBatchItems: undefined announces none; a rapt client then sends only ITEM, and calls work", async () => {
    const server = new Server({ keepalive: false, limits: { maxBatchItems: undefined } });
    server.register("s", {
      async sum(values: AsyncIterable<number>): Promise<number> {
        let total = 0;
        for await (const v of values) total += v;
        return total;
      },
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const raw = await RawPeer.connect(Number(address.split(":").pop()));
    const client = new Client(address, { keepalive: false });
    try {
      raw.write(helloFrame());
      const welcome = decode((await raw.next(FrameType.WELCOME)).payload) as { limits: Record<string, unknown> };
      assert.equal("maxBatchItems" in welcome.limits, false);
      async function* numbers(): AsyncGenerator<number> {
        for (let i = 1; i <= 500; i++) yield i;
      }
      assert.equal(await client.call("s.sum", [numbers()]), 125_250);
    } finally {
      raw.destroy();
      await client.close();
      await server.close();
    }
  });
});

describe("configured limits", () => {
  it("a server or client given limits a peer would refuse fails at construction with INVALID_ARGUMENT naming the field", () => {
    const cases: Array<[object, RegExp]> = [
      [{ maxBatchItems: 0 }, /limits\.maxBatchItems should be number & Minimum<1>/],
      [{ streamWindow: 1.5 }, /limits\.streamWindow should be number & Type<"uint32">/],
      [{ maxFrameSize: 100 }, /limits\.maxFrameSize should be number & Minimum<1024>/],
    ];
    for (const [limits, message] of cases) {
      for (const make of [() => new Server({ limits }), () => new Client("127.0.0.1:1", { limits })]) {
        assert.throws(make, (e: unknown) => (e as { code?: string }).code === "INVALID_ARGUMENT" && message.test((e as Error).message));
      }
    }
  });
});

/** A rapt client streaming an argument to a hand-written server that announces a small maxBatchItems. */
describe("a rapt client sending ITEMS", () => {
  it("keeps to the server's maxBatchItems, and sends only ITEM to a server that announced none", async () => {
    for (const maxBatchItems of [3, undefined]) {
      const fake = await FakeServer.start({ ...RAW_LIMITS, streamWindow: 1000, ...(maxBatchItems === undefined ? {} : { maxBatchItems }) });
      const inbox = fake.inbox;
      const client = new Client(`127.0.0.1:${fake.port}`, { keepalive: false });
      try {
        async function* numbers(): AsyncGenerator<number> {
          for (let i = 0; i < 100; i++) yield i;
        }
        const call = client.call<number>("sum", [numbers()]);
        call.catch(() => {});
        assert.equal((await inbox.next(FrameType.CALL)).streamId, 1);
        const received: unknown[] = [];
        let batches = 0;
        for (let i = 0; i < 200 && received.length < 100; i++) {
          const f = await inbox.next();
          if (maxBatchItems === undefined) assert.equal(f.type, FrameType.ITEM);
          const items = itemsOf(f);
          if (f.type === FrameType.ITEMS) batches++;
          assert.ok(items.length <= (maxBatchItems ?? 1), `a frame of ${items.length} items`);
          received.push(...items);
        }
        assert.deepEqual(
          received,
          Array.from({ length: 100 }, (_, i) => i),
        );
        if (maxBatchItems !== undefined) assert.ok(batches > 0, "items of one turn were batched");
        assert.equal((await within(inbox.next(FrameType.END), 2000, "END")).streamId, 1);
        (fake.sockets[0] as Socket).write(frame(FrameType.RESULT, 0, 1, encode(4950)));
        assert.equal(await within(call, 2000, "the call's result"), 4950);
      } finally {
        await client.close();
        await fake.close();
      }
    }
  });
});
