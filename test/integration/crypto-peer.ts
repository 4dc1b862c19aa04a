/**
 * An encrypted raw peer for the crypto tests, written from PROTOCOL.md
 * ("Processors") with node:crypto alone, not from rapt's sources: it seals
 * and opens payloads byte by byte as documented, so the tests check the
 * documented layout as well as the server's rules. No tests here.
 */
import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { decode, encode } from "@msgpack/msgpack";
import { FrameType } from "../../src/protocol/frame.js";
import { PROTOCOL_VERSION } from "../../src/protocol/wire-messages.js";
import { RAW_LIMITS, type RawFrame, RawPeer, frame } from "./helpers.js";

/** ENCRYPTED and COMPRESSED flag bits. */
export const ENCRYPTED = 0x02;
export const COMPRESSED = 0x04;

/** The associated-data context of one payload. */
export interface SealContext {
  /** 0 client to server, 1 server to client. */
  direction: number;
  type: number;
  /** Processing flags (0 for the handshake proofs). */
  flags: number;
  streamId: number;
  /** 32 bytes: zeros for HELLO, SHA-256(HELLO) for WELCOME, SHA-256(HELLO || WELCOME) after. */
  binding: Buffer;
}

/** How to seal, beyond the documented defaults (for the tests' forgeries). */
export interface SealOverrides {
  timestamp?: number;
  nonce?: Buffer;
}

function aad(context: SealContext, header: Buffer): Buffer {
  const fixed = Buffer.alloc(7);
  fixed[0] = context.direction;
  fixed[1] = context.type;
  fixed[2] = context.flags;
  fixed.writeUInt32BE(context.streamId, 3);
  assert.equal(context.binding.length, 32);
  return Buffer.concat([fixed, context.binding, header]);
}

/** keyIdLength:u8 keyId nonce[12] timestamp:u64be ciphertext tag[16], AES-256-GCM. */
export function seal(key: Buffer, keyId: string, context: SealContext, plaintext: Uint8Array, overrides: SealOverrides = {}): Buffer {
  const id = Buffer.from(keyId, "utf8");
  const nonce = overrides.nonce ?? randomBytes(12);
  const timestamp = Buffer.alloc(8);
  timestamp.writeBigUInt64BE(BigInt(overrides.timestamp ?? Date.now()));
  const header = Buffer.concat([Buffer.from([id.length]), id, nonce, timestamp]);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  cipher.setAAD(aad(context, header));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([header, body, cipher.getAuthTag()]);
}

/** Opens what {@link seal} made; throws if it does not authenticate. */
export function open(key: Buffer, context: SealContext, payload: Buffer): { plaintext: Buffer; keyId: string; timestamp: number } {
  const idLength = payload[0] as number;
  const headerLength = 1 + idLength + 12 + 8;
  const header = payload.subarray(0, headerLength);
  const nonce = payload.subarray(1 + idLength, 13 + idLength);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  decipher.setAAD(aad(context, header));
  decipher.setAuthTag(payload.subarray(payload.length - 16));
  const plaintext = Buffer.concat([decipher.update(payload.subarray(headerLength, payload.length - 16)), decipher.final()]);
  return {
    plaintext,
    keyId: payload.toString("utf8", 1, 1 + idLength),
    timestamp: Number(payload.readBigUInt64BE(13 + idLength)),
  };
}

/** SHA-256 of the concatenated buffers. */
export function sha256(...parts: Uint8Array[]): Buffer {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest();
}

/** The HELLO a crypto client sends: its proof seals `{ metadata? }`. */
export function cryptoHello(key: Buffer, keyId: string, metadata?: Record<string, string>, overrides: SealOverrides = {}): Buffer {
  const context = { direction: 0, type: FrameType.HELLO, flags: 0, streamId: 0, binding: Buffer.alloc(32) };
  const proof = seal(key, keyId, context, encode(metadata === undefined ? {} : { metadata }), overrides);
  return Buffer.from(encode({ version: PROTOCOL_VERSION, limits: RAW_LIMITS, processors: { crypto: proof } }));
}

/** A raw peer that has completed an encrypted handshake and seals and opens frames by hand. */
export class CryptoPeer {
  readonly raw: RawPeer;
  readonly key: Buffer;
  readonly keyId: string;
  /** SHA-256(HELLO || WELCOME). */
  readonly binding: Buffer;
  /** The HELLO payload sent. */
  readonly hello: Buffer;

  private constructor(raw: RawPeer, key: Buffer, keyId: string, hello: Buffer, binding: Buffer) {
    this.raw = raw;
    this.key = key;
    this.keyId = keyId;
    this.hello = hello;
    this.binding = binding;
  }

  /** Connects, sends a crypto HELLO, checks the server's WELCOME proof. */
  static async open(port: number, key: Buffer, keyId: string, metadata?: Record<string, string>): Promise<CryptoPeer> {
    const raw = await RawPeer.connect(port);
    const hello = cryptoHello(key, keyId, metadata);
    raw.write(frame(FrameType.HELLO, 0, 0, hello));
    const welcome = await raw.next();
    assert.equal(welcome.type, FrameType.WELCOME, `expected WELCOME, got type ${welcome.type}`);
    const body = decode(welcome.payload) as { processors?: { crypto?: Uint8Array } };
    const proof = body.processors?.crypto;
    assert.ok(proof instanceof Uint8Array, "WELCOME carries the server's crypto proof");
    const context = { direction: 1, type: FrameType.WELCOME, flags: 0, streamId: 0, binding: sha256(hello) };
    const opened = open(key, context, Buffer.from(proof));
    assert.equal(opened.keyId, keyId, "the server answers with the client's key id");
    return new CryptoPeer(raw, key, keyId, hello, sha256(hello, welcome.payload));
  }

  /** A sealed frame from this client: flags ENCRYPTED (plus `extraFlags`), payload sealed for `type` and `streamId`. */
  frame(type: number, streamId: number, plaintext: Uint8Array, overrides: SealOverrides = {}, extraFlags = 0): Buffer {
    const flags = ENCRYPTED | extraFlags;
    const context = { direction: 0, type, flags: flags & (ENCRYPTED | COMPRESSED), streamId, binding: this.binding };
    return frame(type, flags, streamId, seal(this.key, this.keyId, context, plaintext, overrides));
  }

  /** Opens a frame from the server; throws if it does not authenticate. */
  openFrame(f: RawFrame): Buffer {
    assert.ok((f.flags & ENCRYPTED) !== 0, `frame of type ${f.type} on stream ${f.streamId} is not encrypted`);
    const context = { direction: 1, type: f.type, flags: f.flags & (ENCRYPTED | COMPRESSED), streamId: f.streamId, binding: this.binding };
    return open(this.key, context, f.payload).plaintext;
  }

  /** The next frame of `type` from the server, opened and decoded (MessagePack; empty payloads as undefined). */
  async next(type: number): Promise<{ frame: RawFrame; value: unknown }> {
    const f = await this.raw.next(type);
    const plaintext = this.openFrame(f);
    return { frame: f, value: plaintext.length === 0 ? undefined : decode(plaintext) };
  }

  /** The server's sealed ERROR on stream 0 (a connection error), decoded; then expects the close. */
  async connectionError(): Promise<{ code: string; message: string }> {
    const { frame: f, value } = await this.next(FrameType.ERROR);
    assert.equal(f.streamId, 0, "a connection error comes on stream 0");
    const [code, message] = value as [string, string];
    await this.raw.expectClosed();
    return { code, message };
  }

  destroy(): void {
    this.raw.destroy();
  }
}
