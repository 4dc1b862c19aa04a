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
  const prefix = encodeCallPrefix(codec, method, timeoutMs, metadata, inputArg, kind, session);
  const argsBytes = codec.encodeShared(args);
  const payload = Buffer.allocUnsafe(prefix.length + argsBytes.length);
  payload.set(prefix, 0);
  payload.set(argsBytes, prefix.length);
  return payload;
}

/**
 * Prefixes of heads that are a method name alone, by name: most calls carry
 * no timeout or metadata, and theirs is the same every time (encoding it
 * was a head array, a MessagePack encoding and a buffer per call). Cleared
 * when full, so a process calling ever new names holds at most this many.
 */
const methodPrefixes = new Map<string, Buffer>();
const MAX_METHOD_PREFIXES = 1024;

/**
 * The first part of a CALL payload, `headLength:u32be head`; the arguments
 * follow it on the wire. Senders that can write both parts straight into a
 * frame ({@link Connection.sendParts}) skip joining them. The buffer may be
 * shared by calls (a head that is the method name alone): read it, never
 * write to it.
 */
export function encodeCallPrefix(
  codec: MsgpackCodec,
  method: string,
  timeoutMs: number | undefined,
  metadata: Metadata | undefined,
  inputArg?: number,
  kind?: CallKind,
  session?: number,
): Buffer {
  if (timeoutMs === undefined && metadata === undefined && inputArg === undefined && kind === undefined && session === undefined) {
    let prefix = methodPrefixes.get(method);
    if (prefix === undefined) {
      prefix = buildCallPrefix(codec, [method]);
      if (methodPrefixes.size >= MAX_METHOD_PREFIXES) methodPrefixes.clear();
      methodPrefixes.set(method, prefix);
    }
    return prefix;
  }
  const head: unknown[] =
    session !== undefined
      ? [method, timeoutMs ?? null, metadata ?? null, inputArg ?? null, kind ?? null, session]
      : kind !== undefined
        ? [method, timeoutMs ?? null, metadata ?? null, inputArg ?? null, kind]
        : inputArg !== undefined
          ? [method, timeoutMs ?? null, metadata ?? null, inputArg]
          : metadata !== undefined
            ? [method, timeoutMs ?? null, metadata]
            : [method, timeoutMs];
  return buildCallPrefix(codec, head);
}

function buildCallPrefix(codec: MsgpackCodec, head: unknown[]): Buffer {
  const headBytes = codec.encodeShared(head);
  const prefix = Buffer.allocUnsafe(4 + headBytes.length);
  prefix.writeUInt32BE(headBytes.length, 0);
  prefix.set(headBytes, 4);
  return prefix;
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
