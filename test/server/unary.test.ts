import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import typia from "typia";
import { Client } from "../../src/client/index.js";
import type { StandardSchemaV1 } from "../../src/server/argument-validator.js";
import { type CallContext, ErrorCode, RpcError, Server } from "../../src/server/index.js";
import { deferred, rejectsWith, socketPath, within } from "../integration/helpers.js";

describe("unary calls over loopback", () => {
  const server = new Server();
  let client: Client;
  let address: string;
  const seen: { ctx?: Record<string, unknown> } = {};

  before(async () => {
    server.register("add", (a: number, b: number) => a + b);
    server.register("addAsync", async (a: number, b: number) => {
      await new Promise((resolve) => setImmediate(resolve));
      return a + b;
    });
    server.register("calc", {
      add: (a: number, b: number) => a + b,
      mul: (a: number, b: number) => a * b,
      deep: { nested: { neg: (a: number) => -a } },
    });
    server.register("echo", (value: unknown) => value);
    server.register("context", function (this: CallContext) {
      seen.ctx = {
        method: this.method,
        peer: this.peer,
        connectionId: this.connectionId,
        metadata: this.metadata,
        connectionMetadata: this.connectionMetadata,
        deadline: this.deadline,
        streamId: this.streamId,
        aborted: this.signal.aborted,
      };
      return "ok";
    });
    [address] = await server.listen("127.0.0.1:0");
    client = new Client(address as string, { metadata: { token: "secret", bin: new Uint8Array([1, 2, 3]) } });
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("runs sync and async handlers", async () => {
    assert.equal(await client.call("add", [2, 3]), 5);
    assert.equal(await client.call("addAsync", [4, 5]), 9);
  });

  it("serves a service object under a group, with nested groups", async () => {
    assert.deepEqual(
      server.methods.filter((m) => m.startsWith("calc.")),
      ["calc.add", "calc.deep.nested.neg", "calc.mul"],
    );
    assert.equal(await client.call("calc.add", [1, 2]), 3);
    assert.equal(await client.call("calc.mul", [3, 4]), 12);
    assert.equal(await client.call("calc.deep.nested.neg", [7]), -7);
  });

  it("resolves 2,000 concurrent calls on one connection, each with its own result", async () => {
    await client.connect();
    const id = client.connectionId;
    const calls = Array.from({ length: 2000 }, (_, i) => client.call(i % 2 === 0 ? "add" : "addAsync", [i, 1]));
    const results = await within(Promise.all(calls), 10_000, "2,000 calls");
    for (let i = 0; i < results.length; i++) assert.equal(results[i], i + 1);
    assert.equal(client.connectionId, id, "all calls used the one connection");
  });

  it("round-trips Date, BigInt, binary, nested and special values", async () => {
    const date = new Date("2024-02-29T12:34:56.789Z");
    const big = 2n ** 100n + 1n;
    const value = {
      date,
      big,
      neg: -(2n ** 70n),
      bin: new Uint8Array([0, 255, 7]),
      list: [1, "two", null, true, 1.5],
      nested: { deeper: { s: "é✓" } },
    };
    const back = (await client.call("echo", [value])) as typeof value;
    assert.ok(back.date instanceof Date);
    assert.equal(back.date.getTime(), date.getTime());
    assert.equal(typeof back.big, "bigint");
    assert.equal(back.big, big);
    assert.equal(back.neg, -(2n ** 70n));
    assert.deepEqual([...back.bin], [0, 255, 7]);
    assert.deepEqual(back.list, value.list);
    assert.deepEqual(back.nested, value.nested);
  });

  it("gives the handler its CallContext: metadata, connection metadata, peer, connection id, deadline", async () => {
    const before = Date.now();
    assert.equal(await client.call("context", [], { metadata: { trace: "abc", raw: new Uint8Array([9]) }, timeout: 5000 }), "ok");
    const after = Date.now();
    const ctx = seen.ctx as Record<string, unknown>;
    assert.equal(ctx.method, "context");
    assert.equal((ctx.metadata as Record<string, unknown>).trace, "abc");
    assert.deepEqual([...((ctx.metadata as Record<string, Uint8Array>).raw as Uint8Array)], [9]);
    assert.equal((ctx.connectionMetadata as Record<string, unknown>).token, "secret");
    assert.deepEqual([...((ctx.connectionMetadata as Record<string, Uint8Array>).bin as Uint8Array)], [1, 2, 3]);
    const peer = ctx.peer as { address: string; port: number; family: string };
    assert.equal(peer.address, "127.0.0.1");
    assert.equal(peer.family, "IPv4");
    assert.ok(peer.port > 0);
    assert.equal(typeof ctx.connectionId, "string");
    assert.ok((ctx.connectionId as string).length > 0);
    assert.equal(ctx.connectionId, client.connectionId);
    const deadline = ctx.deadline as number;
    assert.ok(deadline >= before + 5000 - 50 && deadline <= after + 5000 + 50, `deadline ${deadline} not ~5 s after the call`);
    assert.equal(typeof ctx.streamId, "number");
    assert.equal((ctx.streamId as number) % 2, 1, "client streams are odd");
    assert.equal(ctx.aborted, false);
  });

  it("has no deadline and empty metadata when none are given", async () => {
    await client.call("context", []);
    const ctx = seen.ctx as Record<string, unknown>;
    assert.equal(ctx.deadline, undefined);
    assert.deepEqual(ctx.metadata, {});
  });
});

describe("registration", () => {
  it("refuses a duplicate name with ALREADY_EXISTS at register time", () => {
    const server = new Server();
    server.register("a", () => 1);
    assert.throws(
      () => server.register("a", () => 2),
      (e: unknown) => e instanceof RpcError && e.code === "ALREADY_EXISTS" && /"a"/.test(e.message),
    );
    server.register("g", { x: () => 1 });
    assert.throws(
      () => server.register("g.x", () => 2),
      (e: unknown) => e instanceof RpcError && e.code === "ALREADY_EXISTS",
    );
  });

  it("refuses invalid names with INVALID_ARGUMENT", () => {
    const server = new Server();
    for (const bad of ["", "1abc", "a..b", "a.", ".a", "has space", "dash-ed", "x".repeat(257)]) {
      assert.throws(
        () => server.register(bad, () => 1),
        (e: unknown) => e instanceof RpcError && e.code === "INVALID_ARGUMENT",
        `name ${JSON.stringify(bad)} should be refused`,
      );
    }
    assert.deepEqual(server.methods, []);
  });

  it("refuses a class instance as a service", () => {
    class Calc {
      base = 1;
      add(a: number) {
        return this.base + a;
      }
    }
    const server = new Server();
    assert.throws(
      () => server.register("calc", new Calc()),
      (e: unknown) => e instanceof RpcError && e.code === "INVALID_ARGUMENT" && /plain object/.test(e.message),
    );
    assert.deepEqual(server.methods, []);
  });

  it("leaves the registry unchanged when a service has a duplicate", () => {
    const server = new Server();
    server.register("svc.b", () => 0);
    assert.throws(
      () => server.register("svc", { a: () => 1, b: () => 2, c: () => 3 }),
      (e: unknown) => e instanceof RpcError && e.code === "ALREADY_EXISTS",
    );
    assert.deepEqual(server.methods, ["svc.b"]);
  });

  it("leaves the registry unchanged when a service has an invalid name or validator", () => {
    const server = new Server();
    assert.throws(
      () => server.register("svc", { a: () => 1, "bad name": () => 2 }),
      (e: unknown) => e instanceof RpcError && e.code === "INVALID_ARGUMENT",
    );
    assert.deepEqual(server.methods, []);
    assert.throws(
      () => server.register("svc", { a: () => 1, b: () => 2 }, { validate: { b: 42 as unknown as () => unknown } }),
      (e: unknown) => e instanceof Error,
    );
    assert.deepEqual(server.methods, []);
    // "a.b" as a key and a.b as a nested method name the same method.
    assert.throws(
      () => server.register("svc", { first: () => 0, "a.b": () => 1, a: { b: () => 2 } }),
      (e: unknown) => e instanceof RpcError && e.code === "ALREADY_EXISTS" && e.message.includes('"svc.a.b"'),
    );
    assert.deepEqual(server.methods, []);
  });

  it("registers a sub-object used twice under both names, and survives a cycle", () => {
    const api: Record<string, unknown> = { ping: () => "pong" };
    api.self = api;
    const server = new Server();
    server.register("svc", { v1: api, v2: api });
    assert.deepEqual(server.methods, ["svc.v1.ping", "svc.v2.ping"]);
  });
});

describe("errors", () => {
  const server = new Server();
  const exposing = new Server({ exposeErrors: true });
  let client: Client;
  let exposingClient: Client;

  before(async () => {
    for (const s of [server, exposing]) {
      s.register("echo", (x: unknown) => x);
      s.register("rpcError", () => {
        throw new RpcError(ErrorCode.FAILED_PRECONDITION, "not ready yet", { retryAfter: 5, nested: [1, "x"] });
      });
      s.register("plainError", () => {
        throw new Error("database password is hunter2");
      });
      s.register("asyncPlainError", async () => {
        await new Promise((resolve) => setImmediate(resolve));
        throw new TypeError("cannot read properties of undefined");
      });
      s.register("throwString", () => {
        throw "just a string";
      });
      s.register("unencodable", () => ({ fn: () => 1 }));
      s.register("unencodableData", () => {
        throw new RpcError(ErrorCode.FAILED_PRECONDITION, "with bad data", { fn: () => 1 });
      });
      s.register("huge", () => "h".repeat(8 * 1024));
    }
    const [a] = await server.listen("127.0.0.1:0");
    const [b] = await exposing.listen("127.0.0.1:0");
    client = new Client(a as string);
    exposingClient = new Client(b as string);
  });

  after(async () => {
    await Promise.all([client.close(), exposingClient.close()]);
    await Promise.all([server.close({ timeout: 1000 }), exposing.close({ timeout: 1000 })]);
  });

  it("answers an unknown method with NOT_FOUND naming it", async () => {
    await rejectsWith(client.call("no.such.method", []), "NOT_FOUND", '"no.such.method"');
  });

  it("passes a thrown RpcError's code, message and data through", async () => {
    const error = await rejectsWith(client.call("rpcError", []), "FAILED_PRECONDITION", /^not ready yet$/);
    assert.deepEqual(error.data, { retryAfter: 5, nested: [1, "x"] });
  });

  it("hides a plain Error as INTERNAL 'internal error' by default", async () => {
    for (const method of ["plainError", "asyncPlainError", "throwString"]) {
      const error = await rejectsWith(client.call(method, []), "INTERNAL", /^internal error$/);
      assert.equal(error.data, undefined);
    }
  });

  it("answers a result that cannot be encoded with INTERNAL", async () => {
    await rejectsWith(client.call("unencodable", []), "INTERNAL", /unencodable: result cannot be sent/);
    assert.equal(await client.call("echo", [1]), 1);
  });

  it("sends code and message of an RpcError whose data cannot be encoded", async () => {
    const error = await rejectsWith(client.call("unencodableData", []), "FAILED_PRECONDITION", /^with bad data$/);
    assert.equal(error.data, undefined);
  });

  it("refuses a result over the client's maxMessageSize with RESOURCE_EXHAUSTED, keeping the connection", async () => {
    const small = new Client(client.endpoint, { limits: { maxMessageSize: 4096 } });
    try {
      await rejectsWith(small.call("huge", []), "RESOURCE_EXHAUSTED", /maximum message size of 4096 bytes/);
      const id = small.connectionId;
      assert.equal(await small.call("echo", ["fits"]), "fits");
      assert.equal(small.connectionId, id);
    } finally {
      await small.close();
    }
  });

  it("sends a plain Error's message, never its stack, with exposeErrors", async () => {
    const error = await rejectsWith(exposingClient.call("plainError", []), "INTERNAL", /^database password is hunter2$/);
    assert.equal(error.data, undefined);
    assert.doesNotMatch(error.message, /\n\s*at /);
    const asyncError = await rejectsWith(exposingClient.call("asyncPlainError", []), "INTERNAL", "cannot read properties of undefined");
    assert.doesNotMatch(asyncError.message, /\n\s*at |\.js:\d+/);
    assert.equal(asyncError.data, undefined);
    await rejectsWith(exposingClient.call("throwString", []), "INTERNAL", /^just a string$/);
  });
});

describe("argument validation", () => {
  const server = new Server();
  let client: Client;
  const runs = { assert: 0, validate: 0, standard: 0, asyncStandard: 0, is: 0 };

  const pairSchema: StandardSchemaV1<[number, number]> = {
    "~standard": {
      version: 1,
      vendor: "test",
      validate(value: unknown) {
        if (!Array.isArray(value) || value.length !== 2) return { issues: [{ message: "expected two arguments", path: [] }] };
        for (let i = 0; i < 2; i++) {
          if (typeof value[i] !== "number") return { issues: [{ message: `expected number, got ${typeof value[i]}`, path: [i] }] };
        }
        return { value: value as [number, number] };
      },
    },
  };
  const asyncSchema: StandardSchemaV1<[number, number]> = {
    "~standard": {
      version: 1,
      vendor: "test",
      validate: async (value: unknown) => {
        await new Promise((resolve) => setImmediate(resolve));
        return pairSchema["~standard"].validate(value);
      },
    },
  };

  before(async () => {
    server.register(
      "assert",
      (a: number, b: number) => {
        runs.assert++;
        return a + b;
      },
      { validate: typia.createAssert<[number, number]>() },
    );
    server.register(
      "validate",
      (a: number, b: number) => {
        runs.validate++;
        return a + b;
      },
      { validate: typia.createValidate<[number, number]>() },
    );
    server.register(
      "is",
      (a: number, b: number) => {
        runs.is++;
        return a + b;
      },
      { validate: typia.createIs<[number, number]>() },
    );
    server.register(
      "standard",
      (a: number, b: number) => {
        runs.standard++;
        return a + b;
      },
      { validate: pairSchema },
    );
    server.register(
      "asyncStandard",
      (a: number, b: number) => {
        runs.asyncStandard++;
        return a + b;
      },
      { validate: asyncSchema },
    );
    const [address] = await server.listen("127.0.0.1:0");
    client = new Client(address as string);
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("typia createAssert: bad args are INVALID_ARGUMENT naming args[1] and the expected type; the handler does not run", async () => {
    assert.equal(await client.call("assert", [1, 2]), 3);
    const error = await rejectsWith(client.call("assert", [1, "2"]), "INVALID_ARGUMENT", /args\[1\].*number/);
    assert.match(error.message, /^assert: /);
    // A wrong arity is reported by typia at the tuple itself.
    await rejectsWith(client.call("assert", [1]), "INVALID_ARGUMENT", /args should be \[number, number\]/);
    assert.equal(runs.assert, 1);
  });

  it("typia createValidate: same", async () => {
    assert.equal(await client.call("validate", [1, 2]), 3);
    await rejectsWith(client.call("validate", [1, { x: 1 }]), "INVALID_ARGUMENT", /args\[1\].*number/);
    assert.equal(runs.validate, 1);
  });

  it("typia createIs: refused without a path", async () => {
    assert.equal(await client.call("is", [1, 2]), 3);
    await rejectsWith(client.call("is", ["a", 2]), "INVALID_ARGUMENT", /^is: /);
    assert.equal(runs.is, 1);
  });

  it("a Standard Schema object, sync and async", async () => {
    assert.equal(await client.call("standard", [1, 2]), 3);
    await rejectsWith(client.call("standard", [1, "x"]), "INVALID_ARGUMENT", /args\[1\].*expected number/);
    assert.equal(runs.standard, 1);
    assert.equal(await client.call("asyncStandard", [5, 6]), 11);
    await rejectsWith(client.call("asyncStandard", [true, 2]), "INVALID_ARGUMENT", /args\[0\].*expected number/);
    assert.equal(runs.asyncStandard, 1);
  });
});

describe("private methods", () => {
  const path = socketPath("private");
  const local = new Server();
  const strict = new Server({ trustedPeer: (p) => p.address === "127.0.0.2" });
  let tcpClient: Client;
  let unixClient: Client;
  let strictClient: Client;
  const peers: Array<{ address: string; family: string }> = [];

  before(async () => {
    for (const s of [local, strict]) {
      s.register(
        "secret",
        function (this: CallContext) {
          peers.push({ address: this.peer.address, family: this.peer.family });
          return 42;
        },
        { private: true },
      );
      s.register("admin", { reset: () => "reset" }, { private: true });
    }
    const [tcp, unix] = await local.listen("127.0.0.1:0", `unix:${path}`);
    const [strictAddress] = await strict.listen("127.0.0.1:0");
    tcpClient = new Client(tcp as string);
    unixClient = new Client(unix as string);
    strictClient = new Client(strictAddress as string);
  });

  after(async () => {
    await Promise.all([tcpClient.close(), unixClient.close(), strictClient.close()]);
    await Promise.all([local.close({ timeout: 1000 }), strict.close({ timeout: 1000 })]);
  });

  it("are callable from 127.0.0.1 and from a Unix socket", async () => {
    peers.length = 0;
    assert.equal(await tcpClient.call("secret", []), 42);
    assert.equal(await unixClient.call("secret", []), 42);
    assert.equal(await unixClient.call("admin.reset", []), "reset");
    assert.deepEqual(peers, [
      { address: "127.0.0.1", family: "IPv4" },
      { address: path, family: "unix" },
    ]);
  });

  it("are PERMISSION_DENIED to a peer the trustedPeer option does not trust, without running", async () => {
    peers.length = 0;
    await rejectsWith(strictClient.call("secret", []), "PERMISSION_DENIED", '"secret"');
    await rejectsWith(strictClient.call("admin.reset", []), "PERMISSION_DENIED", '"admin.reset"');
    assert.deepEqual(peers, []);
  });
});

describe("handler observes its call", () => {
  it("signal is not aborted for a call that completes, and the handler sees this as its context", async () => {
    const server = new Server();
    const observed = deferred<boolean>();
    server.register("check", function (this: CallContext, x: number) {
      observed.resolve(this.signal.aborted);
      return x * 2;
    });
    const [address] = await server.listen("127.0.0.1:0");
    const client = new Client(address as string);
    try {
      assert.equal(await client.call("check", [21]), 42);
      assert.equal(await observed.promise, false);
    } finally {
      await client.close();
      await server.close({ timeout: 1000 });
    }
  });
});
