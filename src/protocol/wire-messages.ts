import type * as Typia from "typia";
import type { tags } from "typia";

// typia's calls below are replaced by inline validators at build time (its
// transform, through tspc). Importing the package for real would load all of
// it at run time (about 90 modules, 20 MB of RSS) for nothing, so only its
// type is declared here.
declare const typia: typeof Typia.default;
import { ErrorCode, RpcError, isErrorCode } from "./rpc-error.js";

/** The protocol version this implementation speaks. */
export const PROTOCOL_VERSION = 1;
/** Every version this implementation accepts in a HELLO. */
export const SUPPORTED_VERSIONS: readonly number[] = [PROTOCOL_VERSION];

/** Call and connection metadata: ASCII-ish string keys, string or binary values. */
export type Metadata = Record<string, string | Uint8Array>;

/** What one side accepts from the other; sent in HELLO and WELCOME. */
export interface Limits {
  /** Largest frame payload accepted; the peer fragments to fit. */
  maxFrameSize: number & tags.Type<"uint32"> & tags.Minimum<1024>;
  /** Largest reassembled message accepted. */
  maxMessageSize: number & tags.Type<"uint32"> & tags.Minimum<1024>;
  /** Most streams the peer may have open towards this side at once. */
  maxConcurrentStreams: number & tags.Type<"uint32"> & tags.Minimum<1>;
  /**
   * ITEMs the peer may send on each stream towards this side before it is
   * granted more with CREDIT. Absent means {@link DEFAULT_STREAM_WINDOW}.
   */
  streamWindow?: number & tags.Type<"uint32"> & tags.Minimum<1>;
  /**
   * Most items this side accepts in one ITEMS frame. Absent means it takes
   * no ITEMS frames: the peer sends each item in its own ITEM.
   */
  maxBatchItems?: number & tags.Type<"uint32"> & tags.Minimum<1>;
}

/** The stream window of a side that does not announce one. */
export const DEFAULT_STREAM_WINDOW = 64;

/** HELLO payload (MessagePack map), the client's first frame. */
export interface Hello {
  version: number & tags.Type<"uint32">;
  limits: Limits;
  /** Nil or absent for none, as in the CALL head. With a crypto offer it travels sealed inside the offer instead. */
  metadata?: Metadata | null;
  /** The processors the client offers (PROTOCOL.md, "Processors"). Absent means none. */
  processors?: HelloProcessors;
}

/** HELLO `processors`: what the client offers. Unknown keys are ignored. */
export interface HelloProcessors {
  /**
   * The crypto proof: an encrypted envelope (sealed under the client's key
   * for the HELLO context) whose plaintext is a {@link SealedHello}.
   */
  crypto?: Uint8Array;
  /** Compression algorithms the client can receive and send; rapt offers `["deflate-raw"]`. */
  compression?: Array<string & tags.MaxLength<64>> & tags.MaxItems<16>;
}

/** The plaintext of a HELLO crypto proof (MessagePack map): what the client sends sealed. */
export interface SealedHello {
  /** The connection metadata, sealed instead of in the clear. Nil or absent for none. */
  metadata?: Metadata | null;
}

/** WELCOME payload (MessagePack map), the server's answer to HELLO. */
export interface Welcome {
  version: number & tags.Type<"uint32">;
  connectionId: string;
  limits: Limits;
  /** The server's keepalive interval in ms, so the client knows how often to expect PINGs. */
  keepaliveInterval?: number & tags.Type<"uint32">;
  /** The processors the server accepted, from those the client offered. Absent means none. */
  processors?: WelcomeProcessors;
}

/** WELCOME `processors`: what the server accepted. Unknown keys are ignored. */
export interface WelcomeProcessors {
  /** The server's crypto proof: an envelope sealed under the client's key id, for the WELCOME context. */
  crypto?: Uint8Array;
  /** The compression algorithm both sides may use from now on, one of those offered. */
  compression?: string & tags.MaxLength<64>;
}

/**
 * The head of a CALL payload, a MessagePack array:
 * `[method, timeoutMs?, metadata?, inputArg?, kind?, session?]` (nil or absent for "none").
 * `inputArg` is the index of the argument whose values follow as ITEMs on
 * the call's stream (a client stream); that argument is sent as nil.
 */
export type CallHead = [
  method: string & tags.MinLength<1> & tags.MaxLength<256>,
  timeoutMs?: (number & tags.Type<"uint32">) | null,
  metadata?: Metadata | null,
  inputArg?: (number & tags.Type<"uint32"> & tags.Maximum<255>) | null,
  kind?: CallKind | null,
  session?: (number & tags.Type<"uint32"> & tags.Minimum<1>) | null,
];

