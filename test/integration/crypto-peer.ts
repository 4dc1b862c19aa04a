/**
 * An encrypted raw peer for the crypto tests, written from PROTOCOL.md
 * ("Processors") with node:crypto alone, not from rapt's sources: it seals
 * and opens handshake proofs and records byte by byte as documented, so the
 * tests check the documented layout as well as the server's rules. No tests
 * here.
 */
import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import { type Socket, connect } from "node:net";
import { decode, encode } from "@msgpack/msgpack";
import { FrameType } from "../../src/protocol/frame.js";
import { PROTOCOL_VERSION } from "../../src/protocol/wire-messages.js";
import { FrameInbox, RAW_LIMITS, type RawFrame, frame, within } from "./helpers.js";

/** The COMPRESSED flag bit. ENCRYPTED (0x02) is set on no frame. */
export const COMPRESSED = 0x04;
/** Most plaintext bytes in one record. */
export const MAX_RECORD_PLAINTEXT = 256 * 1024;
/** Largest recordLength: the plaintext limit plus a 255-byte key id's envelope. */
export const MAX_RECORD_SIZE = MAX_RECORD_PLAINTEXT + 1 + 255 + 12 + 8 + 16;

/** The associated-data context of a handshake proof. */
export interface ProofContext {
  /** 0 client to server, 1 server to client. */
  direction: number;
  type: number;
  streamId: number;
  /** 32 bytes: zeros for HELLO, SHA-256(HELLO) for WELCOME. */
  binding: Buffer;
}

/** How to seal, beyond the documented defaults (for the tests' forgeries). */
export interface SealOverrides {
  timestamp?: number;
  nonce?: Buffer;
}

/** keyIdLength:u8 keyId nonce[12] timestamp:u64be ciphertext tag[16], AES-256-GCM with associated data `context ‖ header`. */
function sealEnvelope(key: Buffer, keyId: string, context: Buffer, plaintext: Uint8Array, overrides: SealOverrides): Buffer {
  const id = Buffer.from(keyId, "utf8");
  const nonce = overrides.nonce ?? randomBytes(12);
  const timestamp = Buffer.alloc(8);
  timestamp.writeBigUInt64BE(BigInt(overrides.timestamp ?? Date.now()));
  const header = Buffer.concat([Buffer.from([id.length]), id, nonce, timestamp]);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  cipher.setAAD(Buffer.concat([context, header]));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([header, body, cipher.getAuthTag()]);
}

/** Opens what {@link sealEnvelope} made; throws if it does not authenticate. */
function openEnvelope(key: Buffer, context: Buffer, payload: Buffer): { plaintext: Buffer; keyId: string; timestamp: number } {
  const idLength = payload[0] as number;
  const headerLength = 1 + idLength + 12 + 8;
  const header = payload.subarray(0, headerLength);
  const nonce = payload.subarray(1 + idLength, 13 + idLength);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  decipher.setAAD(Buffer.concat([context, header]));
  decipher.setAuthTag(payload.subarray(payload.length - 16));
  const plaintext = Buffer.concat([decipher.update(payload.subarray(headerLength, payload.length - 16)), decipher.final()]);
  return { plaintext, keyId: payload.toString("utf8", 1, 1 + idLength), timestamp: Number(payload.readBigUInt64BE(13 + idLength)) };
}

/** A handshake proof's context: direction, type, flags (0), stream id, binding. */
function proofContext(context: ProofContext): Buffer {
  const fixed = Buffer.alloc(7);
  fixed[0] = context.direction;
  fixed[1] = context.type;
  fixed.writeUInt32BE(context.streamId, 3);
  assert.equal(context.binding.length, 32);
  return Buffer.concat([fixed, context.binding]);
}

/** A record's context: direction, sequence (u64be), binding. */
function recordContext(direction: number, sequence: number, binding: Buffer): Buffer {
  const fixed = Buffer.alloc(9);
  fixed[0] = direction;
  fixed.writeBigUInt64BE(BigInt(sequence), 1);
  assert.equal(binding.length, 32);
  return Buffer.concat([fixed, binding]);
}

/** Seals a handshake proof (HELLO or WELCOME `processors.crypto`). */
export function sealProof(key: Buffer, keyId: string, context: ProofContext, plaintext: Uint8Array, overrides: SealOverrides = {}): Buffer {
  return sealEnvelope(key, keyId, proofContext(context), plaintext, overrides);
}

/** Opens a handshake proof; throws if it does not authenticate. */
export function openProof(key: Buffer, context: ProofContext, payload: Buffer): { plaintext: Buffer; keyId: string; timestamp: number } {
  return openEnvelope(key, proofContext(context), payload);
}

/** The key of one direction's records on one connection (§13.3): HKDF-SHA256(shared key, salt = binding, info = "rapt record key" ‖ direction). */
export function recordKey(key: Buffer, binding: Buffer, direction: number): Buffer {
  return Buffer.from(hkdfSync("sha256", key, binding, Buffer.concat([Buffer.from("rapt record key"), Buffer.from([direction])]), 32));
}

