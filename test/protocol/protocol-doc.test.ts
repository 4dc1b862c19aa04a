import assert from "node:assert/strict";
import { createCipheriv, createSecretKey, hkdfSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { encodeCallPayload } from "../../src/protocol/call-payload.js";
import { DEFAULT_LIMITS } from "../../src/protocol/connection.js";
import {
  Direction,
  openEnvelope,
  readEnvelopeHeader,
  recordAad,
  recordKey,
  setRecordSequence,
} from "../../src/protocol/crypto-envelope.js";
import { FRAME_HEADER_SIZE, FrameType, writeFrameHeader } from "../../src/protocol/frame.js";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { PROTOCOL_VERSION } from "../../src/protocol/wire-messages.js";

const protocol = readFileSync(fileURLToPath(new URL("../../../PROTOCOL.md", import.meta.url)), "utf8");

/** The bytes of the first hex dump under the heading starting with `heading`. */
function dumpUnder(heading: string): Buffer {
  const at = protocol.indexOf(heading);
  assert.ok(at >= 0, `PROTOCOL.md has no heading "${heading}"`);
  const block = /```\n([\s\S]*?)```/.exec(protocol.slice(at));
  assert.ok(block !== null, `no hex dump under "${heading}"`);
  const hex = (block[1] as string)
    .split("\n")
    .filter((line) => /^[0-9a-f]{8}: /.test(line))
    .map((line) => line.slice(10, 10 + 47))
    .join(" ");
  return Buffer.from(hex.replace(/\s+/g, ""), "hex");
}

function frame(type: number, streamId: number, payload: Uint8Array): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_SIZE + payload.length);
  writeFrameHeader(out, 0, payload.length, type, 0, streamId);
  out.set(payload, FRAME_HEADER_SIZE);
  return out;
}

/** PROTOCOL.md's worked example (section 11) is what this implementation puts on the wire. */
describe("PROTOCOL.md worked example matches the encoders", () => {
  const codec = new MsgpackCodec();

  it("11.1 HELLO is a default client's", () => {
    assert.deepEqual(dumpUnder("### 11.1"), frame(FrameType.HELLO, 0, codec.encode({ version: PROTOCOL_VERSION, limits: DEFAULT_LIMITS })));
  });

  it("11.2 WELCOME is a default server's (with the dump's connection id)", () => {
    const doc = dumpUnder("### 11.2");
    const connectionId = doc.subarray(0x23, 0x47).toString("latin1");
    assert.match(connectionId, /^[0-9a-f-]{36}$/);
    const welcome = { version: PROTOCOL_VERSION, connectionId, limits: DEFAULT_LIMITS };
    assert.deepEqual(doc, frame(FrameType.WELCOME, 0, codec.encode(welcome)));
  });

  it("11.3 CALL and 11.4 RESULT are calc.add(1, 2) and 3 on stream 1", () => {
    assert.deepEqual(dumpUnder("### 11.3"), frame(FrameType.CALL, 1, encodeCallPayload(codec, "calc.add", undefined, undefined, [1, 2])));
    assert.deepEqual(dumpUnder("### 11.4"), frame(FrameType.RESULT, 1, codec.encode(3)));
  });
});

/** PROTOCOL.md §13.7: a record, checked against the text with node:crypto alone and against this implementation. */
describe("PROTOCOL.md §13.7 record matches the documented layout and the implementation", () => {
  const codec = new MsgpackCodec();
  const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const nonce = Buffer.from(Array.from({ length: 12 }, (_, i) => i));
  const binding = Buffer.alloc(32, 0xab);
  const call = frame(FrameType.CALL, 1, encodeCallPayload(codec, "calc.add", undefined, undefined, [1, 2]));

  it("is the CALL frame of §11.3 sealed as §13.3 describes (recomputed with node:crypto alone)", () => {
    const record = dumpUnder("### 13.7");
    assert.deepEqual(dumpUnder("### 11.3"), call);
    const header = Buffer.concat([Buffer.from([2]), Buffer.from("k1"), nonce, Buffer.from("0000019b76daa800", "hex")]);
    const aad = Buffer.concat([Buffer.from([0]), Buffer.alloc(8), binding, header]);
    assert.equal(aad.length, 64, "the example's associated data are 64 bytes");
    // The record key of the client-to-server direction (§13.3): HKDF-SHA256(key, salt = binding, info = "rapt record key" ‖ 0x00).
    const info = Buffer.concat([Buffer.from("rapt record key"), Buffer.from([0])]);
    const derived = Buffer.from(hkdfSync("sha256", key, binding, info, 32));
    const section = protocol.slice(protocol.indexOf("### 13.7"));
    const shown = /record key derived from it is `([0-9a-f]{64})`/.exec(section);
    assert.ok(shown !== null, "§13.7 shows the derived record key");
    assert.equal(derived.toString("hex"), shown[1], "the derived record key PROTOCOL.md shows");
    const cipher = createCipheriv("aes-256-gcm", derived, nonce, { authTagLength: 16 });
    cipher.setAAD(aad);
    const body = Buffer.concat([header, cipher.update(call), cipher.final(), cipher.getAuthTag()]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(body.length);
    assert.deepEqual(record, Buffer.concat([length, body]));
    assert.equal(record.readUInt32BE(0), 66);
  });

  it("opens with this implementation to the CALL frame, and only as record 0 of that direction and connection", () => {
    const record = dumpUnder("### 13.7");
    const body = record.subarray(4);
    const header = readEnvelopeHeader(body, "the example");
    assert.deepEqual([header.keyId, header.timestamp, header.length], ["k1", 1_767_225_600_000, 23]);
    const shared = createSecretKey(key);
    const secret = recordKey(shared, binding, Direction.CLIENT_TO_SERVER);
    assert.deepEqual(openEnvelope(secret, recordAad(Direction.CLIENT_TO_SERVER, binding), body, header), call);
    assert.equal(openEnvelope(secret, setRecordSequence(recordAad(Direction.CLIENT_TO_SERVER, binding), 1), body, header), undefined);
    const otherDirection = recordKey(shared, binding, Direction.SERVER_TO_CLIENT);
    assert.equal(openEnvelope(otherDirection, recordAad(Direction.SERVER_TO_CLIENT, binding), body, header), undefined);
    const otherBinding = Buffer.alloc(32, 0xac);
    assert.equal(
      openEnvelope(recordKey(shared, otherBinding, 0), recordAad(Direction.CLIENT_TO_SERVER, otherBinding), body, header),
      undefined,
    );
    // The shared key itself does not open a record: records are sealed under the derived key.
    assert.equal(openEnvelope(shared, recordAad(Direction.CLIENT_TO_SERVER, binding), body, header), undefined);
  });
});
