import type { CipherGCM, KeyObject } from "node:crypto";
import { nodeCrypto } from "./lazy-builtins.js";
import { ErrorCode, RpcError } from "./rpc-error.js";

/*
 * The byte layout of a sealed envelope (PROTOCOL.md, "Processors"):
 *
 *     keyIdLength:u8  keyId[keyIdLength]  nonce[12]  timestamp:u64be  ciphertext  tag[16]
 *
 * sealed with AES-256-GCM under the key named by `keyId`, with a fresh
 * random nonce and the sender's clock (ms since the Unix epoch). The
 * associated data are a context prefix followed by the envelope's header
 * (everything before the ciphertext), so the key id, the nonce and the
 * timestamp are authenticated with the plaintext.
 *
 * Two things are envelopes:
 *
 * - the handshake proofs (HELLO and WELCOME `processors.crypto`), whose
 *   prefix is the 39-byte {@link proofAad}: direction, frame type, flags,
 *   stream id, binding;
 * - the records that carry everything after an encrypted handshake, each
 *   preceded on the wire by `recordLength:u32be`, whose prefix is the 41-byte
 *   {@link recordAad}: direction, sequence number, binding.
 */

/** Size of the random GCM nonce. */
export const NONCE_SIZE = 12;
/** Size of the GCM authentication tag. */
export const TAG_SIZE = 16;
/** Size of the timestamp (u64be ms since the epoch). */
export const TIMESTAMP_SIZE = 8;
/** Size of the handshake binding in the associated data (a SHA-256 digest, or zeros for HELLO). */
export const BINDING_SIZE = 32;
/** Size of a handshake proof's associated-data context: direction, type, flags, stream id, binding. */
export const PROOF_AAD_SIZE = 7 + BINDING_SIZE;
/** Size of a record's associated-data context: direction, sequence (u64be), binding. */
export const RECORD_AAD_SIZE = 9 + BINDING_SIZE;
/** Longest key id, in UTF-8 bytes. */
export const MAX_KEY_ID_BYTES = 255;
/** Size of the `recordLength` prefix of a record. */
export const RECORD_LENGTH_SIZE = 4;
/** Most plaintext bytes in one record (256 KiB); a larger write batch is split into several records. */
export const MAX_RECORD_PLAINTEXT = 256 * 1024;
/** Most bytes an envelope adds to its plaintext: a 255-byte key id. */
export const MAX_ENVELOPE_OVERHEAD = 1 + MAX_KEY_ID_BYTES + NONCE_SIZE + TIMESTAMP_SIZE + TAG_SIZE;
/** Largest `recordLength` a receiver accepts. */
export const MAX_RECORD_SIZE = MAX_RECORD_PLAINTEXT + MAX_ENVELOPE_OVERHEAD;
/** Smallest `recordLength` that can be a record: a 1-byte key id and no plaintext. */
export const MIN_RECORD_SIZE = 1 + 1 + NONCE_SIZE + TIMESTAMP_SIZE + TAG_SIZE;

/** Which way an envelope travels; part of the associated data, so nothing can be reflected back to its sender. */
export const Direction = {
  CLIENT_TO_SERVER: 0x00,
  SERVER_TO_CLIENT: 0x01,
} as const;

/** Bytes an envelope adds to a plaintext sealed under a key id of `keyIdBytes` bytes. */
export function envelopeOverhead(keyIdBytes: number): number {
  return 1 + keyIdBytes + NONCE_SIZE + TIMESTAMP_SIZE + TAG_SIZE;
}

/** The associated-data context of a handshake proof: direction, frame type, flags, stream id, binding. */
export function proofAad(direction: number, type: number, flags: number, streamId: number, binding: Uint8Array): Buffer {
  const prefix = Buffer.alloc(PROOF_AAD_SIZE);
  prefix[0] = direction;
  prefix[1] = type;
  prefix[2] = flags;
  prefix.writeUInt32BE(streamId, 3);
  prefix.set(binding, 7);
  return prefix;
}

