import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";
import {
  assertMetadata,
  errorFromBody,
  errorToBody,
  parseCallHead,
  parseGoaway,
  parseHello,
  parseWelcome,
} from "../../src/protocol/wire-messages.js";

const limits = { maxFrameSize: 1024 * 1024, maxMessageSize: 64 * 1024 * 1024, maxConcurrentStreams: 100 };

/** Expects `fn` to throw `code` with a message naming `path` (an exact substring). */
function throwsAt(fn: () => unknown, code: ErrorCode, path: string, what: string): void {
  assert.throws(
    fn,
    (e: unknown) => {
      assert.ok(e instanceof RpcError, `${what}: expected an RpcError, got ${String(e)}`);
      assert.equal(e.code, code, `${what}: ${e.message}`);
      assert.ok(e.message.includes(`${path} should be`), `${what}: "${e.message}" should name ${path}`);
      return true;
    },
    what,
  );
}

/** Round trip through MessagePack first: what the parsers see comes off the wire. */
const wire = new MsgpackCodec();
const fromWire = (value: unknown): unknown => wire.decode(wire.encode(value));

/** Payloads (frame header stripped) of PROTOCOL.md's worked example, section 11. */
const EXAMPLE_HELLO =
  "82a776657273696f6e01a66c696d69747383ac6d61784672616d6553697a65ce00100000ae6d61784d65737361676553697a65ce04000000" +
  "b46d6178436f6e63757272656e7453747265616d73cd2710";
const EXAMPLE_WELCOME =
  "83a776657273696f6e01ac636f6e6e656374696f6e4964d92432653766616638352d386636312d346663332d393164322d393738613932" +
  "623663306564a66c696d69747383ac6d61784672616d6553697a65ce00100000ae6d61784d65737361676553697a65ce04000000b46d61" +
  "78436f6e63757272656e7453747265616d73cd2710";
const EXAMPLE_GOAWAY = "9300ab554e415641494c41424c45b1636c69656e7420697320636c6f73696e67";

describe("PROTOCOL.md worked example", () => {
  it("parses the example HELLO, WELCOME and GOAWAY, and encodes the same bytes", () => {
    const codec = new MsgpackCodec();
    const defaults = { maxFrameSize: 1_048_576, maxMessageSize: 67_108_864, maxConcurrentStreams: 10_000 };
    const hello = parseHello(codec.decode(Buffer.from(EXAMPLE_HELLO, "hex")));
    assert.deepEqual(hello, { version: 1, limits: defaults });
    assert.equal(codec.encode(hello).toString("hex"), EXAMPLE_HELLO);
    const welcome = parseWelcome(codec.decode(Buffer.from(EXAMPLE_WELCOME, "hex")));
    assert.deepEqual(welcome, { version: 1, connectionId: "2e7faf85-8f61-4fc3-91d2-978a92b6c0ed", limits: defaults });
    assert.equal(codec.encode(welcome).toString("hex"), EXAMPLE_WELCOME);
    const goaway = parseGoaway(codec.decode(Buffer.from(EXAMPLE_GOAWAY, "hex")));
    assert.deepEqual(goaway, [0, "UNAVAILABLE", "client is closing"]);
    assert.equal(codec.encode(goaway).toString("hex"), EXAMPLE_GOAWAY);
  });
});