/** One record, `recordLength:u32be` included: `plaintext` sealed as record `sequence` of `direction` on the connection of `binding`. */
export function sealRecord(
  key: Buffer,
  keyId: string,
  direction: number,
  sequence: number,
  binding: Buffer,
  plaintext: Uint8Array,
  overrides: SealOverrides = {},
): Buffer {
  const body = sealEnvelope(recordKey(key, binding, direction), keyId, recordContext(direction, sequence, binding), plaintext, overrides);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

/** Opens a record's body (after its length); throws if it does not authenticate. */
export function openRecord(key: Buffer, direction: number, sequence: number, binding: Buffer, body: Buffer): Buffer {
  return openEnvelope(recordKey(key, binding, direction), recordContext(direction, sequence, binding), body).plaintext;
}

/** Opens a direction's records (whole, length included), in order from sequence 0, into the frame bytes they carry. */
export function openRecords(key: Buffer, direction: number, binding: Buffer, records: readonly Buffer[]): Buffer {
  return Buffer.concat(
    records.map((record, sequence) => {
      assert.equal(record.readUInt32BE(0), record.length - 4, `record ${sequence}: its length prefix counts the bytes after it`);
      assert.ok(record.length - 4 <= MAX_RECORD_SIZE, `record ${sequence} is within the maximum record size`);
      return openRecord(key, direction, sequence, binding, record.subarray(4));
    }),
  );
}

/** Splits complete frames off the front of `bytes`; the rest is what does not make a whole frame. */
export function splitFrames(bytes: Buffer): { frames: RawFrame[]; rest: Buffer } {
  const frames: RawFrame[] = [];
  let offset = 0;
  for (let i = 0; i < 1_000_000 && bytes.length - offset >= 10; i++) {
    const length = bytes.readUInt32BE(offset);
    if (bytes.length - offset < 10 + length) break;
    frames.push({
      type: bytes[offset + 4] as number,
      flags: bytes[offset + 5] as number,
      streamId: bytes.readUInt32BE(offset + 6),
      payload: Buffer.from(bytes.subarray(offset + 10, offset + 10 + length)),
    });
    offset += 10 + length;
  }
  return { frames, rest: Buffer.from(bytes.subarray(offset)) };
}

/** SHA-256 of the concatenated buffers. */
export function sha256(...parts: Uint8Array[]): Buffer {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest();
}

/** The HELLO payload a crypto client sends: its proof seals `{ metadata? }`. */
export function cryptoHello(key: Buffer, keyId: string, metadata?: Record<string, string>, overrides: SealOverrides = {}): Buffer {
  const context = { direction: 0, type: FrameType.HELLO, streamId: 0, binding: Buffer.alloc(32) };
  const proof = sealProof(key, keyId, context, encode(metadata === undefined ? {} : { metadata }), overrides);
  return Buffer.from(encode({ version: PROTOCOL_VERSION, limits: RAW_LIMITS, processors: { crypto: proof } }));
}

/**
 * A raw client that has completed an encrypted handshake: it seals what it
 * sends into numbered records and opens the server's records, in order,
 * into frames.
 */
export class CryptoPeer {
  readonly socket: Socket;
  readonly key: Buffer;
  readonly keyId: string;
  /** SHA-256(HELLO || WELCOME). */
  readonly binding: Buffer;
  /** The records received from the server, whole (length included), in order. */
  readonly received: Buffer[] = [];
  /** Opened frames not yet taken by {@link next}. */
  private readonly inbox = new FrameInbox();
  private plaintext: Buffer = Buffer.alloc(0);
  private bytes: Buffer = Buffer.alloc(0);
  private sendSequence = 0;
  private readonly closedPromise: Promise<void>;
  /** Reading the server's records failed: nothing more is read. */
  private failed = false;

  private constructor(socket: Socket, key: Buffer, keyId: string, binding: Buffer, rest: Buffer) {
    this.socket = socket;
    this.key = key;
    this.keyId = keyId;
    this.binding = binding;
    socket.on("data", (chunk: Buffer) => this.onBytes(chunk));
    this.closedPromise = new Promise((resolve) => {
      socket.on("close", () => {
        this.inbox.close();
        resolve();
      });
    });
    if (socket.destroyed) this.inbox.close();
    this.onBytes(rest);
  }

  /** Connects, sends a crypto HELLO, checks the server's WELCOME proof; the bytes after the WELCOME are records. */
  static async open(port: number, key: Buffer, keyId: string, metadata?: Record<string, string>): Promise<CryptoPeer> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port });
      s.once("connect", () => resolve(s));
      s.once("error", reject);
    });
    socket.setNoDelay(true);
    socket.on("error", () => {});
    const hello = cryptoHello(key, keyId, metadata);
    socket.write(frame(FrameType.HELLO, 0, 0, hello));
    // Everything up to the end of the WELCOME frame; records may follow in the same chunk.
    let buffer = Buffer.alloc(0);
    const chunks: Buffer[] = [];
    await within(
      new Promise<void>((resolve, reject) => {
        const onData = (chunk: Buffer): void => {
          chunks.push(chunk);
          buffer = Buffer.concat(chunks);
          if (buffer.length >= 10 && buffer.length >= 10 + buffer.readUInt32BE(0)) {
            socket.off("data", onData);
            socket.pause();
            resolve();
          }
        };
        socket.on("data", onData);
        socket.once("close", () => reject(new Error("closed before WELCOME")));
      }),
      2000,
      "WELCOME",
    );
    const { frames, rest } = splitFrames(buffer.subarray(0, 10 + buffer.readUInt32BE(0)));
    const welcome = frames[0] as RawFrame;
    assert.equal(welcome.type, FrameType.WELCOME, `expected WELCOME, got type ${welcome.type}`);
    assert.equal(rest.length, 0);
    const body = decode(welcome.payload) as { processors?: { crypto?: Uint8Array } };
    const proof = body.processors?.crypto;
    assert.ok(proof instanceof Uint8Array, "WELCOME carries the server's crypto proof");
    const context = { direction: 1, type: FrameType.WELCOME, streamId: 0, binding: sha256(hello) };
    assert.equal(openProof(key, context, Buffer.from(proof)).keyId, keyId, "the server answers with the client's key id");
    const peer = new CryptoPeer(socket, key, keyId, sha256(hello, welcome.payload), buffer.subarray(10 + buffer.readUInt32BE(0)));
    socket.resume();
    return peer;
  }

  /** Seals `frames` (joined) as this side's next record, without sending it. */
  record(frames: Uint8Array | readonly Uint8Array[], overrides: SealOverrides = {}): Buffer {
    const plaintext = frames instanceof Uint8Array ? frames : Buffer.concat(frames);
    return sealRecord(this.key, this.keyId, 0, this.sendSequence++, this.binding, plaintext, overrides);
  }

  /** Sends `frames` (joined) in this side's next record; returns the record's bytes. */
  send(...frames: Uint8Array[]): Buffer {
    const record = this.record(frames);
    this.socket.write(record);
    return record;
  }

  /** Writes raw bytes (a forged, replayed or reordered record, or no record at all). */
  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  private onBytes(chunk: Buffer): void {
    if (this.failed) return;
    this.bytes = Buffer.concat([this.bytes, chunk]);
    try {
      for (let i = 0; i < 100_000 && this.bytes.length >= 4; i++) {
        const length = this.bytes.readUInt32BE(0);
        assert.ok(length <= MAX_RECORD_SIZE, `the server sent a record of ${length} bytes, above the maximum`);
        if (this.bytes.length < 4 + length) break;
        const record = Buffer.from(this.bytes.subarray(0, 4 + length));
        this.bytes = this.bytes.subarray(4 + length);
        const sequence = this.received.length;
        this.received.push(record);
        this.plaintext = Buffer.concat([this.plaintext, openRecord(this.key, 1, sequence, this.binding, record.subarray(4))]);
        const { frames, rest } = splitFrames(this.plaintext);
        this.plaintext = rest;
        for (const f of frames) {
          assert.equal(f.flags & 0x02, 0, "no frame inside a record sets ENCRYPTED");
          this.inbox.push(f);
        }
      }
    } catch (error) {
      this.failed = true;
      this.inbox.fail(error as Error);
    }
  }

  /** The next frame (of `type`, if given, skipping PINGs) the server sent in its records; fails after `ms`. */
  nextFrame(type?: number, ms = 2000): Promise<RawFrame> {
    return this.inbox.next(type, ms);
  }

  /** The next frame of `type`, its payload decoded (MessagePack; empty payloads as undefined). */
  async next(type: number): Promise<{ frame: RawFrame; value: unknown }> {
    const f = await this.nextFrame(type);
    return { frame: f, value: f.payload.length === 0 ? undefined : decode(f.payload) };
  }

  /** The server's ERROR on stream 0 (a connection error, inside a record), decoded; then expects the close. */
  async connectionError(): Promise<{ code: string; message: string; data: unknown }> {
    const { frame: f, value } = await this.next(FrameType.ERROR);
    assert.equal(f.streamId, 0, "a connection error comes on stream 0");
    const [code, message, data] = value as [string, string, unknown];
    await this.expectClosed();
    return { code, message, data };
  }

  /** Asserts that the server closes the socket within `ms`. */
  async expectClosed(ms = 2000): Promise<void> {
    await within(this.closedPromise, ms, "server closing the connection");
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * Connects, writes `bytes`, and collects everything the server sends until
 * it closes the connection (within `ms`).
 */
export async function exchange(port: number, bytes: Uint8Array, ms = 3000): Promise<Buffer> {
  const socket = connect({ host: "127.0.0.1", port });
  socket.on("error", () => {});
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  socket.write(bytes);
  try {
    await within(closed, ms, "server closing the connection");
  } finally {
    socket.destroy();
  }
  return Buffer.concat(chunks);
}