/** A new record associated-data context for one direction and handshake binding, at sequence 0 ({@link setRecordSequence} moves it on). */
export function recordAad(direction: number, binding: Uint8Array): Buffer {
  const prefix = Buffer.alloc(RECORD_AAD_SIZE);
  prefix[0] = direction;
  prefix.set(binding, 9);
  return prefix;
}

/** Writes a record's sequence number (below 2^53) into its associated-data context. */
export function setRecordSequence(prefix: Buffer, sequence: number): Buffer {
  prefix.writeUInt32BE(Math.floor(sequence / 0x1_0000_0000), 1);
  prefix.writeUInt32BE(sequence >>> 0, 5);
  return prefix;
}

/** HKDF `info` of a record key, before the direction byte. */
export const RECORD_KEY_INFO = "rapt record key";

/**
 * The key that seals one direction's records on one connection:
 * HKDF-SHA256 of the shared key, with the handshake binding as salt and
 * `"rapt record key"` plus the direction byte as info (PROTOCOL.md §13.3).
 * Every connection and direction gets a key of its own, so the random
 * nonces of records count against that key only, not against the budget of
 * a key shared by a whole fleet.
 */
export function recordKey(sharedKey: KeyObject, binding: Uint8Array, direction: number): KeyObject {
  const info = Buffer.concat([Buffer.from(RECORD_KEY_INFO, "latin1"), Buffer.from([direction])]);
  const { createSecretKey, hkdfSync } = nodeCrypto();
  return createSecretKey(Buffer.from(hkdfSync("sha256", sharedKey, binding, info, 32)));
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
    randomPool = nodeCrypto().randomFillSync(Buffer.allocUnsafe(RANDOM_POOL_SIZE));
    randomUsed = 0;
  }
  randomPool.copy(target, offset, randomUsed, randomUsed + NONCE_SIZE);
  // Used bytes are wiped so that no nonce value stays in memory to be reused.
  randomPool.fill(0, randomUsed, randomUsed + NONCE_SIZE);
  randomUsed += NONCE_SIZE;
}

/**
 * Writes an envelope header (key id, a fresh nonce, the timestamp `now`) at
 * `out[at]` and returns the cipher that seals the plaintext after it, its
 * associated data (`prefix` then that header) already given.
 */
function startCipher(out: Buffer, at: number, key: KeyObject, keyId: Uint8Array, prefix: Uint8Array, now: number): CipherGCM {
  const headerLength = 1 + keyId.length + NONCE_SIZE + TIMESTAMP_SIZE;
  out[at] = keyId.length;
  out.set(keyId, at + 1);
  const nonceAt = at + 1 + keyId.length;
  fillNonce(out, nonceAt);
  const timeAt = nonceAt + NONCE_SIZE;
  out.writeUInt32BE(Math.floor(now / 0x1_0000_0000), timeAt);
  out.writeUInt32BE(now >>> 0, timeAt + 4);
  const cipher = nodeCrypto().createCipheriv("aes-256-gcm", key, out.subarray(nonceAt, nonceAt + NONCE_SIZE), { authTagLength: TAG_SIZE });
  cipher.setAAD(prefix);
  cipher.setAAD(out.subarray(at, at + headerLength));
  return cipher;
}

/**
 * Seals the concatenation of `parts` (`length` bytes in all) into one
 * envelope written at `out[at]`, which has room for it. The parts go
 * through the cipher one after the other, so a batch of frames is sealed
 * without being joined first.
 */
function sealInto(
  out: Buffer,
  at: number,
  key: KeyObject,
  keyId: Uint8Array,
  prefix: Uint8Array,
  parts: readonly Uint8Array[],
  length: number,
  now: number,
): void {
  const headerLength = 1 + keyId.length + NONCE_SIZE + TIMESTAMP_SIZE;
  const cipher = startCipher(out, at, key, keyId, prefix, now);
  let written = at + headerLength;
  for (const part of parts) {
    const body = cipher.update(part);
    out.set(body, written);
    written += body.length;
  }
  const tail = cipher.final();
  if (tail.length > 0) out.set(tail, written);
  out.set(cipher.getAuthTag(), at + headerLength + length);
}