describe("parseHello", () => {
  it("accepts valid HELLOs, with and without metadata", () => {
    const hello = { version: 1, limits };
    assert.deepEqual(parseHello(fromWire(hello)), hello);
    const withMetadata = fromWire({ version: 7, limits, metadata: { token: "abc", blob: new Uint8Array([1, 2]) } });
    assert.deepEqual(parseHello(withMetadata), withMetadata);
    // nil metadata means none, as in the CALL head.
    assert.equal(parseHello(fromWire({ version: 1, limits, metadata: null })).metadata, null);
    const atBounds = { version: 0xffff_ffff, limits: { maxFrameSize: 1024, maxMessageSize: 0xffff_ffff, maxConcurrentStreams: 1 } };
    assert.deepEqual(parseHello(atBounds), atBounds);
  });

  it("rejects each malformed variant with PROTOCOL_ERROR naming the bad path", () => {
    const cases: [string, unknown, string][] = [
      ["not a map", "hello", "$input"],
      ["nil", null, "$input"],
      ["an array", [1, limits], "$input.version"],
      ["no version", { limits }, "$input.version"],
      ["string version", { version: "1", limits }, "$input.version"],
      ["negative version", { version: -1, limits }, "$input.version"],
      ["fractional version", { version: 1.5, limits }, "$input.version"],
      ["version past uint32", { version: 2 ** 32, limits }, "$input.version"],
      ["no limits", { version: 1 }, "$input.limits"],
      ["limits nil", { version: 1, limits: null }, "$input.limits"],
      ["no maxFrameSize", { version: 1, limits: { ...limits, maxFrameSize: undefined } }, "$input.limits.maxFrameSize"],
      ["maxFrameSize below 1024", { version: 1, limits: { ...limits, maxFrameSize: 1023 } }, "$input.limits.maxFrameSize"],
      ["fractional maxMessageSize", { version: 1, limits: { ...limits, maxMessageSize: 2048.5 } }, "$input.limits.maxMessageSize"],
      ["zero streams", { version: 1, limits: { ...limits, maxConcurrentStreams: 0 } }, "$input.limits.maxConcurrentStreams"],
      ["negative streams", { version: 1, limits: { ...limits, maxConcurrentStreams: -5 } }, "$input.limits.maxConcurrentStreams"],
      ["metadata array", { version: 1, limits, metadata: ["a"] }, "$input.metadata"],
      ["metadata number value", { version: 1, limits, metadata: { ok: "x", n: 5 } }, "$input.metadata.n"],
      ["metadata map value", { version: 1, limits, metadata: { "x-trace": {} } }, '$input.metadata["x-trace"]'],
    ];
    for (const [what, value, path] of cases) throwsAt(() => parseHello(fromWire(value)), ErrorCode.PROTOCOL_ERROR, path, what);
  });

  it("lists the first errors in the error's data", () => {
    try {
      parseHello({ version: "x", limits: { maxFrameSize: "y", maxMessageSize: 1024, maxConcurrentStreams: 1 } });
      assert.fail("should throw");
    } catch (e) {
      assert.ok(e instanceof RpcError);
      const errors = (e.data as { errors: { path: string }[] }).errors.map((x) => x.path);
      assert.ok(errors.includes("$input.version"), String(errors));
      assert.ok(errors.includes("$input.limits.maxFrameSize"), String(errors));
    }
  });
});

describe("parseWelcome", () => {
  it("accepts valid WELCOMEs", () => {
    const welcome = { version: 1, connectionId: "c-1", limits };
    assert.deepEqual(parseWelcome(fromWire(welcome)), welcome);
    const withKeepalive = { ...welcome, keepaliveInterval: 10_000 };
    assert.deepEqual(parseWelcome(fromWire(withKeepalive)), withKeepalive);
  });

  it("rejects malformed WELCOMEs naming the bad path", () => {
    const welcome = { version: 1, connectionId: "c-1", limits };
    const cases: [string, unknown, string][] = [
      ["no connectionId", { version: 1, limits }, "$input.connectionId"],
      ["numeric connectionId", { ...welcome, connectionId: 5 }, "$input.connectionId"],
      ["binary connectionId", { ...welcome, connectionId: new Uint8Array([1]) }, "$input.connectionId"],
      ["negative keepalive", { ...welcome, keepaliveInterval: -1 }, "$input.keepaliveInterval"],
      ["fractional keepalive", { ...welcome, keepaliveInterval: 0.5 }, "$input.keepaliveInterval"],
      ["nil keepalive", { ...welcome, keepaliveInterval: null }, "$input.keepaliveInterval"],
      ["bad limits", { ...welcome, limits: { ...limits, maxMessageSize: "big" } }, "$input.limits.maxMessageSize"],
      ["fractional version", { ...welcome, version: 0.1 }, "$input.version"],
    ];
    for (const [what, value, path] of cases) throwsAt(() => parseWelcome(fromWire(value)), ErrorCode.PROTOCOL_ERROR, path, what);
  });
});

