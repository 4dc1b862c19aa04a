import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { FrameType } from "../../src/protocol/frame.js";
import { PROTOCOL_VERSION } from "../../src/protocol/wire-messages.js";
import { type CallContext, type CallMiddlewareContext, RpcError, Server, type ServerOptions } from "../../src/server/index.js";
import { RawPeer, callPayload, deferred, frame, helloFrame, rejectsWith } from "../integration/helpers.js";

interface User {
  name: string;
  admin: boolean;
}

const USERS: Record<string, User> = { alice: { name: "alice", admin: true }, bob: { name: "bob", admin: false } };

async function serve(options: ServerOptions): Promise<{ server: Server; address: string; port: number }> {
  const server = new Server({ keepalive: false, ...options });
  server.register("whoami", function (this: CallContext) {
    return (this.auth as User | undefined)?.name ?? null;
  });
  server.register("secret", () => "s3cret", { auth: true });
  server.register("admin.reset", () => "reset", { auth: (auth) => (auth as User).admin });
  server.register("admin.slowCheck", () => "ok", {
    auth: async (auth, ctx) => {
      await new Promise((resolve) => setImmediate(resolve));
      return (auth as User).admin && ctx.metadata.reason !== undefined;
    },
  });
  server.register("ops", { status: () => "green", deep: { restart: () => "restarted" } }, { auth: (auth) => (auth as User).admin });
  server.channel("feed", async (channel) => channel.close("bye"), { auth: true });
  const [address] = (await server.listen("127.0.0.1:0")) as [string];
  return { server, address, port: Number(address.slice(address.lastIndexOf(":") + 1)) };
}

/** Looks the handshake's `token` up; anonymous without one; refuses an unknown one. */
function byToken({ metadata }: { metadata: Record<string, unknown> }): User | undefined {
  const token = metadata.token;
  if (token === undefined) return undefined;
  const user = USERS[String(token)];
  if (user === undefined) throw new Error(`unknown token "${String(token)}"`);
  return user;
}

