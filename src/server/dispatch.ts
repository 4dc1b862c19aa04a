import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type CallPayload, readCallPayload } from "../protocol/call-payload.js";
import type { Connection } from "../protocol/connection.js";
import { CallKind, type Metadata } from "../protocol/wire-messages.js";
import type { PeerInfo } from "./call-context.js";
import type { MethodEntry, Registry } from "./registry.js";
import { type CallHost, ServerCall } from "./server-call.js";
import { serverChannels } from "./diagnostics.js";
import { ServerSession } from "./session.js";
import type { InboundStream } from "../protocol/inbound-stream.js";
import type { Channel } from "../protocol/channel.js";
import { type CallMiddleware, runCallChain } from "./call-middleware.js";

/** What dispatch needs beyond a {@link CallHost}. */
export interface DispatchHost extends CallHost {
  readonly registry: Registry;
  /** Who may call private methods. */
  readonly trustedPeer: (peer: PeerInfo) => boolean;
  /** The server's call middleware (a live list); undefined or empty for none. */
  readonly callMiddleware?: readonly CallMiddleware[];
}

const NO_METADATA: Metadata = Object.freeze({}) as Metadata;

/**
 * Dispatches one complete CALL, in this order: parses its head; finds the
 * session (FAILED_PRECONDITION) and the method (NOT_FOUND); enforces the
 * private flag (PERMISSION_DENIED), the kind (FAILED_PRECONDITION) and the
 * stream limit (RESOURCE_EXHAUSTED); fails a zero timeout; checks the
 * method's `auth` against the connection's (UNAUTHENTICATED,
 * PERMISSION_DENIED); only then decodes and validates the arguments
 * (PROTOCOL_ERROR, INVALID_ARGUMENT) and runs the call middleware around the
 * handler. Without call middleware and `auth`, nothing is allocated beyond
 * what a call always needs. Every failure is answered with an ERROR frame on
 * the call's stream; nothing here throws.
 */
