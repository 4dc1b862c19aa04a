import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type PeerInfo, Server } from "../../src/server/index.js";
import { waitFor } from "../integration/helpers.js";

/**
 * A server connection makes its PeerInfo when something first asks for it
 * (an idle connection never does): it must be the same as one made at
 * accept, also when first asked after the client has gone.
 */
describe("peer info made on first use", () => {
  it("is complete when first read after the socket closed, and the same object on every read", async () => {
    const closed: Array<{ connectionId: string; peer: PeerInfo }> = [];
    const onClose = (message: unknown): void => {
      closed.push(message as { connectionId: string; peer: PeerInfo });
    };
    const server = new Server();
    server.register("whoami", function (this: { peer: PeerInfo }) {
      return [this.peer.address, this.peer.port, this.peer.family];
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    // An idle client: nothing reads its peer while it is connected.
    const idle = new Client(address);
    const asking = new Client(address);
    diagnostics.subscribe("rapt:server:connection-close", onClose);
    try {
      await idle.connect();
      const idleId = idle.connectionId;
      idle.destroy();
      await waitFor(() => closed.some((c) => c.connectionId === idleId), 2000, "the idle connection closing");
      const peer = closed.find((c) => c.connectionId === idleId)?.peer;
      assert.equal(peer?.address, "127.0.0.1");
      assert.equal(peer?.family, "IPv4");
      assert.ok(typeof peer?.port === "number" && peer.port > 0, `port ${peer?.port}`);
      const [peerAddress, port, family] = (await asking.call("whoami", [])) as [string, number, string];
      assert.deepEqual([peerAddress, family], ["127.0.0.1", "IPv4"]);
      assert.ok(port > 0);
      const askingId = asking.connectionId;
      await asking.close();
      await waitFor(() => closed.some((c) => c.connectionId === askingId), 2000, "the other connection closing");
      assert.equal(closed.find((c) => c.connectionId === askingId)?.peer.port, port, "the PeerInfo the call saw");
    } finally {
      diagnostics.unsubscribe("rapt:server:connection-close", onClose);
      idle.destroy();
      asking.destroy();
      await server.close({ timeout: 1000 });
    }
  });
});
