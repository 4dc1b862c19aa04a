import { type KeyObject, createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";
import { ErrorCode, RpcError } from "./rpc-error.js";

/*
 * The byte layout of an encrypted payload (PROTOCOL.md, "Processors"):
 *
 *     keyIdLength:u8  keyId[keyIdLength]  nonce[12]  timestamp:u64be  ciphertext  tag[16]
 *
 * sealed with AES-256-GCM under the key named by `keyId`, with a fresh
 * random nonce and the sender's clock (ms since the Unix epoch). The
 * associated data is the 39-byte {@link AAD_PREFIX_SIZE} context (direction,
 * frame type, processing flags, stream id, handshake binding) followed by
 * the envelope's header, everything before the ciphertext: so the frame
 * header, the key id, the nonce and the timestamp are authenticated with
 * the payload.
 */

/** Size of the random GCM nonce. */
export const NONCE_SIZE = 12;
/** Size of the GCM authentication tag. */
export const TAG_SIZE = 16;
/** Size of the timestamp (u64be ms since the epoch). */
export const TIMESTAMP_SIZE = 8;
/** Size of the handshake binding in the associated data (a SHA-256 digest, or zeros for HELLO). */
export const BINDING_SIZE = 32;
/** Size of the associated-data context before the envelope header: direction, type, flags, stream id, binding. */
export const AAD_PREFIX_SIZE = 7 + BINDING_SIZE;
/** Longest key id, in UTF-8 bytes. */
export const MAX_KEY_ID_BYTES = 255;

/** Which way a sealed payload travels; part of the associated data, so a payload cannot be reflected back. */
export const Direction = {
  CLIENT_TO_SERVER: 0x00,
  SERVER_TO_CLIENT: 0x01,
} as const;

/** Bytes an envelope adds to a payload sealed under a key id of `keyIdBytes` bytes. */
export function envelopeOverhead(keyIdBytes: number): number {
  return 1 + keyIdBytes + NONCE_SIZE + TIMESTAMP_SIZE + TAG_SIZE;
}

/** A new associated-data prefix for one direction and handshake binding; {@link setAadFrame} fills in each frame. */
export function aadPrefix(direction: number, binding: Uint8Array): Buffer {
  const prefix = Buffer.alloc(AAD_PREFIX_SIZE);
  prefix[0] = direction;
  prefix.set(binding, 7);
  return prefix;
}

/** Writes a frame's type, processing flags and stream id into an associated-data prefix. */
export function setAadFrame(prefix: Buffer, type: number, flags: number, streamId: number): Buffer {
  prefix[1] = type;
  prefix[2] = flags;
  prefix.writeUInt32BE(streamId, 3);
  return prefix;
}

/** The header fields of a received envelope, before it is opened. */
export interface EnvelopeHeader {
  readonly keyId: string;
  /** The nonce, as a latin1 string of its 12 bytes (a replay-cache key). */
  readonly nonceKey: string;
  readonly timestamp: number;
  /** Bytes before the ciphertext. */
  readonly length: number;
}

const RANDOM_POOL_SIZE = NONCE_SIZE * 512;
let randomPool = Buffer.alloc(0);
let randomUsed = 0;

/** Fills `target` with fresh random nonce bytes, taken from a pool refilled 512 nonces at a time. */
function fillNonce(target: Buffer, offset: number): void {
  if (randomUsed + NONCE_SIZE > randomPool.length) {
    randomPool = randomFillSync(Buffer.allocUnsafe(RANDOM_POOL_SIZE));
    randomUsed = 0;
  }
  randomPool.copy(target, offset, randomUsed, randomUsed + NONCE_SIZE);
  // Used bytes are wiped so that no nonce value stays in memory to be reused.
  randomPool.fill(0, randomUsed, randomUsed + NONCE_SIZE);
  randomUsed += NONCE_SIZE;
}

/**
 * Seals `plaintext` under `key` (named `keyId`, given as its UTF-8 bytes)
 * with a fresh random nonce and the timestamp `now`. `prefix` is the
 * associated-data context ({@link aadPrefix} with {@link setAadFrame}).
 */
export function sealEnvelope(key: KeyObject, keyId: Uint8Array, prefix: Uint8Array, plaintext: Uint8Array, now: number): Buffer {
  const headerLength = 1 + keyId.length + NONCE_SIZE + TIMESTAMP_SIZE;
  const out = Buffer.allocUnsafe(headerLength + plaintext.length + TAG_SIZE);
  out[0] = keyId.length;
  out.set(keyId, 1);
  const nonceAt = 1 + keyId.length;
  fillNonce(out, nonceAt);
  const timeAt = nonceAt + NONCE_SIZE;
  out.writeUInt32BE(Math.floor(now / 0x1_0000_0000), timeAt);
  out.writeUInt32BE(now >>> 0, timeAt + 4);
  const cipher = createCipheriv("aes-256-gcm", key, out.subarray(nonceAt, nonceAt + NONCE_SIZE), { authTagLength: TAG_SIZE });
  cipher.setAAD(prefix);
  cipher.setAAD(out.subarray(0, headerLength));
  const body = cipher.update(plaintext);
  out.set(body, headerLength);
  const tail = cipher.final();
  if (tail.length > 0) out.set(tail, headerLength + body.length);
  out.set(cipher.getAuthTag(), headerLength + plaintext.length);
  return out;
}

/**
 * Reads an envelope's header without opening it. Throws UNAUTHENTICATED,
 * naming `what`, when the payload is too short to be an envelope.
 */
export function readEnvelopeHeader(payload: Uint8Array, what: string): EnvelopeHeader {
  const keyIdLength = payload.length > 0 ? (payload[0] as number) : 0;
  const length = 1 + keyIdLength + NONCE_SIZE + TIMESTAMP_SIZE;
  if (keyIdLength === 0 || payload.length < length + TAG_SIZE) {
    throw new RpcError(
      ErrorCode.UNAUTHENTICATED,
      `${what} is not a valid encrypted payload (${payload.length} bytes, key id length ${keyIdLength}); it cannot be authenticated`,
    );
  }
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const nonceAt = 1 + keyIdLength;
  const timeAt = nonceAt + NONCE_SIZE;
  return {
    keyId: bytes.toString("utf8", 1, nonceAt),
    nonceKey: bytes.toString("latin1", nonceAt, timeAt),
    timestamp: bytes.readUInt32BE(timeAt) * 0x1_0000_0000 + bytes.readUInt32BE(timeAt + 4),
    length,
  };
}

/**
 * Opens an envelope whose header has been read: checks the tag over the
 * associated data (`prefix` then the header) and the ciphertext. Returns
 * the plaintext; throws UNAUTHENTICATED, naming `what`, when the tag does not match.
 */
export function openEnvelope(key: KeyObject, prefix: Uint8Array, payload: Uint8Array, header: EnvelopeHeader, what: string): Buffer {
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const nonceAt = header.length - NONCE_SIZE - TIMESTAMP_SIZE;
  const tagAt = bytes.length - TAG_SIZE;
  const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(nonceAt, nonceAt + NONCE_SIZE), { authTagLength: TAG_SIZE });
  decipher.setAAD(prefix);
  decipher.setAAD(bytes.subarray(0, header.length));
  decipher.setAuthTag(bytes.subarray(tagAt));
  const body = decipher.update(bytes.subarray(header.length, tagAt));
  try {
    const tail = decipher.final();
    return tail.length === 0 ? body : Buffer.concat([body, tail]);
  } catch {
    throw new RpcError(
      ErrorCode.UNAUTHENTICATED,
      `${what} failed authentication: it (or its frame header) was altered, or the sender's key "${header.keyId}" is not the same as this side's`,
    );
  }
}