export function dispatchCall(host: DispatchHost, streamId: number, payload: Buffer): void {
  const connection = host.connection;
  let call: CallPayload;
  try {
    call = readCallPayload(connection.codec, payload);
  } catch (error) {
    connection.sendError(streamId, RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    return;
  }
  const [method, timeoutMs, metadata, inputArg, kind, sessionStream] = call.head;
  if (kind === CallKind.SESSION) {
    openSession(host, streamId, method);
    return;
  }
  if (kind === CallKind.EVENT) {
    deliverEvent(host, streamId, method, metadata ?? NO_METADATA, call.args);
    return;
  }
  let session: ServerSession | undefined;
  if (sessionStream !== undefined && sessionStream !== null) {
    session = ServerSession.find(connection, sessionStream);
    if (session === undefined) {
      connection.sendError(
        streamId,
        new RpcError(ErrorCode.FAILED_PRECONDITION, `${method}: session stream ${sessionStream} is not open on this connection`),
      );
      return;
    }
  }
  const entry = host.registry.get(method);
  if (entry === undefined) {
    connection.sendError(streamId, new RpcError(ErrorCode.NOT_FOUND, `method "${method}" is not registered`));
    return;
  }
  if (entry.private && !host.trustedPeer(host.peer)) {
    connection.sendError(
      streamId,
      new RpcError(ErrorCode.PERMISSION_DENIED, `method "${method}" is private: callable only from trusted (local) peers`),
    );
    return;
  }
  const wantsChannel = kind === CallKind.CHANNEL;
  if (wantsChannel !== (entry.kind === "channel")) {
    const message = wantsChannel
      ? `"${method}" is a method, not a channel: call it with client.call() or client.stream()`
      : `"${method}" is a channel: open it with client.channel()`;
    connection.sendError(streamId, new RpcError(ErrorCode.FAILED_PRECONDITION, message));
    return;
  }
  if (refuseOverStreamLimit(connection, streamId)) return;
  const chain = host.callMiddleware;
  // Middleware may set metadata entries: the shared frozen empty one is replaced.
  const callMetadata = metadata ?? (chain !== undefined && chain.length > 0 ? {} : NO_METADATA);
  const serverCall = new ServerCall(host, streamId, method, callMetadata, timeoutMs ?? undefined, session);
  connection.addStream(streamId, serverCall);
  // Attached before the arguments are decoded (which may wait for auth), so
  // client-stream items and channel frames that arrive meanwhile are kept.
  const input = inputArg !== undefined && inputArg !== null ? serverCall.attachInput() : undefined;
  const channel = wantsChannel ? serverCall.attachChannel() : undefined;
  if (timeoutMs === 0) {
    serverCall.fail(new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${method}: deadline already exceeded on arrival`));
    return;
  }
  if (entry.auth === undefined) {
    decodeAndInvoke(host, serverCall, entry, call.args, inputArg ?? undefined, input, channel);
    return;
  }
  authorize(host, serverCall, entry).then(
    (refusal) => {
      if (refusal === undefined) decodeAndInvoke(host, serverCall, entry, call.args, inputArg ?? undefined, input, channel);
      else serverCall.fail(refusal);
    },
    (error: unknown) => serverCall.fail(error),
  );
}

/**
 * Checks the method's auth requirement against the connection's auth.
 * Resolves with the refusal, or undefined when the call may go on; rejects
 * with what a permission check threw.
 */
async function authorize(host: DispatchHost, call: ServerCall, entry: MethodEntry): Promise<RpcError | undefined> {
  const requirement = entry.auth;
  if (requirement === undefined || call.finished) return undefined;
  if (host.auth === undefined) {
    return new RpcError(ErrorCode.UNAUTHENTICATED, `method "${entry.name}" requires authentication`);
  }
  if (requirement === true) return undefined;
  const allowed = await requirement(host.auth, call);
  if (allowed === true) return undefined;
  return new RpcError(ErrorCode.PERMISSION_DENIED, `permission denied: this caller may not call "${entry.name}"`);
}

/** Decodes and validates the arguments and runs the handler, through the call middleware if any. */
function decodeAndInvoke(
  host: DispatchHost,
  serverCall: ServerCall,
  entry: MethodEntry,
  encodedArgs: Buffer,
  inputArg: number | undefined,
  input: InboundStream | undefined,
  channel: Channel | undefined,
): void {
  if (serverCall.finished) return;
  const method = entry.name;
  let args: unknown;
  try {
    args = host.connection.codec.decode(encodedArgs);
  } catch (error) {
    serverCall.fail(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    return;
  }
  if (!Array.isArray(args)) {
    serverCall.fail(new RpcError(ErrorCode.PROTOCOL_ERROR, `${method}: CALL arguments must be a MessagePack array`));
    return;
  }
  if (inputArg !== undefined && input !== undefined) {
    if (inputArg >= args.length) {
      serverCall.fail(
        new RpcError(ErrorCode.PROTOCOL_ERROR, `${method}: streamed argument ${inputArg} is beyond the ${args.length} arguments sent`),
      );
      return;
    }
    args[inputArg] = input;
  }
  if (channel !== undefined) {
    // A channel handler gets the channel; arguments sent with the open are ignored.
    args.length = 0;
    args.push(channel);
  }
  const chain = host.callMiddleware;
  const run =
    chain === undefined || chain.length === 0 ? invoke : (c: ServerCall, e: MethodEntry, a: unknown[]) => invokeThrough(chain, c, e, a);
  if (entry.validate === undefined) {
    run(serverCall, entry, args);
    return;
  }
  let checked: unknown[] | Promise<unknown[]>;
  try {
    checked = entry.validate(method, args);
  } catch (error) {
    serverCall.fail(error);
    return;
  }
  if (checked instanceof Promise) {
    checked.then(
      (valid) => run(serverCall, entry, valid),
      (error: unknown) => serverCall.fail(error),
    );
  } else run(serverCall, entry, checked);
}

/** Runs the handler inside the call middleware; answers once the whole chain has settled. */
function invokeThrough(chain: readonly CallMiddleware[], call: ServerCall, entry: MethodEntry, args: unknown[]): void {
  if (call.finished) return;
  // A snapshot: middleware added meanwhile applies to later calls only.
  runCallChain(
    [...chain],
    call,
    () => Promise.resolve(entry.fn.apply(call, args)),
    (error) => call.toRpcError(error),
  ).then(
    (value) => call.succeed(value),
    (error: unknown) => call.fail(error),
  );
}

/** A CALL of kind SESSION: its method field is the session id; it stays open until the client ends it. */
function openSession(host: DispatchHost, streamId: number, id: string): void {
  const connection = host.connection;
  if (refuseOverStreamLimit(connection, streamId)) return;
  ServerSession.open(connection, streamId, id);
}

/** Answers RESOURCE_EXHAUSTED when the connection already has as many open streams as its limit allows. */
function refuseOverStreamLimit(connection: Connection, streamId: number): boolean {
  const limit = connection.limits.maxConcurrentStreams;
  if (connection.streamCount < limit) return false;
  connection.sendError(
    streamId,
    new RpcError(ErrorCode.RESOURCE_EXHAUSTED, `too many concurrent calls on this connection (limit ${limit})`),
  );
  return true;
}

/**
 * An event (CALL of kind EVENT) runs its listeners and answers nothing, even
 * on failure: the sender does not wait. Listeners' errors and undecodable
 * arguments are published on the handler-error channel.
 */
function deliverEvent(host: DispatchHost, streamId: number, event: string, metadata: Metadata, encodedArgs: Buffer): void {
  const listeners = host.registry.listenersOf(event);
  if (listeners.length === 0) return;
  let args: unknown;
  try {
    args = host.connection.codec.decode(encodedArgs);
  } catch (error) {
    publishEventError(host, event, error);
    return;
  }
  if (!Array.isArray(args)) {
    publishEventError(host, event, new RpcError(ErrorCode.PROTOCOL_ERROR, `${event}: event arguments must be a MessagePack array`));
    return;
  }
  const context = new ServerCall(host, streamId, event, metadata, undefined);
  for (const listener of listeners) {
    try {
      const result = (listener as unknown as (...a: unknown[]) => unknown).apply(context, args);
      if (result instanceof Promise) result.catch((error: unknown) => publishEventError(host, event, error));
    } catch (error) {
      publishEventError(host, event, error);
    }
  }
}

function publishEventError(host: DispatchHost, event: string, error: unknown): void {
  if (serverChannels.handlerError.hasSubscribers) {
    serverChannels.handlerError.publish({ method: event, connectionId: host.connection.id, error });
  }
}

function invoke(call: ServerCall, entry: MethodEntry, args: unknown[]): void {
  if (call.finished) return;
  let result: unknown;
  try {
    result = entry.fn.apply(call, args);
  } catch (error) {
    call.fail(error);
    return;
  }
  if (typeof result === "object" && result !== null && typeof (result as PromiseLike<unknown>).then === "function") {
    (result as PromiseLike<unknown>).then(
      (value) => call.succeed(value),
      (error: unknown) => call.fail(error),
    );
    return;
  }
  call.succeed(result);
}
