import type { Connection, StreamReceiver } from "../protocol/connection.js";
import { FrameType } from "../protocol/frame.js";

/**
 * A client session as its handlers see it (`this.session`): the calls a
 * client made inside `client.session()`, all on one connection. `state` and
 * `onClose` hooks live as long as the session: until the client ends it or
 * its connection closes.
 */
export interface Session {
  /** The id the client chose (a UUID for rapt clients). */
  readonly id: string;
  /** Per-session state, cleared when the session ends. */
  readonly state: Map<unknown, unknown>;
  /** Whether the session has ended. */
  readonly closed: boolean;
  /** Runs `fn` when the session ends (at once if it has). Errors it throws are ignored. */
  onClose(fn: () => void): void;
}

const open = new WeakMap<Connection, Map<number, ServerSession>>();

/** A session's stream on the server (CALL of kind SESSION); see {@link Session}. */
export class ServerSession implements Session, StreamReceiver {
  readonly id: string;
  readonly state = new Map<unknown, unknown>();
  private readonly connection: Connection;
  private readonly streamId: number;
  private hooks: Array<() => void> = [];
  private ended = false;

  private constructor(connection: Connection, streamId: number, id: string) {
    this.connection = connection;
    this.streamId = streamId;
    this.id = id;
  }

  /** Registers a new session on `connection`'s stream `streamId`. */
  static open(connection: Connection, streamId: number, id: string): ServerSession {
    const session = new ServerSession(connection, streamId, id);
    let sessions = open.get(connection);
    if (sessions === undefined) {
      sessions = new Map();
      open.set(connection, sessions);
    }
    sessions.set(streamId, session);
    connection.addStream(streamId, session);
    return session;
  }

  /** The open session on `connection`'s stream `streamId`, if any. */
  static find(connection: Connection, streamId: number): ServerSession | undefined {
    return open.get(connection)?.get(streamId);
  }

  get closed(): boolean {
    return this.ended;
  }

  onClose(fn: () => void): void {
    if (this.ended) run(fn);
    else this.hooks.push(fn);
  }

  /** CANCEL from the client ends the session; nothing else is expected on its stream. */
  onMessage(type: number): void {
    if (type === FrameType.CANCEL) {
      this.connection.removeStream(this.streamId);
      this.end();
    }
  }

  onReset(): void {
    this.end();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    open.get(this.connection)?.delete(this.streamId);
    const hooks = this.hooks;
    this.hooks = [];
    for (const hook of hooks) run(hook);
    this.state.clear();
  }
}

function run(hook: () => void): void {
  try {
    hook();
  } catch {
    // A failing close hook must not keep the others from running.
  }
}
