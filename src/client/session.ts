import { nodeCrypto } from "../protocol/lazy-builtins.js";
import { AsyncLocalStorage } from "node:async_hooks";
import { encodeCallPayload } from "../protocol/call-payload.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import { FrameType } from "../protocol/frame.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { CallKind } from "../protocol/wire-messages.js";

/**
 * Created on the first session: AsyncLocalStorage turns on async context
 * tracking for the whole process, which programs without sessions should not
 * pay for.
 */
let storage: AsyncLocalStorage<SessionPin> | undefined;

/** The session whose callback is running (through any awaits), if any. */
export function activeSession(): SessionPin | undefined {
  return storage?.getStore();
}

/** Runs `fn` with `pin` as the active session of everything it starts. */
export function runInSession<T>(pin: SessionPin, fn: () => T): T {
  storage ??= new AsyncLocalStorage<SessionPin>();
  return storage.run(pin, fn);
}

/**
 * A session's hold on one connection: the session stream (CALL of kind
 * SESSION, its method field the session id) that the session's calls name in
 * their CALL head, so the server can keep per-session state until it ends.
 */
export class SessionPin implements StreamReceiver {
  /** The session id (a UUID). */
  readonly id = nodeCrypto().randomUUID();
  /** The client that opened it; a session pins only that client's calls. */
  readonly owner: object;
  readonly connection: Connection;
  /** The session's stream id, sent with each of its calls. */
  readonly streamId: number;
  private endedBy: RpcError | undefined;

  constructor(owner: object, connection: Connection) {
    this.owner = owner;
    this.connection = connection;
    const streamId = connection.nextStreamId();
    if (streamId < 0) throw new RpcError(ErrorCode.UNAVAILABLE, "connection has no stream ids left for a session");
    this.streamId = streamId;
    connection.addStream(streamId, this);
    connection.send(
      FrameType.CALL,
      streamId,
      encodeCallPayload(connection.codec, this.id, undefined, undefined, [], undefined, CallKind.SESSION),
      true,
    );
  }

  /** Why calls in this session cannot go out, or undefined while they can. */
  get unusable(): RpcError | undefined {
    if (this.endedBy !== undefined) return this.endedBy;
    if (!this.connection.isOpen) return new RpcError(ErrorCode.UNAVAILABLE, `session ${this.id}: its connection is no longer open`);
    return undefined;
  }

  /** Ends the session: the server releases its state. */
  end(): void {
    if (this.endedBy !== undefined) return;
    this.endedBy = new RpcError(ErrorCode.FAILED_PRECONDITION, `session ${this.id} has ended`);
    if (this.connection.isOpen) this.connection.cancelStream(this.streamId);
    this.connection.removeStream(this.streamId);
  }

  onMessage(type: number): void {
    // The server ends a session only by failing it (ERROR), e.g. a stream limit.
    if (type === FrameType.ERROR || type === FrameType.RESULT) {
      this.endedBy = new RpcError(ErrorCode.UNAVAILABLE, `session ${this.id} was closed by the server`);
      this.connection.removeStream(this.streamId);
    }
  }

  onReset(error: RpcError): void {
    this.endedBy = new RpcError(ErrorCode.UNAVAILABLE, `session ${this.id}: connection lost: ${error.message}`, undefined, {
      cause: error,
    });
  }
}