describe("parseCallHead", () => {
  it("accepts a method alone, with a timeout, and with metadata", () => {
    const heads: unknown[] = [
      ["svc.method"],
      ["m", 0],
      ["m", 0xffff_ffff],
      ["m", null, { trace: "t", bin: new Uint8Array([9]) }],
      ["m", 1000, {}],
      ["m", null, null],
      // A client stream: the argument at index 0 (or 255) follows as ITEMs.
      ["m", null, null, 0],
      ["m", 5, {}, 255],
      ["m", null, null, null],
      // A channel open, and an explicit plain call.
      ["chat", null, null, null, 1],
      // A session open, and a call in session stream 3.
      ["3f1c-uuid", null, null, null, 2],
      ["m", null, null, null, null, 3],
      ["m", 10, {}, null, 0],
      ["x".repeat(256)],
      // 256 UTF-16 code units (128 surrogate pairs).
      ["\u{1F600}".repeat(128)],
    ];
    for (const head of heads) assert.deepEqual(parseCallHead(fromWire(head)), fromWire(head));
  });

  it("rejects malformed heads naming the bad path", () => {
    const cases: [string, unknown, string][] = [
      ["not an array", "m", "$input"],
      ["a map", { method: "m" }, "$input"],
      ["empty array", [], "$input"],
      ["too many elements", ["m", 1, {}, 0, 1, 3, "extra"], "$input"],
      ["session stream 0", ["m", null, null, null, null, 0], "$input[5]"],
      ["session stream not a number", ["m", null, null, null, null, "s"], "$input[5]"],
      ["unknown kind", ["m", null, null, null, 4], "$input[4]"],
      ["streamed argument not an index", ["m", 1, {}, "extra"], "$input[3]"],
      ["streamed argument past 255", ["m", null, null, 256], "$input[3]"],
      ["numeric method", [5], "$input[0]"],
      ["nil method", [null], "$input[0]"],
      ["empty method", [""], "$input[0]"],
      ["method over 256 chars", ["x".repeat(257)], "$input[0]"],
      ["method over 256 UTF-16 code units", ["x\u{1F600}".repeat(86)], "$input[0]"],
      ["string timeout", ["m", "100"], "$input[1]"],
      ["negative timeout", ["m", -1], "$input[1]"],
      ["fractional timeout", ["m", 1.5], "$input[1]"],
      ["timeout past uint32", ["m", 2 ** 32], "$input[1]"],
      ["metadata string", ["m", null, "meta"], "$input[2]"],
      ["metadata array", ["m", null, ["a"]], "$input[2]"],
      ["metadata number value", ["m", null, { a: 1 }], "$input[2].a"],
      ["metadata boolean value", ["m", 5, { ok: "x", "x-flag": true }], '$input[2]["x-flag"]'],
    ];
    for (const [what, value, path] of cases) throwsAt(() => parseCallHead(fromWire(value)), ErrorCode.PROTOCOL_ERROR, path, what);
  });
});

