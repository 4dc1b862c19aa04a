import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type CallPayload, readCallPayload } from "../protocol/call-payload.js";
import { CallKind, type Metadata } from "../protocol/wire-messages.js";
import type { PeerInfo } from "./call-context.js";
import type { MethodEntry, Registry } from "./registry.js";
import { type CallHost, ServerCall } from "./server-call.js";
import { serverChannels } from "./diagnostics.js";
import { ServerSession } from "./session.js";

/** What dispatch needs beyond a {@link CallHost}. */
export interface DispatchHost extends CallHost {
  readonly registry: Registry;
  /** Who may call private methods. */
  readonly trustedPeer: (peer: PeerInfo) => boolean;
}

const NO_METADATA: Metadata = Object.freeze({}) as Metadata;

/**
 * Dispatches one complete CALL: parses its head, finds the method, enforces
 * the private flag and the stream limit, and only then decodes and validates
 * the arguments and runs the handler. Every failure is answered with an ERROR
 * frame on the call's stream; nothing here throws.

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
  if (connection.streamCount >= connection.limits.maxConcurrentStreams) {
    connection.sendError(
      streamId,
      new RpcError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `too many concurrent calls on this connection (limit ${connection.limits.maxConcurrentStreams})`,
      ),
    );
    return;
  }
  let args: unknown;
  try {
    args = connection.codec.decode(call.args);
  } catch (error) {
    connection.sendError(streamId, RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    return;
  }
  if (!Array.isArray(args)) {
    connection.sendError(streamId, new RpcError(ErrorCode.PROTOCOL_ERROR, `${method}: CALL arguments must be a MessagePack array`));
    return;
  }
  if (inputArg !== undefined && inputArg !== null && inputArg >= args.length) {
    connection.sendError(
      streamId,
      new RpcError(ErrorCode.PROTOCOL_ERROR, `${method}: streamed argument ${inputArg} is beyond the ${args.length} arguments sent`),
    );
    return;
  }
  const serverCall = new ServerCall(host, streamId, method, metadata ?? NO_METADATA, timeoutMs ?? undefined, session);
  connection.addStream(streamId, serverCall);
  if (inputArg !== undefined && inputArg !== null) args[inputArg] = serverCall.attachInput();
  if (wantsChannel) {
    // A channel handler gets the channel; arguments sent with the open are ignored.
    args.length = 0;
    args.push(serverCall.attachChannel());
  }
  if (timeoutMs === 0) {
    serverCall.fail(new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${method}: deadline already exceeded on arrival`));
    return;
  }
  if (entry.validate === undefined) {
    invoke(serverCall, entry, args);
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
      (valid) => invoke(serverCall, entry, valid),
      (error: unknown) => serverCall.fail(error),
    );
  } else invoke(serverCall, entry, checked);
}

/** A CALL of kind SESSION: its method field is the session id; it stays open until the client ends it. */
function openSession(host: DispatchHost, streamId: number, id: string): void {
  const connection = host.connection;
  if (connection.streamCount >= connection.limits.maxConcurrentStreams) {
    connection.sendError(
      streamId,
      new RpcError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `too many concurrent streams on this connection (limit ${connection.limits.maxConcurrentStreams})`,
      ),
    );
    return;
  }
  ServerSession.open(connection, streamId, id);
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
