import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Client } from "../../src/client/index.js";
import { type CallContext, Server } from "../../src/server/index.js";
import { deferred, within } from "./helpers.js";

const SIZE = 50 * 1024 * 1024;

/** 50 MB with a pattern that catches reordered or dropped fragments. */
function pattern(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i += 4) out.writeUInt32LE(i >>> 2, i);
  return out;
}

function sha(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

describe("large transfers share the connection", () => {
  const server = new Server();
  let client: Client;
  const expected = pattern(SIZE);
  const expectedSha = sha(expected);
  let produced = deferred();

  before(async () => {
    server.register("big", async () => {
      produced.resolve();
      return expected;
    });
    server.register("bigString", async () => {
      produced.resolve();
      return "s".repeat(SIZE);
    });
    server.register("small", function (this: CallContext, i: number) {
      return i;
    });
    server.register("echoBytes", (data: Uint8Array) => sha(data));
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    // The default string limit (16 MiB) is below this test's 50 MB string.
    client = new Client(address);
    await client.connect();
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 2000 });
  });

  it("50 small calls made while a 50 MB result is in flight all complete before it; the result is byte-exact", async () => {
    produced = deferred();
    const order: string[] = [];
    const id = client.connectionId;
    const big = client.call<Uint8Array>("big", []).then((value) => {
      order.push("big");
      return value;
    });
    await within(produced.promise, 5000, "handler producing the result");
    const smalls = Array.from({ length: 50 }, (_, i) =>
      client.call<number>("small", [i]).then((value) => {
        order.push(`small${i}`);
        return value;
      }),
    );
    const [result, ...values] = await within(Promise.all([big, ...smalls]), 30_000, "all calls");
    assert.deepEqual(
      values,
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.equal(order.length, 51);
    assert.equal(order[50], "big", `order: ${order.join(",")}`);
    assert.ok(result instanceof Uint8Array);
    assert.equal(result.byteLength, SIZE);
    assert.equal(sha(result), expectedSha);
    assert.equal(client.connectionId, id, "one connection throughout");
  });

  it("a 50 MB string result arrives intact alongside small calls", async () => {
    produced = deferred();
    const order: string[] = [];
    const big = client.call<string>("bigString", []).then((value) => {
      order.push("big");
      return value;
    });
    await within(produced.promise, 5000, "handler producing the result");
    const smalls = Array.from({ length: 10 }, (_, i) => client.call("small", [i]).then(() => order.push(`small${i}`)));
    const [text] = await within(Promise.all([big, ...smalls]), 30_000, "all calls");
    assert.equal(order.at(-1), "big");
    assert.equal(text.length, SIZE);
    assert.equal(text, "s".repeat(SIZE));
  });

  it("a 20 MB argument reaches the handler intact", async () => {
    const data = expected.subarray(0, 20 * 1024 * 1024);
    assert.equal(await within(client.call("echoBytes", [data]), 30_000, "upload"), sha(data));
  });
});

describe("large transfers during a graceful close", () => {
  it("a 50 MB result being sent when close() is called arrives whole", async () => {
    const server = new Server();
    const produced = deferred();
    const data = pattern(SIZE);
    server.register("big", () => {
      setImmediate(() => produced.resolve());
      return data;
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address);
    try {
      const big = client.call<Uint8Array>("big", []);
      await within(produced.promise, 5000, "handler producing the result");
      const closing = server.close({ timeout: 20_000 });
      const result = await within(big, 30_000, "large result");
      assert.equal(result.byteLength, SIZE);
      assert.equal(sha(result), sha(data));
      await within(closing, 5000, "server close");
    } finally {
      await client.close();
      await server.close();
    }
  });
});

describe("large messages sent from reused memory", () => {
  /** A pattern of its own per call: a buffer reused too early would carry another call's bytes. */
  function seeded(size: number, seed: number): Buffer {
    const out = Buffer.allocUnsafe(size);
    let x = seed * 2654435761;
    for (let i = 0; i + 4 <= size; i += 4) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out.writeUInt32LE(x, i);
    }
    for (let i = size & ~3; i < size; i++) out[i] = seed & 0xff;
    return out;
  }

  it("concurrent echoes of large arguments and results of many sizes come back byte-exact (client and server share one pool here)", async () => {
    const server = new Server();
    server.register("echo", (data: Uint8Array) => data);
    server.register("wrap", (data: Uint8Array, tag: number) => ({ tag, data, after: "tail" }));
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    const client = new Client(address);
    const sizes = [70 * 1024, 300 * 1024 + 1, 1536 * 1024 + 2, 3 * 1024 * 1024 + 5];
    try {
      await client.connect();
      // 4 lanes, 8 calls each, 2 methods: up to 4 large arguments and 4 large results in flight at once.
      const lanes = Array.from({ length: 4 }, async (_, lane) => {
        for (let i = 0; i < 8; i++) {
          const seed = lane * 100 + i + 1;
          const data = seeded(sizes[(lane + i) % sizes.length] as number, seed);
          if (i % 2 === 0) {
            const echoed = await client.call<Uint8Array>("echo", [data]);
            assert.ok(Buffer.from(echoed).equals(data), `echo lane ${lane} call ${i}`);
          } else {
            const wrapped = await client.call<{ tag: number; data: Uint8Array; after: string }>("wrap", [data, seed]);
            assert.equal(wrapped.tag, seed);
            assert.equal(wrapped.after, "tail");
            assert.ok(Buffer.from(wrapped.data).equals(data), `wrap lane ${lane} call ${i}`);
          }
        }
      });
      await within(Promise.all(lanes), 30_000, "all echoes");
    } finally {
      await client.close();
      await server.close();
    }
  });
});
