import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { FrameType } from "../../src/protocol/frame.js";
import { type Channel, Server } from "../../src/server/index.js";
import { RAW_LIMITS, RawPeer, type RawFrame, callPayload, frame, sleep } from "../integration/helpers.js";

/** The items an ITEM or ITEMS frame carries. */
function itemsOf(f: RawFrame): unknown[] {
  if (f.type === FrameType.ITEM) return [decode(f.payload)];
  assert.equal(f.type, FrameType.ITEMS, `unexpected frame type ${f.type}`);
  return decode(f.payload) as unknown[];
}

function credit(streamId: number, n: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(n, 0);
  return frame(FrameType.CREDIT, 0, streamId, payload);
}

/**
 * CREDIT a client sends before the server's handler has produced its stream
 * (right after the CALL, while call middleware or the handler still awaits)
 * counts from the start (PROTOCOL.md §5.8). Were it dropped, the stream
 * would stop at the window while the client waits for the items it credited.
 */
describe("credit granted before the stream exists", () => {
  const server = new Server({ keepalive: false });
  let port: number;
  const peers: RawPeer[] = [];

  before(async () => {
    // Every call waits a little before its handler runs: the CREDIT sent with the CALL arrives first.
    server.useCall(async (_ctx, next) => {
      await sleep(30);
      return next();
    });
    server.register("s", {
      async count(n: number): Promise<AsyncIterable<number>> {
        await sleep(30);
        return (async function* () {
          for (let i = 0; i < n; i++) yield i;
        })();
      },
    });
    server.channel("counter", async (channel: Channel<number, number>) => {
      for await (const n of channel) for (let i = 0; i < n; i++) await channel.send(i);
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    port = Number(address.split(":").pop());
  });

  after(async () => {
    for (const p of peers) p.destroy();
    await server.close({ timeout: 1000 });
  });

  /** Reads items of `streamId` until `count` have come (any other frame fails the test). */
  async function readItems(p: RawPeer, streamId: number, count: number): Promise<unknown[]> {
    const items: unknown[] = [];
    for (let i = 0; i < 1000 && items.length < count; i++) {
      const f = await p.next();
      assert.equal(f.streamId, streamId);
      // The server's own grants, for what this side sends on a channel.
      if (f.type !== FrameType.CREDIT) items.push(...itemsOf(f));
    }
    return items;
  }

  it("a server stream sends the window plus CREDIT granted with the CALL, with no further grant", async () => {
    const p = await RawPeer.open(port, { ...RAW_LIMITS, streamWindow: 2, maxBatchItems: 64 });
    peers.push(p);
    // 2 + 60 + 38: exactly the items; END needs no credit (§5.8).
    p.write(Buffer.concat([frame(FrameType.CALL, 0, 1, callPayload(["s.count"], [100])), credit(1, 60), credit(1, 38)]));
    assert.deepEqual(
      await readItems(p, 1, 100),
      Array.from({ length: 100 }, (_, i) => i),
    );
    assert.equal((await p.next()).type, FrameType.END);
  });

  it("a channel sends the window plus CREDIT granted with its open", async () => {
    const p = await RawPeer.open(port, { ...RAW_LIMITS, streamWindow: 1, maxBatchItems: 64 });
    peers.push(p);
    p.write(
      Buffer.concat([
        frame(FrameType.CALL, 0, 1, callPayload(["counter", null, null, null, 1], [])),
        credit(1, 49),
        frame(FrameType.ITEM, 0, 1, encode(50)),
      ]),
    );
    assert.deepEqual(
      await readItems(p, 1, 50),
      Array.from({ length: 50 }, (_, i) => i),
    );
  });
});
