import { ErrorCode, RpcError } from "./rpc-error.js";

/** The most credit a sender holds: CREDIT counts are u32, and so is what they add up to (more is clamped). */
export const MAX_CREDIT = 0xffff_ffff;

/** Encodes a CREDIT payload: `n:u32be`, the number of further ITEMs the receiver may be sent. */
export function encodeCredit(n: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(n, 0);
  return payload;
}

/** Decodes a CREDIT payload; PROTOCOL_ERROR unless it is 4 bytes holding n >= 1. */
export function decodeCredit(payload: Buffer): number {
  const n = payload.length === 4 ? payload.readUInt32BE(0) : 0;
  if (n === 0) {
    throw new RpcError(ErrorCode.PROTOCOL_ERROR, `malformed CREDIT: expected a 4-byte count of at least 1, got ${payload.length} bytes`);
  }
  return n;
}
