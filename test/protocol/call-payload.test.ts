import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_TIMEOUT_MS, encodeCallPayload, encodeCallPrefix, readCallPayload } from "../../src/protocol/call-payload.js";
import { FRAME_HEADER_SIZE, FrameType, writeFrameHeader } from "../../src/protocol/frame.js";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";

function protocolError(pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RpcError, `expected an RpcError, got ${String(e)}`);
    assert.equal(e.code, ErrorCode.PROTOCOL_ERROR, e.message);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

/** A CALL payload from raw parts: u32be head length, head bytes, args bytes. */
function rawPayload(headLength: number, head: Uint8Array, args: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(4 + head.length + args.length);
  out.writeUInt32BE(headLength, 0);
  out.set(head, 4);
  out.set(args, 4 + head.length);
  return out;
}

describe("encodeCallPayload / readCallPayload", () => {
  it("round-trips method, timeout, metadata and arguments in every combination", () => {
    const codec = new MsgpackCodec();
    // Binary decoded from a Buffer comes back as a Buffer (a view of the payload).
    const metadata = { trace: "abc", bin: Buffer.from([1, 2, 3]) };
    const args = [1, "two", { three: [3n, new Date(3)] }, Buffer.from([4]), null];
    const cases: [number | undefined, typeof metadata | undefined, unknown[]][] = [
      [undefined, undefined, ["svc.method"]],
      [5000, undefined, ["svc.method", 5000]],
      [undefined, metadata, ["svc.method", null, metadata]],
      [0, metadata, ["svc.method", 0, metadata]],
      [MAX_TIMEOUT_MS, undefined, ["svc.method", MAX_TIMEOUT_MS]],
    ];
    for (const [timeout, md, head] of cases) {
      const payload = encodeCallPayload(codec, "svc.method", timeout, md, args);
      const read = readCallPayload(codec, payload);
      assert.deepEqual(read.head, head, `timeout ${timeout}, metadata ${md !== undefined}`);
      assert.deepEqual(codec.decode(read.args), args);
    }
  });

  it("produces the CALL of PROTOCOL.md's worked example (section 11.3) byte for byte", () => {
    const codec = new MsgpackCodec();
    const payload = encodeCallPayload(codec, "calc.add", undefined, undefined, [1, 2]);
    const frame = Buffer.alloc(FRAME_HEADER_SIZE + payload.length);
    writeFrameHeader(frame, 0, payload.length, FrameType.CALL, 0, 1);
    payload.copy(frame, FRAME_HEADER_SIZE);
    assert.equal(frame.toString("hex"), "00000011030000000001" + "0000000a91a863616c632e616464920102");
    const read = readCallPayload(codec, payload);
    assert.deepEqual(read.head, ["calc.add"]);
    assert.deepEqual(codec.decode(read.args), [1, 2]);
  });

  it("round-trips empty arguments", () => {
    const codec = new MsgpackCodec();
    const read = readCallPayload(codec, encodeCallPayload(codec, "m", undefined, undefined, []));
    assert.deepEqual(read.head, ["m"]);
    assert.deepEqual(codec.decode(read.args), []);
  });

  it("owns its result: later encodes on the same codec do not change it", () => {
    const codec = new MsgpackCodec();
    const payload = encodeCallPayload(codec, "first", 10, undefined, ["a".repeat(100)]);
    const copy = Buffer.from(payload);
    encodeCallPayload(codec, "second", 20, { k: "v" }, ["b".repeat(200)]);
    codec.encodeShared({ overwrite: "c".repeat(300) });
    assert.deepEqual(payload, copy);
  });

  it("gives a head that is the method name alone the same prefix each time; any other head a new one", () => {
    const codec = new MsgpackCodec();
    const prefix = encodeCallPrefix(codec, "svc.add", undefined, undefined);
    assert.equal(encodeCallPrefix(codec, "svc.add", undefined, undefined), prefix, "shared by calls");
    assert.equal(encodeCallPrefix(new MsgpackCodec({ maxDepth: 4 }), "svc.add", undefined, undefined), prefix, "whatever the codec");
    const head = codec.encode(["svc.add"]);
    assert.deepEqual([...prefix], [0, 0, 0, head.length, ...head]);
    // The payload built from it reads back as the method, after other encodes on the codec.
    codec.encode({ unrelated: "x".repeat(100) });
    assert.equal(readCallPayload(codec, Buffer.concat([prefix, codec.encode([1, 2])])).head[0], "svc.add");
    assert.notEqual(encodeCallPrefix(codec, "svc.sub", undefined, undefined), prefix);
    for (const other of [
      encodeCallPrefix(codec, "svc.add", 100, undefined),
      encodeCallPrefix(codec, "svc.add", undefined, { trace: "t" }),
      encodeCallPrefix(codec, "svc.add", undefined, undefined, 0),
      encodeCallPrefix(codec, "svc.add", undefined, undefined, undefined, undefined, 7),
    ]) {
      assert.notEqual(other, prefix);
      assert.equal(readCallPayload(codec, Buffer.concat([other, codec.encode([])])).head[0], "svc.add");
    }
    // The cache is bounded: past 1,024 names it starts over.
    for (let i = 0; i < 1100; i++) encodeCallPrefix(codec, `m${i}`, undefined, undefined);
    const again = encodeCallPrefix(codec, "svc.add", undefined, undefined);
    assert.notEqual(again, prefix);
    assert.ok(again.equals(prefix));
  });

  it("puts the head first with its own length, so it can be read without the arguments", () => {
    const codec = new MsgpackCodec();
    const payload = encodeCallPayload(codec, "m", 7, undefined, [Buffer.alloc(1000)]);
    const headLength = payload.readUInt32BE(0);
    assert.deepEqual(codec.decode(payload.subarray(4, 4 + headLength)), ["m", 7]);
    // Garbage arguments do not stop the head from being read: they are decoded later.
    const broken = Buffer.concat([payload.subarray(0, 4 + headLength), Buffer.from([0xc1, 0xc1])]);
    const read = readCallPayload(codec, broken);
    assert.deepEqual(read.head, ["m", 7]);
    assert.throws(() => codec.decode(read.args), protocolError());
  });

  it("rejects a payload shorter than the head length field", () => {
    const codec = new MsgpackCodec();
    for (const size of [0, 1, 3]) {
      assert.throws(() => readCallPayload(codec, Buffer.alloc(size)), protocolError(new RegExp(`${size} bytes is shorter`)));
    }
  });

  it("rejects a head length that overruns the payload", () => {
    const codec = new MsgpackCodec();
    const head = codec.encode(["m"]);
    assert.throws(() => readCallPayload(codec, rawPayload(head.length + 1, head)), protocolError(/overruns/));
    assert.throws(() => readCallPayload(codec, rawPayload(0xffff_ffff, head)), protocolError(/4294967295 overruns/));
    // Truncating a valid payload inside its head is caught the same way.
    const payload = encodeCallPayload(new MsgpackCodec(), "method", 100, { a: "b" }, []);
    const headEnd = 4 + payload.readUInt32BE(0);
    for (let cut = 4; cut < headEnd; cut++) {
      assert.throws(() => readCallPayload(codec, payload.subarray(0, cut)), protocolError(/overruns/), `cut at ${cut}`);
    }
  });

  it("rejects a head that is not valid MessagePack or not a valid head", () => {
    const codec = new MsgpackCodec();
    const head = (value: unknown): Buffer => {
      const bytes = codec.encode(value);
      return rawPayload(bytes.length, bytes, codec.encode([]));
    };
    const cases: [string, Buffer, RegExp][] = [
      ["zero-length head", rawPayload(0, new Uint8Array(0), codec.encode([])), /malformed MessagePack/],
      ["truncated head", rawPayload(2, Buffer.from([0x91, 0xa5])), /malformed MessagePack/],
      ["two values in the head", rawPayload(4, Buffer.from([0x91, 0xa1, 0x6d, 0x01])), /malformed MessagePack/],
      ["numeric method", head([5]), /\$input\[0\]/],
      ["empty method", head([""]), /\$input\[0\]/],
      ["method over 256 chars", head(["m".repeat(257)]), /\$input\[0\]/],
      ["negative timeout", head(["m", -1]), /\$input\[1\]/],
      ["fractional timeout", head(["m", 1.5]), /\$input\[1\]/],
      ["metadata number value", head(["m", null, { a: 1 }]), /\$input\[2\]\.a/],
      ["head is a map", head({ method: "m" }), /\$input should be/],
    ];
    for (const [what, payload, pattern] of cases) assert.throws(() => readCallPayload(codec, payload), protocolError(pattern), what);
  });

  it("refuses to encode arguments MessagePack cannot carry", () => {
    const codec = new MsgpackCodec();
    assert.throws(
      () => encodeCallPayload(codec, "m", undefined, undefined, [() => 1]),
      (e: unknown) => e instanceof RpcError && e.code === ErrorCode.INVALID_ARGUMENT,
    );
    // The codec is still usable for the next call.
    assert.deepEqual(readCallPayload(codec, encodeCallPayload(codec, "m", 1, undefined, [])).head, ["m", 1]);
  });
});