/**
 * Seals `plaintext` under `key` (named `keyId`, given as its UTF-8 bytes)
 * with a fresh random nonce and the timestamp `now`. `prefix` is the
 * associated-data context ({@link proofAad}).
 */
export function sealEnvelope(key: KeyObject, keyId: Uint8Array, prefix: Uint8Array, plaintext: Uint8Array, now: number): Buffer {
  const out = Buffer.allocUnsafe(envelopeOverhead(keyId.length) + plaintext.length);
  sealInto(out, 0, key, keyId, prefix, [plaintext], plaintext.length, now);
  return out;
}

/** Records with more plaintext than this go out as several chunks instead of being copied into one buffer. */
const GATHER_LIMIT = 16 * 1024;

/**
 * Seals the concatenation of `parts` (`length` bytes in all, at most
 * {@link MAX_RECORD_PLAINTEXT}) into one record, `recordLength` prefix
 * included, and appends it to `out`, ready to write: as one buffer when it
 * is small, and otherwise as the header, the cipher's outputs and the tag,
 * so that a large record's ciphertext is not copied once more. `prefix` is
 * the record's associated-data context ({@link recordAad} with its sequence
 * number set).
 */
export function sealRecord(
  key: KeyObject,
  keyId: Uint8Array,
  prefix: Uint8Array,
  parts: readonly Uint8Array[],
  length: number,
  now: number,
  out: Uint8Array[],
): void {
  const bodyLength = envelopeOverhead(keyId.length) + length;
  if (length <= GATHER_LIMIT) {
    const record = Buffer.allocUnsafe(RECORD_LENGTH_SIZE + bodyLength);
    record.writeUInt32BE(bodyLength, 0);
    sealInto(record, RECORD_LENGTH_SIZE, key, keyId, prefix, parts, length, now);
    out.push(record);
    return;
  }
  const headerLength = 1 + keyId.length + NONCE_SIZE + TIMESTAMP_SIZE;
  const head = Buffer.allocUnsafe(RECORD_LENGTH_SIZE + headerLength);
  head.writeUInt32BE(bodyLength, 0);
  const cipher = startCipher(head, RECORD_LENGTH_SIZE, key, keyId, prefix, now);
  out.push(head);
  for (const part of parts) {
    const body = cipher.update(part);
    if (body.length > 0) out.push(body);
  }
  const tail = cipher.final();
  out.push(tail.length === 0 ? cipher.getAuthTag() : Buffer.concat([tail, cipher.getAuthTag()]));
}

/**
 * Reads an envelope's header without opening it. Throws UNAUTHENTICATED,
 * naming `what`, when the bytes are too short to be an envelope.
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
 * the plaintext, or undefined when the tag does not match (the caller
 * words the refusal: what failing means depends on what was sealed).
 */
export function openEnvelope(key: KeyObject, prefix: Uint8Array, payload: Uint8Array, header: EnvelopeHeader): Buffer | undefined {
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const nonceAt = header.length - NONCE_SIZE - TIMESTAMP_SIZE;
  const tagAt = bytes.length - TAG_SIZE;
  const decipher = nodeCrypto().createDecipheriv("aes-256-gcm", key, bytes.subarray(nonceAt, nonceAt + NONCE_SIZE), {
    authTagLength: TAG_SIZE,
  });
  decipher.setAAD(prefix);
  decipher.setAAD(bytes.subarray(0, header.length));
  decipher.setAuthTag(bytes.subarray(tagAt));
  const body = decipher.update(bytes.subarray(header.length, tagAt));
  try {
    const tail = decipher.final();
    return tail.length === 0 ? body : Buffer.concat([body, tail]);
  } catch {
    return undefined;
  }
}
