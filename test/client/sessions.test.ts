import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, type ClientSession } from "../../src/client/index.js";
import { type CallContext, type Channel, Server } from "../../src/server/index.js";
import { deferred, rejectsWith, waitFor, within } from "../integration/helpers.js";

interface Seen {
  connectionId: string;
  session: string | null;
}

async function setup(pool = 4): Promise<{ server: Server; client: Client; closedSessions: string[] }> {
  const closedSessions: string[] = [];
  const server = new Server({ keepalive: false });
  const service = {
    seen(this: CallContext): Seen {
      return { connectionId: this.connectionId, session: this.session?.id ?? null };
    },
    count(this: CallContext): number {
      const session = this.session;
      if (session === undefined) return -1;
      if (!session.state.has("count")) {
        const id = session.id;
        session.onClose(() => closedSessions.push(id));
      }
      const next = ((session.state.get("count") as number | undefined) ?? 0) + 1;
      session.state.set("count", next);
      return next;
    },
    async *ticks(this: CallContext, n: number): AsyncGenerator<Seen> {
      for (let i = 0; i < n; i++) yield { connectionId: this.connectionId, session: this.session?.id ?? null };
    },
  };
  server.register("s", service);
  server.channel("s.where", async function (this: CallContext, channel: Channel<Seen, unknown>) {
    await channel.send({ connectionId: this.connectionId, session: this.session?.id ?? null });
  });
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  const client = new Client(address, { keepalive: false, pool: { min: pool } });
  await client.connect();
  await waitFor(() => client.connectionIds.length === pool, 3000, "pool open");
  return { server, client, closedSessions };
}

describe("sessions", () => {
  it("pin every call, stream and channel, explicit or implicit, to one connection (checked on the server)", async () => {
    const { server, client } = await setup();
    try {
      // Outside a session calls spread over the pool's connections.
      const spread = new Set<string>();
      for (let i = 0; i < 8; i++) spread.add((await client.call<Seen>("s.seen")).connectionId);
      assert.equal(spread.size, 4);

      await client.session(async (session) => {
        const seen: Seen[] = [];
        for (let i = 0; i < 8; i++) seen.push(await client.call<Seen>("s.seen")); // implicit
        for (let i = 0; i < 8; i++) seen.push(await session.call<Seen>("s.seen")); // explicit
        seen.push(await session.proxy<{ seen(): Seen }>("s").seen());
        for await (const tick of client.stream<Seen>("s.ticks", [3])) seen.push(tick);
        const channel = session.channel<unknown, Seen>("s.where");
        for await (const where of channel) seen.push(where);
        // Through nested awaits and timers too (AsyncLocalStorage).
        await sleep(5);
        seen.push(await Promise.resolve().then(() => client.call<Seen>("s.seen")));
        for (const s of seen) {
          assert.equal(s.connectionId, session.connectionId);
          assert.equal(s.session, session.id);
        }
      });
      // After the session, no session is seen and calls spread again.
      assert.equal((await client.call<Seen>("s.seen")).session, null);
    } finally {
      await client.close();
      await server.close({ timeout: 500 });
    }
  });

  it("keep server-side state per session, released when the session ends", async () => {
    const { server, client, closedSessions } = await setup(2);
    try {
      const ids: string[] = [];
      const [first, second] = await Promise.all([
        client.session(async (s) => {
          ids.push(s.id);
          const counts = [];
          for (let i = 0; i < 3; i++) counts.push(await client.call<number>("s.count"));
          return counts;
        }),
        client.session(async (s) => {
          ids.push(s.id);
          return [await s.call<number>("s.count")];
        }),
      ]);
      assert.deepEqual(first, [1, 2, 3]);
      assert.deepEqual(second, [1]);
      assert.equal(await client.call<number>("s.count"), -1, "no session outside");
      await waitFor(() => closedSessions.length === 2, 2000, "session close hooks");
      assert.deepEqual([...closedSessions].sort(), [...ids].sort());
    } finally {
      await client.close();
      await server.close({ timeout: 500 });
    }
  });

  it("release their state when their connection closes; later calls in the session fail with UNAVAILABLE", async () => {
    const { server, client, closedSessions } = await setup(1);
    const dropped = deferred<void>();
    try {
      const outcome = client.session(async (s) => {
        assert.equal(await s.call<number>("s.count"), 1);
        // The server drops every connection (it is being stopped).
        void server.close({ timeout: 0 });
        await within(dropped.promise, 3000, "connection drop");
        return s.call("s.count");
      });
      await waitFor(() => closedSessions.length === 1, 3000, "session state released");
      dropped.resolve();
      await rejectsWith(outcome, "UNAVAILABLE", /session .* (connection|closed)/);
    } finally {
      await client.close();
      await server.close({ timeout: 500 });
    }
  });

  it("a session's result or error is the callback's", async () => {
    const { server, client } = await setup(1);
    try {
      assert.equal(await client.session(async () => "done"), "done");
      await assert.rejects(
        client.session(async () => {
          throw new Error("callback failed");
        }),
        /callback failed/,
      );
      // The session object used after its session ended fails clearly.
      let ended: ClientSession | undefined;
      await client.session(async (s) => {
        ended = s;
      });
      await rejectsWith((ended as ClientSession).call("s.seen"), "FAILED_PRECONDITION", /has ended/);
      // A call made outside the callback is not in the session (AsyncLocalStorage follows the call, not the closure).
      let outside: (() => Promise<Seen>) | undefined;
      await client.session(async () => {
        outside = () => client.call<Seen>("s.seen");
      });
      assert.equal((await (outside as () => Promise<Seen>)()).session, null);
    } finally {
      await client.close();
      await server.close({ timeout: 500 });
    }
  });
});
