import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type CallContext, type ConnectionInfo, RpcError, Server } from "../../src/server/index.js";
import { rejectsWith, waitFor } from "../integration/helpers.js";

interface ConnState {
  user: string;
  calls: number;
}

/** Per-connection state (tino's ConnState) from a server factory. */
describe("connection state", () => {
  it("is created once per connection from its handshake, seen by every call on it, and cleaned up on close", async () => {
    const created: string[] = [];
    const released: string[] = [];
    const server = new Server({
      keepalive: false,
      connectionState: (info: ConnectionInfo): ConnState => {
        created.push(info.connectionId);
        info.onClose(() => released.push(info.connectionId));
        return { user: String(info.metadata.user ?? "anonymous"), calls: 0 };
      },
    });
    server.register("touch", function (this: CallContext): string {
      const state = this.connectionState as ConnState;
      state.calls++;
      return `${state.user}:${state.calls}`;
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const ada = new Client(address, { keepalive: false, metadata: { user: "ada" } });
    const bob = new Client(address, { keepalive: false });
    try {
      assert.equal(await ada.call("touch"), "ada:1");
      assert.equal(await ada.call("touch"), "ada:2");
      assert.equal(await bob.call("touch"), "anonymous:1");
      assert.equal(await ada.call("touch"), "ada:3");
      assert.equal(created.length, 2);
      const adaConnection = ada.connectionId as string;
      await ada.close();
      await waitFor(() => released.includes(adaConnection), 2000, "cleanup hook");
      assert.deepEqual(released, [adaConnection]);
    } finally {
      await bob.close();
      await server.close({ timeout: 500 });
    }
  });

  it("a factory that throws refuses the connection with its error", async () => {
    const server = new Server({
      keepalive: false,
      connectionState: (info: ConnectionInfo) => {
        if (info.metadata.token !== "secret") throw new RpcError("UNAUTHENTICATED", "no valid token");
        return {};
      },
    });
    server.register("ping", () => "pong");
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const rejected = new Client(address, { keepalive: false, reconnect: { initialDelay: 1000 } });
    const accepted = new Client(address, { keepalive: false, metadata: { token: "secret" } });
    try {
      await rejectsWith(rejected.call("ping"), "UNAUTHENTICATED", "no valid token");
      assert.equal(await accepted.call("ping"), "pong");
    } finally {
      await rejected.close();
      await accepted.close();
      await server.close({ timeout: 500 });
    }
  });
});
