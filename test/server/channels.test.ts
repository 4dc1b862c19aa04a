import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type Channel, type ChannelClose, Client } from "../../src/client/index.js";
import { type CallContext, RpcError, Server } from "../../src/server/index.js";
import { deferred, rejectsWith, within } from "../integration/helpers.js";

/** Duplex channels over loopback. */
describe("channels", () => {
  const WINDOW = 8;
  const server = new Server({ keepalive: false, limits: { streamWindow: WINDOW } });
  let client: Client;
  let address: string;
  let serverClosed = deferred<ChannelClose>();
  let serverOpened = deferred<void>();
  let serverSent = 0;

  before(async () => {
    server.channel("echo", async function (channel: Channel<string, unknown>) {
      for await (const message of channel) await channel.send(`echo:${String(message)}`);
      channel.close("done echoing");
    });
    server.channel("greeter", async function (this: CallContext, channel: Channel<string, string>) {
      await channel.send(`hello ${this.peer.address}, ${String(this.metadata.user)}`);
      serverClosed.resolve(await channel.closed);
    });
    server.channel("firehose", async function (channel: Channel<number, unknown>) {
      serverSent = 0;
      for (let i = 0; i < 10_000; i++) {
        await channel.send(i);
        serverSent++;
      }
    });
    server.channel("thrower", async function (channel: Channel<string, string>) {
      await channel.send("about to fail");
      throw new RpcError("FAILED_PRECONDITION", "handler gave up", { why: "test" });
    });
    server.channel("listener", async function (channel: Channel<string, string>) {
      serverOpened.resolve();
      serverClosed.resolve(await channel.closed);
    });
    server.register("add", (a: number, b: number) => a + b);
    [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address, { keepalive: false, limits: { streamWindow: WINDOW } });
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("both ends send and read in order; half-close; close with a reason reaches the other end", async () => {
    const channel = client.channel<string, string>("echo");
    for (const word of ["a", "b", "c"]) await channel.send(word);
    channel.end();
    const got: string[] = [];
    for await (const message of channel) got.push(message);
    assert.deepEqual(got, ["echo:a", "echo:b", "echo:c"]);
    assert.deepEqual(await channel.closed, { reason: "done echoing", by: "remote" });
    await rejectsWith(channel.send("late"), "FAILED_PRECONDITION", /closed by the other end: done echoing/);
  });

  it("leaving a for-await loop stops reading, not the channel", async () => {
    const channel = client.channel<string, string>("echo");
    for (const word of ["1", "2", "3"]) await channel.send(word);
    channel.end();
    for await (const message of channel) {
      assert.equal(message, "echo:1");
      break;
    }
    const rest: string[] = [];
    for await (const message of channel) rest.push(message);
    assert.deepEqual(rest, ["echo:2", "echo:3"]);
    assert.deepEqual(await channel.closed, { reason: "done echoing", by: "remote" });
  });

  it("the client closes with a reason; the server's closed resolves with it; metadata and context reach the handler", async () => {
    serverClosed = deferred<ChannelClose>();
    const channel = client.channel<string, string>("greeter", { metadata: { user: "ada" } });
    const iterator = channel[Symbol.asyncIterator]();
    assert.deepEqual(await iterator.next(), { done: false, value: "hello 127.0.0.1, ada" });
    channel.close("see you");
    assert.deepEqual(await channel.closed, { reason: "see you", by: "local" });
    assert.deepEqual(await within(serverClosed.promise, 2000, "server close"), { reason: "see you", by: "remote" });
    await rejectsWith(channel.send("x"), "FAILED_PRECONDITION", /closed by the local end: see you/);
  });

  it("a reader that does not read makes the sender's send() wait at the window", async () => {
    const channel = client.channel<unknown, number>("firehose");
    await sleep(200);
    const stalledAt = serverSent;
    assert.ok(stalledAt <= WINDOW, `server sent ${stalledAt} messages into a window of ${WINDOW}`);
    await sleep(200);
    assert.equal(serverSent, stalledAt, "the sender went on while nobody read");
    let count = 0;
    for await (const n of channel) {
      assert.equal(n, count);
      count++;
    }
    assert.equal(count, 10_000);
    assert.deepEqual(await channel.closed, { reason: "", by: "remote" });
  });

  it("a slow channel does not hold up calls on the same connection", async () => {
    const channel = client.channel<unknown, number>("firehose");
    await sleep(50);
    // The firehose is stalled on credit; unary calls still answer promptly.
    const sums = await within(
      Promise.all(Array.from({ length: 100 }, (_, i) => client.call("add", [i, 1]))),
      2000,
      "calls beside a stalled channel",
    );
    assert.equal(sums.length, 100);
    channel.close();
  });

  it("1,000 concurrent channels on one connection each echo 100 messages in order", async () => {
    const connectionId = client.connectionId;
    const runs = Array.from({ length: 1000 }, async (_, k) => {
      const channel = client.channel<number, string>("echo");
      const got: string[] = [];
      const reading = (async () => {
        for await (const message of channel) got.push(message);
      })();
      for (let i = 0; i < 100; i++) await channel.send(i);
      channel.end();
      await reading;
      assert.equal(got.length, 100, `channel ${k} got ${got.length}`);
      got.forEach((message, i) => assert.equal(message, `echo:${i}`));
    });
    await within(Promise.all(runs), 30_000, "1000 channels");
    assert.equal(client.connectionId, connectionId);
  });

  it("a handler that throws closes the channel with its error at the client, after its messages", async () => {
    const channel = client.channel<string, string>("thrower");
    const got: string[] = [];
    const reading = (async () => {
      for await (const message of channel) got.push(message);
    })();
    const error = await rejectsWith(reading, "FAILED_PRECONDITION", "handler gave up");
    assert.deepEqual(error.data, { why: "test" });
    assert.deepEqual(got, ["about to fail"]);
    const closed = await channel.closed;
    assert.equal(closed.by, "remote");
    assert.equal(closed.error?.code, "FAILED_PRECONDITION");
  });

  it("typed openers through client.channels() open channels typed from the client's side", async () => {
    // The handlers' types, as a client would import them from the server's module.
    type Handlers = {
      echo: (channel: Channel<string, number>) => Promise<void>;
      nested: { greeter: (channel: Channel<string, string>) => Promise<void> };
    };
    const open = client.channels<Handlers>();
    const channel = open.echo();
    // The server's Channel<string, number> is the client's Channel<number, string>.
    const typed: Channel<number, string> = channel;
    // @ts-expect-error the client sends numbers here, not strings
    void typed.send("wrong").catch(() => {});
    await typed.send(7);
    channel.end();
    const got: string[] = [];
    for await (const message of typed) got.push(message);
    assert.ok(got.includes("echo:7"), JSON.stringify(got));
    // Nested groups name nested channels; this one does not exist on the server.
    const missing = await open.nested.greeter().closed;
    assert.match(missing.reason, /"nested\.greeter" is not registered/);
  });

  it("unknown channels, channels called as methods and methods opened as channels get clear errors", async () => {
    const unknown = await client.channel("nope").closed;
    assert.equal(unknown.error?.code, "NOT_FOUND");
    assert.match(unknown.reason, /"nope" is not registered/);
    await rejectsWith(client.call("echo", []), "FAILED_PRECONDITION", /"echo" is a channel: open it with client\.channel\(\)/);
    const method = await client.channel("add").closed;
    assert.equal(method.error?.code, "FAILED_PRECONDITION");
    assert.match(method.reason, /"add" is a method, not a channel/);
  });

  it("when the connection drops, both ends' closed resolve and pending sends reject", async () => {
    serverClosed = deferred<ChannelClose>();
    serverOpened = deferred<void>();
    const other = new Client(address, { keepalive: false });
    try {
      const channel = other.channel<string, string>("listener");
      await channel.send("hi");
      await within(serverOpened.promise, 2000, "server open");
      other.destroy();
      const closed = await within(channel.closed, 2000, "client close");
      assert.equal(closed.error?.code, "CANCELLED");
      const seen = await within(serverClosed.promise, 2000, "server close");
      assert.equal(seen.by, "remote");
      assert.equal(seen.error?.code, "UNAVAILABLE");
      await rejectsWith(channel.send("x"), "CANCELLED");
    } finally {
      other.destroy();
    }
  });

  it("an AbortSignal closes the channel", async () => {
    serverClosed = deferred<ChannelClose>();
    serverOpened = deferred<void>();
    const controller = new AbortController();
    const channel = client.channel<string, string>("listener", { signal: controller.signal });
    await channel.send("hi");
    await within(serverOpened.promise, 2000, "server open");
    controller.abort();
    assert.deepEqual(await channel.closed, { reason: "aborted", by: "local" });
    assert.deepEqual(await within(serverClosed.promise, 2000, "server close"), { reason: "aborted", by: "remote" });
  });
});