describe("parseGoaway", () => {
  it("accepts [lastStreamId, code, message]", () => {
    assert.deepEqual(parseGoaway(fromWire([0, "UNAVAILABLE", "bye"])), [0, "UNAVAILABLE", "bye"]);
    assert.deepEqual(parseGoaway(fromWire([0xffff_ffff, "X", ""])), [0xffff_ffff, "X", ""]);
  });

  it("rejects malformed GOAWAYs naming the bad path", () => {
    const cases: [string, unknown, string][] = [
      ["a map", { lastStreamId: 1 }, "$input"],
      ["missing message", [1, "UNAVAILABLE"], "$input"],
      ["extra element", [1, "UNAVAILABLE", "m", 4], "$input"],
      ["negative stream id", [-1, "UNAVAILABLE", "m"], "$input[0]"],
      ["fractional stream id", [1.5, "UNAVAILABLE", "m"], "$input[0]"],
      ["string stream id", ["1", "UNAVAILABLE", "m"], "$input[0]"],
      ["numeric code", [1, 14, "m"], "$input[1]"],
      ["nil message", [1, "UNAVAILABLE", null], "$input[2]"],
    ];
    for (const [what, value, path] of cases) throwsAt(() => parseGoaway(fromWire(value)), ErrorCode.PROTOCOL_ERROR, path, what);
  });
});

describe("errorFromBody / errorToBody", () => {
  it("maps known codes through, with message and data", () => {
    const error = errorFromBody(fromWire(["NOT_FOUND", "no such method", { method: "m" }]));
    assert.ok(error instanceof RpcError);
    assert.equal(error.code, ErrorCode.NOT_FOUND);
    assert.equal(error.message, "no such method");
    assert.deepEqual(error.data, { method: "m" });
    assert.equal(errorFromBody(["INTERNAL", "x"]).data, undefined);
  });

  it("maps unknown codes to UNKNOWN, keeping message and data", () => {
    for (const code of ["SOMETHING_NEW", "", "not_found", "toString", "__proto__"]) {
      const error = errorFromBody([code, "msg", 1]);
      assert.equal(error.code, ErrorCode.UNKNOWN, code);
      assert.equal(error.message, "msg");
      assert.equal(error.data, 1);
    }
  });

  it("rejects a malformed body with PROTOCOL_ERROR", () => {
    const cases: [string, unknown, string][] = [
      ["not an array", "NOT_FOUND", "$input"],
      ["no message", ["NOT_FOUND"], "$input"],
      ["numeric code", [5, "m"], "$input[0]"],
      ["numeric message", ["NOT_FOUND", 5], "$input[1]"],
    ];
    for (const [what, value, path] of cases) throwsAt(() => errorFromBody(value), ErrorCode.PROTOCOL_ERROR, path, what);
  });

  it("errorToBody round-trips through errorFromBody", () => {
    const withData = new RpcError(ErrorCode.RESOURCE_EXHAUSTED, "too big", { limit: 10 });
    assert.deepEqual(errorToBody(withData), ["RESOURCE_EXHAUSTED", "too big", { limit: 10 }]);
    const back = errorFromBody(fromWire(errorToBody(withData)));
    assert.deepEqual([back.code, back.message, back.data], [withData.code, withData.message, withData.data]);
    // Without data the body has two elements (no trailing nil).
    assert.deepEqual(errorToBody(new RpcError(ErrorCode.CANCELLED, "stop")), ["CANCELLED", "stop"]);
  });
});

describe("assertMetadata", () => {
  it("accepts string and binary values", () => {
    const metadata = { a: "x", b: new Uint8Array([1]), c: Buffer.from("y") };
    assert.equal(assertMetadata(metadata), metadata);
    assert.deepEqual(assertMetadata({}), {});
  });

  it("rejects other values with INVALID_ARGUMENT naming the key", () => {
    throwsAt(() => assertMetadata({ a: "ok", count: 3 }), ErrorCode.INVALID_ARGUMENT, "metadata.count", "number value");
    throwsAt(() => assertMetadata({ "x-id": null }), ErrorCode.INVALID_ARGUMENT, 'metadata["x-id"]', "null value");
    throwsAt(() => assertMetadata("token"), ErrorCode.INVALID_ARGUMENT, "metadata", "a string");
    throwsAt(() => assertMetadata(null), ErrorCode.INVALID_ARGUMENT, "metadata", "null");
  });
});
