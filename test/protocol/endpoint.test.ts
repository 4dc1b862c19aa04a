import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatEndpoint, parseEndpoint } from "../../src/protocol/endpoint.js";
import { RpcError } from "../../src/protocol/rpc-error.js";

describe("parseEndpoint", () => {
  it("parses IPv4, IPv6, all-interfaces and Unix forms", () => {
    assert.deepEqual(parseEndpoint("127.0.0.1:4000"), { host: "127.0.0.1", port: 4000 });
    assert.deepEqual(parseEndpoint("[::1]:0"), { host: "::1", port: 0 });
    assert.deepEqual(parseEndpoint(":80"), { host: "::", port: 80 });
    assert.deepEqual(parseEndpoint("localhost:9"), { host: "localhost", port: 9 });
    assert.deepEqual(parseEndpoint("unix:/tmp/a.sock"), { path: "/tmp/a.sock" });
    assert.deepEqual(parseEndpoint("/tmp/b.sock"), { path: "/tmp/b.sock" });
  });

  it("round-trips through formatEndpoint", () => {
    for (const text of ["127.0.0.1:1", "[::1]:2", "unix:/x/y"]) assert.equal(formatEndpoint(parseEndpoint(text)), text);
  });

  it("rejects malformed input with INVALID_ARGUMENT naming it", () => {
    for (const bad of ["nope", "1.2.3.4:70000", "host:", "[::1]", "unix:", "a:b:1", "[zz]:1", "", ":"]) {
      assert.throws(
        () => parseEndpoint(bad),
        (e: unknown) => e instanceof RpcError && e.code === "INVALID_ARGUMENT" && e.message.includes(bad),
      );
    }
  });

  it("accepts object forms and rejects invalid ones", () => {
    assert.deepEqual(parseEndpoint({ host: "::1", port: 1 }), { host: "::1", port: 1 });
    assert.deepEqual(parseEndpoint({ port: 65535 } as { host: string; port: number }), { host: "127.0.0.1", port: 65535 });
    assert.deepEqual(parseEndpoint({ path: "/tmp/c.sock" }), { path: "/tmp/c.sock" });
    for (const bad of [
      { path: "" },
      { host: "h", port: 65536 },
      { host: "h", port: -1 },
      { host: "h", port: 1.5 },
      { host: "h", port: Number.NaN },
    ]) {
      assert.throws(
        () => parseEndpoint(bad as { host: string; port: number }),
        (e: unknown) => e instanceof RpcError && e.code === "INVALID_ARGUMENT",
        JSON.stringify(bad),
      );
    }
  });
});
