import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { Client } from "../../src/client/index.js";
import { FrameType } from "../../src/protocol/frame.js";
import { MAX_WINDOW_FACTOR, STREAM_BUFFER_BYTES } from "../../src/protocol/inbound-stream.js";
import { ITEM_SIZE_MEMORY_METHODS, ItemSizeMemory } from "../../src/protocol/item-size-memory.js";
import { Server } from "../../src/server/index.js";
import { FakeServer, RAW_LIMITS, type RawFrame, frame } from "../integration/helpers.js";

const WINDOW = 16;

/** The method a CALL frame names. */
function methodOf(f: RawFrame): string {
  assert.equal(f.type, FrameType.CALL, `expected a CALL, got frame type ${f.type}`);
  const headLength = f.payload.readUInt32BE(0);
  return (decode(f.payload.subarray(4, 4 + headLength)) as unknown[])[0] as string;
}

function creditOf(f: RawFrame): number {
  assert.equal(f.type, FrameType.CREDIT, `expected a CREDIT, got frame type ${f.type}`);
  return f.payload.readUInt32BE(0);
}

/**
 * A client remembers, per connection and method, the average item size of
 * the last stream it read, and grants the next stream of that method the
 * credit such items get, in the CALL's own write (PROTOCOL.md §5.8): no
 * round trip at the start of every stream of small items.
 */
describe("opening credit", () => {
  it("goes with the CALL of a method whose last stream had small items; not for other methods, awaited calls or large items", async () => {
    const fake = await FakeServer.start({ ...RAW_LIMITS, maxBatchItems: 1024 });
    const client = new Client(`127.0.0.1:${fake.port}`, { keepalive: false, limits: { streamWindow: WINDOW } });
    try {
      /** Reads one stream whose items the fake server sends in one ITEMS frame, then END. */
      const stream = async (method: string, items: unknown[]): Promise<RawFrame> => {
        const reading = (async () => {
          const got: unknown[] = [];
          for await (const item of client.stream(method)) got.push(item);
          return got;
        })();
        const call = await fake.inbox.next();
        assert.equal(methodOf(call), method);
        const socket = fake.sockets[0];
        assert.ok(socket !== undefined);
        socket.write(Buffer.concat([frame(FrameType.ITEMS, 0, call.streamId, encode(items)), frame(FrameType.END, 0, call.streamId)]));
        assert.deepEqual(await reading, items);
        return call;
      };
      const small = Array.from({ length: WINDOW }, (_, seq) => ({ seq, value: "item" }));
      const large = Array.from({ length: 4 }, () => Buffer.alloc(STREAM_BUFFER_BYTES / WINDOW));

      // First streams: nothing is known, so no CREDIT follows either CALL.
      // The small stream's grant comes as its first item is taken, once its size is measured.
      const first = await stream("s.small", small);
      const grant = await fake.inbox.next();
      assert.deepEqual([grant.streamId, creditOf(grant)], [first.streamId, MAX_WINDOW_FACTOR * WINDOW - (WINDOW - 1)]);
      await stream("s.large", large);

      // Read in the order sent: any opening CREDIT sits right after its CALL.
      const calls = [client.stream("s.small"), client.stream("s.other"), client.stream("s.large")];
      // Settled by the cancel or the destroy at the end.
      client.call("s.small").catch(() => {});
      const last = client.stream("s.small");
      const sent = [];
      for (let i = 0; i < 7; i++) sent.push(await fake.inbox.next());
      assert.deepEqual(
        sent.map((f) => (f.type === FrameType.CALL ? `CALL ${methodOf(f)} ${f.streamId}` : `CREDIT ${creditOf(f)} ${f.streamId}`)),
        [
          "CALL s.small 5",
          `CREDIT ${MAX_WINDOW_FACTOR * WINDOW - WINDOW} 5`,
          "CALL s.other 7",
          // Items of a sixteenth of the buffer budget: their target is the window.
          "CALL s.large 9",
          // Awaited: it will not be read as a stream.
          "CALL s.small 11",
          "CALL s.small 13",
          `CREDIT ${MAX_WINDOW_FACTOR * WINDOW - WINDOW} 13`,
        ],
      );
      // The credit is real: the server may send the whole target at once, with no further grant.
      const socket = fake.sockets[0];
      assert.ok(socket !== undefined);
      const target = Array.from({ length: MAX_WINDOW_FACTOR * WINDOW }, (_, seq) => ({ seq, value: "item" }));
      socket.write(Buffer.concat([frame(FrameType.ITEMS, 0, 13, encode(target)), frame(FrameType.END, 0, 13)]));
      const got: unknown[] = [];
      for await (const item of last) got.push(item);
      assert.deepEqual(got, target);
      for (const call of calls) call.cancel();
    } finally {
      client.destroy();
      await fake.close();
    }
  });

  describe("with a rapt server", () => {
    const server = new Server({ keepalive: false });
    let client: Client;

    before(async () => {
      server.register("s", {
        async *count(n: number, _padding?: string): AsyncGenerator<{ seq: number; value: string }> {
          for (let seq = 0; seq < n; seq++) yield { seq, value: "item" };
        },
      });
      const [address] = (await server.listen("127.0.0.1:0")) as [string];
      client = new Client(address, { keepalive: false, limits: { streamWindow: WINDOW } });
    });

    after(async () => {
      await client.close();
      await server.close({ timeout: 1000 });
    });

    it("streams of one method, after the first, get everything in order under the opening credit", async () => {
      for (const n of [1000, 5000, 3, 0, 2000]) {
        let seq = 0;
        for await (const item of client.stream<{ seq: number; value: string }>("s.count", [n])) {
          assert.deepEqual(item, { seq, value: "item" });
          seq++;
        }
        assert.equal(seq, n);
      }
    });

    it("sends no opening credit with a CALL that goes in fragments, which a CREDIT may not come between", async () => {
      for await (const _ of client.stream("s.count", [100])) void _;
      // 200 KB of arguments: the CALL goes in fragments of 64 KiB. Were a
      // CREDIT sent among them, the server would fail the connection.
      let got = 0;
      for await (const _ of client.stream("s.count", [5000, "x".repeat(200_000)])) got++;
      assert.equal(got, 5000);
      let after = 0;
      for await (const _ of client.stream("s.count", [10])) after++;
      assert.equal(after, 10, "the connection is fine");
    });
  });
});

describe("ItemSizeMemory", () => {
  it("remembers the last size per method, ignores streams that measured nothing, and forgets the longest-remembered first", () => {
    const memory = new ItemSizeMemory();
    assert.equal(memory.get("a"), 0);
    memory.remember("a", 20);
    memory.remember("a", 0);
    memory.remember("b", Number.NaN);
    assert.equal(memory.get("a"), 20);
    assert.equal(memory.get("b"), 0);
    memory.remember("a", 30);
    assert.equal(memory.get("a"), 30);
    for (let i = 1; i < ITEM_SIZE_MEMORY_METHODS; i++) memory.remember(`m${i}`, i);
    // Full: "a" is the oldest, until it is remembered again.
    memory.remember("a", 31);
    memory.remember("new", 5);
    assert.equal(memory.get("a"), 31);
    assert.equal(memory.get("m1"), 0, "the longest-remembered method made room");
    assert.equal(memory.get("m2"), 2);
    assert.equal(memory.get("new"), 5);
  });
});