/** CALL head `kind`: what the stream opens. Absent or nil means a call. */
export const CallKind = {
  /** A method call (unary or streaming). */
  CALL: 0,
  /** A duplex channel. */
  CHANNEL: 1,
  /** A session: the head's method is the session id; calls name the stream in `session`. */
  SESSION: 2,
  /** An event: the head's method is the event name; no answer, no stream opens. */
  EVENT: 3,
} as const;
/** One of the {@link CallKind} values. */
export type CallKind = (typeof CallKind)[keyof typeof CallKind];

/** ERROR payload: `[code, message, data?]`. */
export type ErrorBody = [code: string, message: string, data?: unknown];

/** GOAWAY payload: `[lastStreamId, code, message]`. */
export type Goaway = [lastStreamId: number & tags.Type<"uint32">, code: string, message: string];

const checkHello = typia.createValidate<Hello>();
const checkWelcome = typia.createValidate<Welcome>();
const checkSealedHello = typia.createValidate<SealedHello>();
const checkCallHead = typia.createValidate<CallHead>();
// The per-call checks run a plain type guard first: it allocates nothing,
// and the validator, which builds an error report, runs only to explain a failure.
const isCallHead = typia.createIs<CallHead>();
const isMetadata = typia.createIs<Metadata>();
const checkErrorBody = typia.createValidate<ErrorBody>();
const checkGoaway = typia.createValidate<Goaway>();
const checkMetadata = typia.createValidate<Metadata>();
const checkLimits = typia.createValidate<Limits>();

function invalid(what: string, result: Typia.IValidation.IFailure): RpcError {
  const first = result.errors[0];
  const where = first === undefined ? "" : `: ${first.path} should be ${first.expected}`;
  return new RpcError(ErrorCode.PROTOCOL_ERROR, `malformed ${what}${where}`, {
    errors: result.errors.slice(0, 5).map((e) => ({ path: e.path, expected: e.expected })),
  });
}

function check<T>(what: string, result: Typia.IValidation<T>): T {
  if (!result.success) throw invalid(what, result);
  return result.data;
}

/** Validates a decoded HELLO; PROTOCOL_ERROR naming the bad field otherwise. */
export const parseHello = (value: unknown): Hello => check("HELLO", checkHello(value));
/** Validates a decoded WELCOME. */
export const parseWelcome = (value: unknown): Welcome => check("WELCOME", checkWelcome(value));
/** Validates the decoded plaintext of a HELLO crypto proof. */
export const parseSealedHello = (value: unknown): SealedHello => check("sealed HELLO", checkSealedHello(value));
/** Validates a decoded CALL head. */
export const parseCallHead = (value: unknown): CallHead => (isCallHead(value) ? value : check("CALL head", checkCallHead(value)));
/** Validates a decoded GOAWAY. */
export const parseGoaway = (value: unknown): Goaway => check("GOAWAY", checkGoaway(value));

/** Checks metadata a user passes before it is sent; INVALID_ARGUMENT otherwise. */
export function assertMetadata(value: unknown): Metadata {
  if (isMetadata(value)) return value;
  const result = checkMetadata(value);
  if (result.success) return result.data;
  const first = result.errors[0];
  throw new RpcError(
    ErrorCode.INVALID_ARGUMENT,
    `metadata${first?.path.slice("$input".length) ?? ""} should be ${first?.expected ?? "string or Uint8Array"}`,
  );
}

/**
 * Checks the limits a server or client is configured with, before it
 * announces them: a peer refuses a handshake whose limits break PROTOCOL.md
 * §4.1, so every connection would fail. INVALID_ARGUMENT naming the field
 * otherwise.
 */
export function assertLimits(value: Record<string, unknown>): Limits {
  // A limit set to undefined is left out (not announced), not sent as nil:
  // `maxBatchItems: undefined` turns ITEMS frames towards this side off.
  for (const key of Object.keys(value)) if (value[key] === undefined) delete value[key];
  const result = checkLimits(value);
  if (result.success) return result.data;
  const first = result.errors[0];
  throw new RpcError(
    ErrorCode.INVALID_ARGUMENT,
    `limits${first?.path.slice("$input".length) ?? ""} should be ${first?.expected ?? "valid limits"} (PROTOCOL.md §4.1)`,
  );
}

/** Turns a decoded ERROR payload into the RpcError it carries; unknown codes become UNKNOWN. */
export function errorFromBody(value: unknown): RpcError {
  const body = check("ERROR", checkErrorBody(value));
  const [code, message, data] = body;
  return new RpcError(isErrorCode(code) ? code : ErrorCode.UNKNOWN, message, data);
}

/** The ERROR payload for `error`. */
export function errorToBody(error: RpcError): ErrorBody {
  return error.data === undefined ? [error.code, error.message] : [error.code, error.message, error.data];
}
