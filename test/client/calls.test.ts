import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type CallContext, RpcError, Server } from "../../src/server/index.js";
import { deferred, rejectsWith, sleep, within } from "../integration/helpers.js";

/** Deadlines and cancellation, seen from both ends of the call. */
describe("deadlines and cancellation", () => {
  const server = new Server();
  let address: string;
  let client: Client;
  /** The abort reason each "hang" call's handler observed, by tag. */
  const aborted = new Map<string, ReturnType<typeof deferred<unknown>>>();
  const started = new Map<string, ReturnType<typeof deferred<void>>>();
  let runs = 0;

  function track(tag: string): void {
    aborted.set(tag, deferred<unknown>());
    started.set(tag, deferred());
  }

  before(async () => {
    server.register("hang", function (this: CallContext, tag: string) {
      runs++;
      const signal = this.signal;
      return new Promise((_resolve, reject) => {
        signal.addEventListener("abort", () => {
          aborted.get(tag)?.resolve(signal.reason);
          reject(signal.reason);
        });
        started.get(tag)?.resolve();
      });
    });
    server.register("slow", async (ms: number) => {
      await sleep(ms);
      return "done";
    });
    server.register("fast", () => "fast");
    [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address);
    // Connected up front: the short deadlines below must not be spent on
    // connecting, which can take longer than they last on a loaded machine.
    await client.connect();
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("rejects with DEADLINE_EXCEEDED after the timeout, and the handler's signal aborts with DEADLINE_EXCEEDED", async () => {
    track("deadline");
    const t0 = performance.now();
    await rejectsWith(client.call("hang", ["deadline"], { timeout: 100 }), "DEADLINE_EXCEEDED", /hang: deadline of 100 ms exceeded/);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 90, `rejected after ${elapsed} ms, before the deadline`);
    const reason = await within(aborted.get("deadline")?.promise as Promise<unknown>, 2000, "handler signal");
    assert.ok(reason instanceof RpcError);
    assert.equal(reason.code, "DEADLINE_EXCEEDED");
    // The connection is still fine.
    assert.equal(await client.call("fast", []), "fast");
  });

  it("a timeout of 0 is DEADLINE_EXCEEDED without running the handler", async () => {
    await client.connect();
    const before = runs;
    await rejectsWith(client.call("hang", ["zero"], { timeout: 0 }), "DEADLINE_EXCEEDED");
    // Let the CALL reach the server, which refuses it on arrival.
    assert.equal(await client.call("fast", []), "fast");
    assert.equal(runs, before);
  });

  it("uses the client's default timeout, and a per-call timeout overrides it", async () => {
    const timed = new Client(address, { timeout: 80 });
    try {
      await timed.connect({ timeout: 10_000 });
      track("default");
      await rejectsWith(timed.call("hang", ["default"]), "DEADLINE_EXCEEDED", /80 ms/);
      const reason = await within(aborted.get("default")?.promise as Promise<unknown>, 2000, "handler signal");
      assert.equal((reason as RpcError).code, "DEADLINE_EXCEEDED");
      assert.equal(await timed.call("slow", [150], { timeout: 2000 }), "done");
    } finally {
      await timed.close();
    }
  });

  it("aborting a signal mid-call rejects with CANCELLED at once and aborts the handler (CANCEL reached the server)", async () => {
    track("cancel");
    const controller = new AbortController();
    const call = client.call("hang", ["cancel"], { signal: controller.signal });
    await within(started.get("cancel")?.promise as Promise<void>, 2000, "handler start");
    controller.abort();
    await within(rejectsWith(call, "CANCELLED"), 500, "cancelled call");
    const reason = await within(aborted.get("cancel")?.promise as Promise<unknown>, 2000, "handler signal");
    assert.ok(reason instanceof RpcError);
    assert.equal(reason.code, "CANCELLED");
    assert.equal(await client.call("fast", []), "fast");
  });

  it("keeps a CANCELLED abort reason given by the caller", async () => {
    track("reason");
    const controller = new AbortController();
    const call = client.call("hang", ["reason"], { signal: controller.signal });
    await within(started.get("reason")?.promise as Promise<void>, 2000, "handler start");
    controller.abort(new Error("user left"));
    const error = await rejectsWith(call, "CANCELLED");
    assert.equal((error.cause as Error).message, "user left");
  });

  it("a pre-aborted signal rejects with CANCELLED without sending anything", async () => {
    const before = runs;
    await rejectsWith(client.call("hang", ["pre"], { signal: AbortSignal.abort() }), "CANCELLED", /before it started/);
    assert.equal(await client.call("fast", []), "fast");
    assert.equal(runs, before);
  });

  it("refuses bad arguments to call() itself", async () => {
    await rejectsWith(client.call("", []), "INVALID_ARGUMENT");
    await rejectsWith(client.call("fast", "nope" as unknown as unknown[]), "INVALID_ARGUMENT");
    await rejectsWith(client.call("fast", [], { timeout: -1 }), "INVALID_ARGUMENT");
    await rejectsWith(client.call("fast", [() => 1]), "INVALID_ARGUMENT");
    await rejectsWith(client.call("fast", [], { metadata: { n: 1 as unknown as string } }), "INVALID_ARGUMENT", /metadata/);
    assert.equal(await client.call("fast", []), "fast");
  });
});
