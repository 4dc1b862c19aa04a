import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecordDecoder } from "../../src/protocol/record-decoder.js";
import { ErrorCode, RpcError } from "../../src/protocol/rpc-error.js";
import { between, prng } from "./seeded-random.js";

function body(size: number, fill: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = (fill + i * 31) & 0xff;
  return out;
}

/** `recordLength:u32be` then the body. */
function record(bodyBytes: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bodyBytes.length);
  return Buffer.concat([length, bodyBytes]);
}

const LIMITS = { minRecordSize: 38, maxRecordSize: 64 * 1024 };

function recorder(options: { minRecordSize: number; maxRecordSize: number; maxBufferedParts?: number } = LIMITS): {
  decoder: RecordDecoder;
  bodies: Buffer[];
} {
  const bodies: Buffer[] = [];
  const decoder = new RecordDecoder({ onRecord: (b) => bodies.push(Buffer.from(b)) }, options);
  return { decoder, bodies };
}

function unauthenticated(pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
    assert.match(error.message, pattern);
    return true;
  };
}

describe("RecordDecoder", () => {
  it("reads any split of a random record stream exactly (many seeds)", () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rand = prng(seed);
      const expected = Array.from({ length: between(rand, 1, 30) }, (_, i) =>
        body(rand() < 0.8 ? between(rand, 38, 400) : between(rand, 401, 64 * 1024), seed + i),
      );
      const stream = Buffer.concat(expected.map(record));
      const maxChunk = [1, 7, 3000, 200_000][seed % 4] as number;
      const maxBufferedParts = [undefined, 1, 64][seed % 3];
      const { decoder, bodies } = recorder(maxBufferedParts === undefined ? LIMITS : { ...LIMITS, maxBufferedParts });
      let offset = 0;
      for (let pushes = 0; offset < stream.length && pushes <= stream.length; pushes++) {
        const size = Math.min(stream.length - offset, between(rand, 1, maxChunk));
        decoder.push(stream.subarray(offset, offset + size));
        offset += size;
      }
      assert.equal(bodies.length, expected.length, `seed ${seed}: record count`);
      for (const [i, b] of expected.entries()) assert.ok((bodies[i] as Buffer).equals(b), `seed ${seed}: record ${i}`);
      assert.equal(decoder.bufferedBytes, 0, `seed ${seed}: nothing left buffered`);
    }
  });

  it("hands out a record lying inside one chunk as a view, without copying", () => {
    const chunk = Buffer.concat([record(body(100, 1)), record(body(50, 2))]);
    const views: Buffer[] = [];
    const decoder = new RecordDecoder({ onRecord: (b) => views.push(b) }, LIMITS);
    decoder.push(chunk);
    assert.equal(views.length, 2);
    for (const view of views) assert.equal(view.buffer, chunk.buffer);
  });

  it("refuses a length above the maximum as soon as its 4 bytes arrive, before any body is buffered", () => {
    const { decoder, bodies } = recorder();
    decoder.push(record(body(40, 1)));
    const length = Buffer.alloc(4);
    length.writeUInt32BE(64 * 1024 + 1);
    decoder.push(length.subarray(0, 3));
    assert.throws(
      () => decoder.push(length.subarray(3)),
      (error: unknown) =>
        unauthenticated(/^record of 65537 bytes exceeds the maximum record size of 65536 bytes; after an encrypted handshake/)(error) &&
        JSON.stringify((error as RpcError).data) === JSON.stringify({ size: 65537, limit: 65536 }),
    );
    assert.equal(decoder.bufferedBytes, 0);
    decoder.push(record(body(40, 2)));
    assert.equal(bodies.length, 1, "nothing after the refusal");
  });

  it("refuses a length too short to be a record (a plaintext frame's, say)", () => {
    const { decoder } = recorder();
    const frameHeader = Buffer.from([0, 0, 0, 17, 3, 0, 0, 0, 0, 1]);
    assert.throws(() => decoder.push(frameHeader), unauthenticated(/^record of 17 bytes is shorter than the smallest record \(38 bytes\)/));
  });

  it("gathers a record trickling in as many tiny chunks into one buffer, holding at most its size", () => {
    const { decoder, bodies } = recorder({ ...LIMITS, maxBufferedParts: 4 });
    const stream = record(body(60 * 1024, 9));
    for (let i = 0; i < stream.length; i++) {
      decoder.push(stream.subarray(i, i + 1));
      assert.ok(decoder.bufferedBytes <= 60 * 1024);
    }
    assert.equal(bodies.length, 1);
    assert.ok((bodies[0] as Buffer).equals(body(60 * 1024, 9)));
  });

  it("stops when the sink stops it mid-chunk", () => {
    const seen: number[] = [];
    const decoder: RecordDecoder = new RecordDecoder(
      {
        onRecord(b) {
          seen.push(b.length);
          if (seen.length === 2) decoder.stop();
        },
      },
      LIMITS,
    );
    decoder.push(Buffer.concat([record(body(40, 1)), record(body(41, 1)), record(body(42, 1))]));
    decoder.push(record(body(43, 1)));
    assert.deepEqual(seen, [40, 41]);
  });
});
