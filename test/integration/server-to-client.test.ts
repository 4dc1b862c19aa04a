import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import typia from "typia";
import { Client } from "../../src/client/index.js";
import { type CallContext, RpcError, Server } from "../../src/server/index.js";
import { deferred, rejectsWith, socketPath, waitFor, within } from "../integration/helpers.js";

/** The server calling back into the client that called it, and pushing events to it. */
describe("server to client", () => {
  const server = new Server({ keepalive: false });
  let client: Client;
  const progress: Array<[number, number]> = [];
  let listenerContext: { connectionId: string; method: string } | undefined;
  let serverConnectionId = "";

  before(async () => {
    server.register("job", {
      async run(this: CallContext, steps: number): Promise<{ answer: string; feed: number[] }> {
        serverConnectionId = this.connectionId;
        for (let i = 1; i <= steps; i++) this.remote.emit("job.progress", i, steps);
        const answer = await this.remote.call<string>("ui.confirm", [`ran ${steps} steps`]);
        const feed: number[] = [];
        for await (const n of this.remote.stream<number>("ui.feed", [3])) feed.push(n);
        return { answer, feed };
      },
      async askBadly(this: CallContext): Promise<unknown> {
        return this.remote.call("ui.confirm", [42]);
      },
      async askMissing(this: CallContext): Promise<unknown> {
        return this.remote.call("ui.nothing");
      },
      async askFailing(this: CallContext): Promise<unknown> {
        return this.remote.call("ui.fail");
      },
      emitUnencodable(this: CallContext): string {
        try {
          this.remote.emit("job.progress", () => 1);
          return "sent";
        } catch (error) {
          return (error as RpcError).code;
        }
      },
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address, { keepalive: false });
    client.register(
      "ui",
      {
        confirm(this: CallContext, message: string): string {
          return `ok: ${message} (from ${this.peer.address})`;
        },
        async *feed(n: number): AsyncGenerator<number> {
          for (let i = 0; i < n; i++) yield i * 10;
        },
        fail(): never {
          throw new RpcError("FAILED_PRECONDITION", "user said no");
        },
      },
      { validate: { confirm: typia.createAssert<[string]>() } },
    );
    client.on("job.progress", function (this: CallContext, step: number, of: number) {
      listenerContext = { connectionId: this.connectionId, method: this.method };
      progress.push([step, of]);
    });
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("a handler calls functions the client registered, reads its streams and sends it events", async () => {
    const result = await client.call<{ answer: string; feed: number[] }>("job.run", [3]);
    assert.deepEqual(result, { answer: "ok: ran 3 steps (from 127.0.0.1)", feed: [0, 10, 20] });
    // Events arrive in order, before the result that was sent after them.
    assert.deepEqual(progress, [
      [1, 3],
      [2, 3],
      [3, 3],
    ]);
    assert.deepEqual(listenerContext, { connectionId: serverConnectionId, method: "job.progress" });
  });

  it("callbacks get the same validation and error model as server methods", async () => {
    await rejectsWith(client.call("job.askBadly"), "INVALID_ARGUMENT", /ui\.confirm: args\[0\] should be string/);
    await rejectsWith(client.call("job.askMissing"), "NOT_FOUND", '"ui.nothing"');
    await rejectsWith(client.call("job.askFailing"), "FAILED_PRECONDITION", "user said no");
    assert.equal(await client.call("job.emitUnencodable"), "INVALID_ARGUMENT");
  });

  it("an event with no listener is dropped; a listener that throws does not break the connection", async () => {
    const failing = deferred<void>();
    const boom = function (): never {
      failing.resolve();
      throw new Error("listener failed");
    };
    client.on("job.progress", boom);
    try {
      await client.call("job.run", [1]);
      await within(failing.promise, 2000, "failing listener ran");
      assert.equal((await client.call<{ answer: string }>("job.run", [0])).answer, "ok: ran 0 steps (from 127.0.0.1)");
    } finally {
      client.off("job.progress", boom);
    }
  });

  it("the server can push events to every connected client at any time (server.clients)", async () => {
    const other = new Client(client.endpoint, { keepalive: false });
    const heard: string[] = [];
    const done = deferred<void>();
    other.on("news", (headline: string) => {
      heard.push(headline);
      done.resolve();
    });
    try {
      await other.connect();
      await waitFor(() => server.clients.length === 2, 2000, "two clients");
      for (const remote of server.clients) remote.emit("news", "rapt ships channels");
      await within(done.promise, 2000, "event");
      assert.deepEqual(heard, ["rapt ships channels"]);
      // A callback outside any handler works too.
      const answers = await Promise.all(server.clients.map((remote) => remote.call("ui.confirm", ["all?"]).catch((e: RpcError) => e.code)));
      assert.deepEqual(answers.sort(), ["NOT_FOUND", "ok: all? (from 127.0.0.1)"]);
    } finally {
      await other.close();
    }
  });

  it("a callback's this.peer is the endpoint the connection was made to, not the client's first", async () => {
    const path = socketPath("s2c");
    const unixServer = new Server({ keepalive: false });
    unixServer.register("ask", async function (this: CallContext) {
      return this.remote.call("where");
    });
    await unixServer.listen(`unix:${path}`);
    const down = new Server();
    const [downAddress] = (await down.listen("127.0.0.1:0")) as [string];
    await down.close();
    const pooled = new Client([downAddress, `unix:${path}`], { keepalive: false, reconnect: { initialDelay: 1000 } });
    pooled.register("where", function (this: CallContext) {
      return this.peer;
    });
    try {
      await waitFor(
        () => {
          void pooled.connect().catch(() => {});
          return pooled.connectionIds.length === 1;
        },
        3000,
        "unix connection",
      );
      assert.deepEqual(await pooled.call("ask"), { address: path, port: 0, family: "unix" });
    } finally {
      await pooled.close();
      await unixServer.close({ timeout: 500 });
    }
  });

  it("a client that registered nothing refuses callbacks with NOT_FOUND", async () => {
    const plain = new Client(client.endpoint, { keepalive: false });
    try {
      await rejectsWith(plain.call("job.run", [0]), "NOT_FOUND", '"ui.confirm"');
    } finally {
      await plain.close();
    }
  });

  it("a callback to a client that went away fails with UNAVAILABLE", async () => {
    const gone = deferred<RpcError>();
    server.register("job.later", async function (this: CallContext) {
      const remote = this.remote;
      setTimeout(() => {
        remote.call("ui.confirm", ["too late"]).then(
          () => gone.resolve(new RpcError("UNKNOWN", "resolved")),
          (error: RpcError) => gone.resolve(error),
        );
      }, 100);
      return "scheduled";
    });
    const brief = new Client(client.endpoint, { keepalive: false });
    assert.equal(await brief.call("job.later"), "scheduled");
    brief.destroy();
    await waitFor(() => server.connectionCount === 1, 2000, "connection gone");
    const error = await within(gone.promise, 2000, "callback outcome");
    assert.equal(error.code, "UNAVAILABLE");
  });
});