describe("authentication", () => {
  it("gives every call the connection's auth; auth: true refuses anonymous callers before running", async () => {
    const { server, address } = await serve({ authenticate: byToken });
    const bob = new Client(address, { keepalive: false, metadata: { token: "bob" } });
    const anonymous = new Client(address, { keepalive: false });
    try {
      assert.equal(await bob.call("whoami"), "bob");
      assert.equal(await bob.call("secret"), "s3cret");
      assert.equal(await anonymous.call("whoami"), null);
      await rejectsWith(anonymous.call("secret"), "UNAUTHENTICATED", 'method "secret" requires authentication');
      const feed = anonymous.channel("feed");
      const closed = await feed.closed;
      assert.equal(closed.error?.code, "UNAUTHENTICATED");
    } finally {
      await bob.close();
      await anonymous.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("permission checks: PERMISSION_DENIED when false, UNAUTHENTICATED without auth, also for services", async () => {
    const { server, address } = await serve({ authenticate: byToken });
    const alice = new Client(address, { keepalive: false, metadata: { token: "alice" } });
    const bob = new Client(address, { keepalive: false, metadata: { token: "bob" } });
    const anonymous = new Client(address, { keepalive: false });
    try {
      assert.equal(await alice.call("admin.reset"), "reset");
      await rejectsWith(bob.call("admin.reset"), "PERMISSION_DENIED", 'this caller may not call "admin.reset"');
      await rejectsWith(anonymous.call("admin.reset"), "UNAUTHENTICATED", 'method "admin.reset" requires authentication');
      assert.equal(await alice.call("admin.slowCheck", [], { metadata: { reason: "audit" } }), "ok");
      await rejectsWith(alice.call("admin.slowCheck"), "PERMISSION_DENIED");
      assert.equal(await alice.call("ops.status"), "green");
      assert.equal(await alice.call("ops.deep.restart"), "restarted");
      await rejectsWith(bob.call("ops.deep.restart"), "PERMISSION_DENIED");
      await rejectsWith(anonymous.call("ops.status"), "UNAUTHENTICATED");
    } finally {
      await alice.close();
      await bob.close();
      await anonymous.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("a sync authenticate that throws refuses the handshake (UNAUTHENTICATED, or its RpcError)", async () => {
    const { server, address } = await serve({
      authenticate: (credentials) => {
        if (credentials.metadata.token === "banned") throw new RpcError("PERMISSION_DENIED", "banned token");
        return byToken(credentials);
      },
    });
    const stranger = new Client(address, { keepalive: false, metadata: { token: "mallory" } });
    const banned = new Client(address, { keepalive: false, metadata: { token: "banned" } });
    try {
      await rejectsWith(stranger.call("whoami"), "UNAUTHENTICATED", 'authentication failed: unknown token "mallory"');
      await rejectsWith(banned.call("whoami"), "PERMISSION_DENIED", "banned token");
    } finally {
      await stranger.close();
      await banned.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("an async authenticate holds the handshake; its rejection refuses it", async () => {
    const gate = deferred();
    const { server, address } = await serve({
      authenticate: async (credentials) => {
        if (credentials.metadata.token === "alice") await gate.promise;
        else await new Promise((resolve) => setImmediate(resolve));
        return byToken(credentials);
      },
    });
    const alice = new Client(address, { keepalive: false, metadata: { token: "alice" } });
    const stranger = new Client(address, { keepalive: false, metadata: { token: "mallory" } });
    try {
      let settled = false;
      const pending = alice.call("secret").finally(() => {
        settled = true;
      });
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(settled, false, "the handshake (and so the call) waits for authenticate");
      gate.resolve();
      assert.equal(await pending, "s3cret");
      assert.equal(await alice.call("whoami"), "alice");
      await rejectsWith(stranger.call("whoami"), "UNAUTHENTICATED", "authentication failed");
    } finally {
      await alice.close();
      await stranger.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("decides before decoding: bad arguments to an auth method get UNAUTHENTICATED, not a decode error", async () => {
    const { server, port } = await serve({ authenticate: byToken });
    const anonymous = await RawPeer.open(port);
    const bob = await RawPeer.connect(port);
    try {
      const garbage = Buffer.concat([callPayload(["secret"], []).subarray(0, -1), Buffer.from([0xc1])]);
      anonymous.write(frame(FrameType.CALL, 0, 1, garbage));
      const refused = await anonymous.nextError();
      assert.deepEqual([refused.streamId, refused.code], [1, "UNAUTHENTICATED"]);
      anonymous.write(frame(FrameType.CALL, 0, 3, callPayload(["secret"], "not an array")));
      assert.equal((await anonymous.nextError()).code, "UNAUTHENTICATED");

      bob.write(helloFrame(PROTOCOL_VERSION, { token: "bob" }));
      assert.equal((await bob.next()).type, FrameType.WELCOME);
      bob.write(frame(FrameType.CALL, 0, 1, garbage));
      assert.equal((await bob.nextError()).code, "PROTOCOL_ERROR");
      bob.write(frame(FrameType.CALL, 0, 3, callPayload(["secret"], [])));
      assert.deepEqual(await bob.nextResult(), { streamId: 3, value: "s3cret" });
    } finally {
      anonymous.destroy();
      bob.destroy();
      await server.close({ timeout: 1000 });
    }
  });

  it("a HELLO resent while authenticating is a protocol error; an authenticate past handshakeTimeout closes", async () => {
    const never = deferred<User>();
    const { server, port } = await serve({ authenticate: () => never.promise, handshakeTimeout: 200 });
    const eager = await RawPeer.connect(port);
    const patient = await RawPeer.connect(port);
    try {
      eager.write(helloFrame());
      eager.write(helloFrame());
      const refused = await eager.answer();
      assert.equal(refused.admitted, false);
      assert.match(refused.admitted ? "" : `${refused.code} ${refused.message}`, /PROTOCOL_ERROR .*while the server authenticates/);
      patient.write(helloFrame());
      await patient.expectClosed(5000);
      never.resolve({ name: "late", admin: false });
    } finally {
      eager.destroy();
      patient.destroy();
      await server.close({ timeout: 1000 });
    }
  });

  it("call middleware sees ctx.auth; auth options are checked at registration", async () => {
    let seen: unknown;
    const { server, address } = await serve({
      authenticate: byToken,
      callMiddleware: [
        (ctx: CallMiddlewareContext, next) => {
          seen = ctx.auth;
          return next();
        },
      ],
    });
    const alice = new Client(address, { keepalive: false, metadata: { token: "alice" } });
    try {
      assert.equal(await alice.call("whoami"), "alice");
      assert.deepEqual(seen, USERS.alice);
      assert.throws(
        () => server.register("bad", () => 1, { auth: "yes" as unknown as boolean }),
        (error: unknown) => error instanceof RpcError && error.code === "INVALID_ARGUMENT" && /auth of "bad"/.test(error.message),
      );
      assert.throws(() => new Server({ authenticate: 1 as unknown as () => unknown }), /authenticate must be a function/);
    } finally {
      await alice.close();
      await server.close({ timeout: 1000 });
    }
  });

  it("without authenticate, auth: true methods are never callable", async () => {
    const { server, address } = await serve({});
    const client = new Client(address, { keepalive: false, metadata: { token: "alice" } });
    try {
      assert.equal(await client.call("whoami"), null);
      await rejectsWith(client.call("secret"), "UNAUTHENTICATED", "requires authentication");
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });
});
