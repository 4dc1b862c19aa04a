import { ErrorCode, RpcError } from "../protocol/rpc-error.js";

/** Throws INVALID_ARGUMENT unless `value` is an integer ≥ 0; returns it. */
export function checkCount(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer >= 0, got ${String(value)}`);
  }
  return value;
}

/** Throws INVALID_ARGUMENT unless `value` is a finite number of milliseconds ≥ 0; returns it. */
export function checkDuration(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${what} must be a number of milliseconds >= 0, got ${String(value)}`);
  }
  return value;
}
