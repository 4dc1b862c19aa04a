import type { MsgpackCodec } from "./msgpack-codec.js";
import { ErrorCode, RpcError } from "./rpc-error.js";
import { type CallHead, type CallKind, type Metadata, parseCallHead } from "./wire-messages.js";

/** The largest timeout that fits the CALL head's uint32. */
export const MAX_TIMEOUT_MS = 0xffff_ffff;

/**
 * Builds a CALL payload: `headLength:u32be head:msgpack args:msgpack-array`.
 * The head comes first with its own length so a receiver can route, check
 * permissions and refuse a call before it decodes a byte of the arguments.
 */
export function encodeCallPayload(
  codec: MsgpackCodec,
  method: string,
  timeoutMs: number | undefined,
  metadata: Metadata | undefined,
  args: readonly unknown[],
  inputArg?: number,
  kind?: CallKind,
  session?: number,
): Buffer {
  const head: unknown[] =
    session !== undefined
      ? [method, timeoutMs ?? null, metadata ?? null, inputArg ?? null, kind ?? null, session]
      : kind !== undefined
        ? [method, timeoutMs ?? null, metadata ?? null, inputArg ?? null, kind]
        : inputArg !== undefined
          ? [method, timeoutMs ?? null, metadata ?? null, inputArg]
          : metadata !== undefined
            ? [method, timeoutMs ?? null, metadata]
            : timeoutMs !== undefined
              ? [method, timeoutMs]
              : [method];
  const headBytes = Buffer.from(codec.encodeShared(head));
  const argsBytes = codec.encodeShared(args);
  const payload = Buffer.allocUnsafe(4 + headBytes.length + argsBytes.length);
  payload.writeUInt32BE(headBytes.length, 0);
  payload.set(headBytes, 4);
  payload.set(argsBytes, 4 + headBytes.length);
  return payload;
}

/** A CALL payload split into its validated head and the still-encoded arguments. */
export interface CallPayload {
  head: CallHead;
  args: Buffer;
}

/** Splits and validates a CALL payload's head; PROTOCOL_ERROR naming the problem otherwise. */
export function readCallPayload(codec: MsgpackCodec, payload: Buffer): CallPayload {
  if (payload.length < 4) {
    throw new RpcError(ErrorCode.PROTOCOL_ERROR, `CALL payload of ${payload.length} bytes is shorter than its 4-byte head length`);
  }
  const headLength = payload.readUInt32BE(0);
  const argsStart = 4 + headLength;
  if (argsStart > payload.length) {
    throw new RpcError(ErrorCode.PROTOCOL_ERROR, `CALL head length ${headLength} overruns the ${payload.length}-byte payload`);
  }
  return { head: parseCallHead(codec.decode(payload.subarray(4, argsStart))), args: payload.subarray(argsStart) };
}
