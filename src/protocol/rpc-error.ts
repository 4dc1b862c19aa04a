/**
 * Stable error codes. They cross the wire as these exact strings (see
 * PROTOCOL.md, "Error codes"); a peer receiving a code outside this set treats
 * it as `UNKNOWN`.
 */
export const ErrorCode = {
  /** The caller cancelled the call (AbortSignal, `break` out of a stream). */
  CANCELLED: "CANCELLED",
  /** An error whose cause is not known; also any unrecognised code from the wire. */
  UNKNOWN: "UNKNOWN",
  /** The arguments did not pass the method's validator. */
  INVALID_ARGUMENT: "INVALID_ARGUMENT",
  /** The call's deadline passed before it completed. */
  DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
  /** No method of that name is registered. */
  NOT_FOUND: "NOT_FOUND",
  /** Something the call would create already exists (also duplicate registration). */
  ALREADY_EXISTS: "ALREADY_EXISTS",
  /** The caller may not call this method (for example a private method from a remote peer). */
  PERMISSION_DENIED: "PERMISSION_DENIED",
  /** A limit was hit: message size, concurrent streams, rate. */
  RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
  /** The system is not in a state required for the call. */
  FAILED_PRECONDITION: "FAILED_PRECONDITION",
  /** The peer does not implement what was asked (for example an unsupported frame). */
  UNIMPLEMENTED: "UNIMPLEMENTED",
  /** The handler failed; the server hides its details unless it opted in. */
  INTERNAL: "INTERNAL",
  /** The connection is down, being shut down, or could not be made. Safe to retry. */
  UNAVAILABLE: "UNAVAILABLE",
  /** The call needs credentials that were not given or were not accepted. */
  UNAUTHENTICATED: "UNAUTHENTICATED",
  /** The peer broke the protocol: malformed frame or structure, wrong version. */
  PROTOCOL_ERROR: "PROTOCOL_ERROR",
} as const;

/** One of the {@link ErrorCode} strings. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/** Whether `code` is one of the stable {@link ErrorCode} strings. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && KNOWN_CODES.has(code);
}

/**
 * The one error type of rapt. Thrown by a handler it crosses the wire as it is
 * (code, message, data) and is rethrown as an `RpcError` on the caller's side.
 * Its stack never crosses the wire.
 */
export class RpcError extends Error {
  override readonly name = "RpcError";
  /** Stable code; compare against {@link ErrorCode}. */
  readonly code: ErrorCode;
  /** Optional structured details; must be MessagePack-encodable to cross the wire. */
  readonly data: unknown;

  constructor(code: ErrorCode, message: string, data?: unknown, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.data = data;
  }

  /** Wraps any thrown value; an `RpcError` is returned unchanged. */
  static from(error: unknown, code: ErrorCode = ErrorCode.UNKNOWN): RpcError {
    if (error instanceof RpcError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new RpcError(code, message, undefined, { cause: error });
  }
}
