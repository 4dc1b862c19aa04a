import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { FrameType } from "../../src/protocol/frame.js";
import { Server } from "../../src/server/index.js";
import { FakeServer, RawPeer, frame, rejectsWith, sleep, waitFor } from "./helpers.js";

/** Frames of `type` among those a raw peer has received and not taken. */
function count(peer: RawPeer, type: number): number {
  return peer.frames.filter((f) => f.type === type).length;
}

/**
 * Keepalive over real sockets (PROTOCOL.md §9.1): a side PINGs only a peer
 * it has not heard from for an interval, never drops one that answers, and
 * drops one that has gone silent.
 */
describe("keepalive on the wire", () => {
  it("sends no PINGs to a peer that keeps sending", async () => {
    // The interval leaves room for a loaded machine to delay the peer's writes.
    const server = new Server({ keepalive: { interval: 50, timeout: 1000 } });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const peer = await RawPeer.open(Number(address.split(":").pop()));
    try {
      // Eight of the server's intervals, with traffic (PINGs of our own) every 5 ms.
      const end = performance.now() + 400;
      for (let i = 0; i < 100 && performance.now() < end; i++) {
        peer.write(frame(FrameType.PING, 0, 0, Buffer.alloc(8, i)));
        await sleep(5);
      }
      await waitFor(() => count(peer, FrameType.PONG) > 10, 2000, "the server's PONGs");
      assert.equal(count(peer, FrameType.PING), 0, "no PING from the server while the peer was heard from");
      // Then silent: the server PINGs it.
      await peer.next(FrameType.PING, 2000);
    } finally {
      peer.destroy();
      await server.close({ timeout: 1000 });
    }
  });

  it("PINGs a quiet peer that only answers PINGs, and never drops it, whatever the timeout's ratio to the interval", async () => {
    // Timeout well past the interval, under two intervals, equal to it, and under it.
    for (const keepalive of [
      { interval: 25, timeout: 100 },
      { interval: 50, timeout: 60 },
      { interval: 50, timeout: 50 },
      { interval: 60, timeout: 40 },
    ]) {
      const server = new Server({ keepalive });
      const [address] = (await server.listen("127.0.0.1:0")) as [string];
      const peer = await RawPeer.open(Number(address.split(":").pop()));
      try {
        let pings = 0;
        const end = performance.now() + 6 * Math.max(keepalive.interval, keepalive.timeout);
        for (let i = 0; i < 100 && performance.now() < end; i++) {
          // Fails if the server closes the connection instead.
          const ping = await peer.next(FrameType.PING, 2000);
          assert.equal(ping.payload.length, 8);
          peer.write(frame(FrameType.PONG, 0, 0, ping.payload));
          pings++;
        }
        assert.ok(pings >= 2, `${JSON.stringify(keepalive)}: ${pings} PINGs`);
        assert.equal(peer.isClosed, false, JSON.stringify(keepalive));
        assert.equal(server.connectionCount, 1, JSON.stringify(keepalive));
      } finally {
        peer.destroy();
        await server.close({ timeout: 1000 });
      }
    }
  });

  it("keeps two idle rapt peers connected, and the client measures the round trip", async () => {
    const server = new Server({ keepalive: { interval: 20, timeout: 60 } });
    server.register("ping", () => "pong");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { keepalive: { interval: 30, timeout: 90 } });
    try {
      await client.connect();
      const id = client.connectionId;
      await sleep(400);
      assert.equal(client.connectionId, id, "still the first connection");
      assert.equal(server.connectionCount, 1);
      const rtt = client.rtt;
      assert.ok(rtt !== undefined && rtt >= 0 && rtt < 400, `rtt ${rtt}`);
      assert.equal(await client.call("ping", []), "pong");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("measures the round trip right after the handshake, before any interval has passed", async () => {
    const server = new Server({ keepalive: false });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address, { keepalive: { interval: 60_000, timeout: 180_000 } });
    try {
      await client.connect();
      await waitFor(() => client.rtt !== undefined, 2000, "the PONG of the PING sent at the handshake");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("drops a server that stops answering, failing its calls with UNAVAILABLE", async () => {
    // Completes the handshake, then reads everything and answers nothing.
    const fake = await FakeServer.start();
    const client = new Client(`127.0.0.1:${fake.port}`, { keepalive: { interval: 20, timeout: 100 } });
    try {
      const started = performance.now();
      const call = client.call("never.answered", []);
      await rejectsWith(call, "UNAVAILABLE", /peer silent for \d+ ms, past the keepalive timeout/);
      const elapsed = performance.now() - started;
      // Silence is counted in ticks of the interval on a shared clock: a
      // tick that was due just before the handshake but ran late, after it,
      // starts the count up to an interval early. So from timeout - interval
      // to timeout + interval, and slack for a loaded machine.
      assert.ok(elapsed >= 80 && elapsed < 1500, `dropped after ${Math.round(elapsed)} ms`);
      // The silent server was PINGed (at the handshake, then on silent ticks) before it was dropped.
      let pings = 0;
      for (const f of fake.inbox.frames) if (f.type === FrameType.PING) pings++;
      assert.ok(pings >= 2, `${pings} PINGs`);
    } finally {
      client.destroy();
      await fake.close();
    }
  });
});
