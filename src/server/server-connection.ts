import type { Socket } from "node:net";
import {
  Connection,
  ConnectionState,
  type ConnectionOptions,
  type ConnectionOwner,
  HANDSHAKE_MAX_FRAME_SIZE,
} from "../protocol/connection.js";
import { FrameType, frameTypeName } from "../protocol/frame.js";
import { nodeCrypto } from "../protocol/lazy-builtins.js";
import { type Processor, acceptProcessors, agreesOnRecords, startProcessors } from "../protocol/processor.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type Metadata, PROTOCOL_VERSION, SUPPORTED_VERSIONS, type Welcome, errorToBody, parseHello } from "../protocol/wire-messages.js";
import type { TLSSocket } from "node:tls";
import type { Endpoint } from "../protocol/endpoint.js";
import { type ConnectionInfo, type PeerInfo, peerOf } from "./call-context.js";
import {
  type ConnectionMiddleware,
  type ConnectionRefusedMessage,
  IncomingConnectionState,
  connectionRefusedChannel,
} from "./connection-middleware.js";
import { serverChannels } from "./diagnostics.js";
import { type DispatchHost, dispatchCall } from "./dispatch.js";
import type { Registry } from "./registry.js";
import type { CallMiddleware } from "./call-middleware.js";

/** The server-wide settings every connection shares. */
export interface ServerConnectionConfig {
  readonly registry: Registry;
  readonly connectionOptions: Omit<ConnectionOptions, "role">;
  readonly exposeErrors: boolean;
  readonly trustedPeer: (peer: PeerInfo) => boolean;
  /** The server's processors (crypto, compression), offered to every client that asks. */
  readonly processors: readonly Processor[];
  /** The server's connection middleware (a live list: each connection takes a copy when accepted). */
  readonly connectionMiddleware: readonly ConnectionMiddleware[];
  /** Called once the connection has closed. */
  readonly onClose: (connection: ServerConnection) => void;
  /** Creates per-connection state at the handshake (server option `connectionState`). */
  readonly connectionState: ((info: ConnectionInfo) => unknown) | undefined;
  /** The server's call middleware (a live list). */
  readonly callMiddleware: readonly CallMiddleware[];
  /** Authenticates each connection at its handshake (server option `authenticate`). */
  readonly authenticate: ((credentials: Credentials) => unknown) | undefined;
}

/** What the server's `authenticate` is given, once per connection, at its handshake. */
export interface Credentials {
  /** The client's handshake metadata (`ClientOptions.metadata`): where tokens go. */
  readonly metadata: Metadata;
  /** Who connected; on mutual TLS with the client's certificate. */
  readonly peer: PeerInfo;
  /** Server-assigned id of the connection. */
  readonly connectionId: string;
}

const EMPTY: Metadata = Object.freeze({}) as Metadata;

const serverOptionSets = new WeakMap<ServerConnectionConfig, ConnectionOptions>();

/** The options of a server's connections: one object per server, so its connections share what Connection derives from it. */
function serverOptions(config: ServerConnectionConfig): ConnectionOptions {
  let options = serverOptionSets.get(config);
  if (options === undefined) {
    options = { ...config.connectionOptions, role: "server" };
    serverOptionSets.set(config, options);
  }
  return options;
}

/**
 * The server's side of one accepted socket: runs the connection middleware,
 * answers HELLO, then dispatches calls.
 */
export class ServerConnection implements ConnectionOwner, DispatchHost {
  readonly connection: Connection;
  /**
   * The listener's endpoint until {@link peer} is first read, then the
   * PeerInfo made from it and the socket: most connections never need one
   * (only private functions, connection middleware, `connectionState`,
   * `authenticate` and diagnostics read it), and it cost an idle server
   * 56 bytes a connection.
   */
  private peerSource: PeerInfo | Endpoint;
  connectionMetadata: Metadata = EMPTY;
  /** What the `connectionState` factory made for this connection. */
  connectionState: unknown = undefined;
  /** What `authenticate` returned for this connection; undefined when not (yet) authenticated. */
  auth: unknown = undefined;
  /** True while an async `authenticate` runs (WELCOME waits for it). */
  private authenticating = false;
  /** Cleanups registered through `connectionState`'s onClose; made on first use. */
  private closeHooks: Array<() => void> | undefined;
  private readonly config: ServerConnectionConfig;
  /** Present while (and after) the connection middleware runs; undefined when the server has none. */
  private readonly incoming: IncomingConnectionState | undefined;

  /**
   * `listening` is the endpoint the socket came in on, `listener` its
   * address as `Server.addresses` lists it; {@link hasPeer} must have been
   * true for the socket.
   */
  constructor(socket: Socket, config: ServerConnectionConfig, listening: Endpoint, listener: string) {
    this.config = config;
    // A TLS peer's certificate is read while the socket is surely open.
    this.peerSource = (socket as TLSSocket).encrypted === true ? (peerOf(socket, listening) as PeerInfo) : listening;
    const chain = config.connectionMiddleware.length > 0 ? [...config.connectionMiddleware] : undefined;
    // Paused before the Connection subscribes to "data", which then does not
    // resume it: the HELLO (and anything after it) waits in the socket until
    // the chain has admitted the connection. The handshake timer runs from
    // now, so it also closes connections whose middleware never finishes.
    if (chain !== undefined) socket.pause();
    this.connection = new Connection(socket, this, serverOptions(config));
    if (chain !== undefined) {
      this.incoming = new IncomingConnectionState(socket, this.peer, listener);
      this.admit(chain, this.incoming).catch((error: unknown) => {
        this.connection.close(RpcError.from(error, ErrorCode.INTERNAL));
      });
    }
  }

  /** Runs the connection middleware; reads the socket if admitted, refuses the connection otherwise. */
  private async admit(chain: ConnectionMiddleware[], incoming: IncomingConnectionState): Promise<void> {
    const outcome = await incoming.run(chain, this.config.exposeErrors);
    // Closed meanwhile (handshake timeout, server shutdown, socket error): nothing to decide.
    if (outcome !== undefined && this.connection.state !== ConnectionState.CLOSED) {
      const { refusal, thrown } = outcome;
      if (connectionRefusedChannel.hasSubscribers) {
        const message: ConnectionRefusedMessage = {
          peer: this.peer,
          listener: incoming.listener,
          code: refusal.code,
          message: refusal.message,
          error: thrown,
        };
        connectionRefusedChannel.publish(message);
      }
      this.connection.fail(this.encodable(refusal));
    }
    // Admitted: the HELLO is read now. Refused or closed: what the client sent
    // is read and discarded (the decoder has stopped), so the socket closes
    // with a FIN, not with a reset over unread data.
    this.connection.socket.resume();
  }

  /**
   * `error` as one ERROR frame can carry it before the handshake: without
   * `data` that MessagePack cannot encode, and with the message cut to 1024
   * characters when the frame would pass the handshake frame limit.
   */
  private encodable(error: RpcError): RpcError {
    let size: number;
    try {
      size = this.connection.codec.encodeShared(errorToBody(error)).length;
    } catch {
      return new RpcError(error.code, error.message);
    }
    if (size <= HANDSHAKE_MAX_FRAME_SIZE) return error;
    return new RpcError(error.code, error.message.slice(0, 1024));
  }

  /** Who is on the other end. */
  get peer(): PeerInfo {
    const source = this.peerSource;
    if ("family" in source) return source;
    // The remote address was read at accept, so Node still has it after the socket closed.
    return (this.peerSource = peerOf(this.connection.socket, source) as PeerInfo);
  }

  get registry(): Registry {
    return this.config.registry;
  }

  get exposeErrors(): boolean {
    return this.config.exposeErrors;
  }

  get trustedPeer(): (peer: PeerInfo) => boolean {
    return this.config.trustedPeer;
  }

  get callMiddleware(): readonly CallMiddleware[] {
    return this.config.callMiddleware;
  }

  /** Starts a graceful shutdown; a connection still in its handshake is refused outright. */
  shutdown(reason: RpcError): void {
    if (this.connection.state === ConnectionState.HANDSHAKE) this.connection.fail(reason);
    else this.connection.goaway(reason);
  }

  onHandshake(type: number, payload: Buffer): void {
    if (type !== FrameType.HELLO) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `expected HELLO as the first frame, got ${frameTypeName(type)}`);
    }
    if (this.authenticating) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `unexpected ${frameTypeName(type)} frame while the server authenticates the HELLO`);
    }
    const connection = this.connection;
    const hello = parseHello(connection.codec.decode(payload));
    if (!SUPPORTED_VERSIONS.includes(hello.version)) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `unsupported protocol version ${hello.version}; this server supports version ${SUPPORTED_VERSIONS.join(", ")}`,
        { supported: [...SUPPORTED_VERSIONS] },
      );
    }
    // Throws what refuses the handshake: a crypto-only server and a HELLO
    // without a valid crypto proof (UNAUTHENTICATED).
    const accepted = acceptProcessors(
      this.config.processors,
      hello.processors as Readonly<Record<string, unknown>> | undefined,
      payload,
      connection.codec,
      hello.metadata !== undefined && hello.metadata !== null,
    );
    // With encryption, the client's next bytes are records (sealed under the
    // binding of a WELCOME that may still wait for authenticate).
    if (agreesOnRecords(accepted.agreements)) connection.expectRecords();
    this.connectionMetadata = accepted.metadata ?? hello.metadata ?? EMPTY;
    // node:crypto loads at the first handshake, not when rapt/server is imported.
    const id = nodeCrypto().randomUUID();
    this.createState(id);
    const pending = this.authenticate(id);
    if (pending === undefined) {
      this.welcome(id, payload, hello.limits, accepted);
      return;
    }
    // WELCOME waits for an async authenticate (within the handshake timeout).
    this.authenticating = true;
    pending.then(
      (auth) => {
        if (connection.state !== ConnectionState.HANDSHAKE) return;
        this.auth = auth;
        try {
          this.welcome(id, payload, hello.limits, accepted);
        } catch (error) {
          connection.fail(RpcError.from(error, ErrorCode.INTERNAL));
        }
      },
      (error: unknown) => connection.fail(this.authRefusal(error)),
    );
  }

  /** Sends WELCOME and opens the connection. */
  private welcome(
    id: string,
    hello: Buffer,
    limits: ReturnType<typeof parseHello>["limits"],
    accepted: ReturnType<typeof acceptProcessors>,
  ): void {
    const connection = this.connection;
    const keepalive = this.config.connectionOptions.keepalive;
    const welcome: Welcome = { version: PROTOCOL_VERSION, connectionId: id, limits: connection.limits };
    if (keepalive !== false) welcome.keepaliveInterval = keepalive.interval;
    if (accepted.answers !== undefined) welcome.processors = accepted.answers;
    // WELCOME goes out in the clear; with encryption, everything after it in records.
    const sent = connection.sendHandshake(FrameType.WELCOME, welcome);
    const chain = startProcessors(accepted.agreements, {
      role: "server",
      hello,
      welcome: sent,
      maxMessageSize: connection.limits.maxMessageSize,
    });
    connection.open(limits, id, chain);
    if (serverChannels.connectionOpen.hasSubscribers) serverChannels.connectionOpen.publish({ connectionId: id, peer: this.peer });
  }

  /**
   * Runs the `connectionState` factory before WELCOME goes out, so a factory
   * that throws refuses the handshake (its RpcError, else INTERNAL).
   */
  private createState(connectionId: string): void {
    const factory = this.config.connectionState;
    if (factory === undefined) return;
    const hooks = (this.closeHooks ??= []);
    try {
      this.connectionState = factory({
        peer: this.peer,
        connectionId,
        metadata: this.connectionMetadata,
        onClose: (fn) => hooks.push(fn),
      });
    } catch (error) {
      if (error instanceof RpcError) throw error;
      const message = this.config.exposeErrors && error instanceof Error ? error.message : "internal error";
      throw new RpcError(ErrorCode.INTERNAL, `connection state could not be created: ${message}`);
    }
  }

  /**
   * Runs `authenticate` with the handshake's credentials, before WELCOME: a
   * sync result is stored at once (undefined is returned); an async one is
   * returned for the handshake to wait for. A throw refuses the handshake.
   */
  private authenticate(connectionId: string): Promise<unknown> | undefined {
    const authenticate = this.config.authenticate;
    if (authenticate === undefined) return undefined;
    let result: unknown;
    try {
      result = authenticate({ metadata: this.connectionMetadata, peer: this.peer, connectionId });
    } catch (error) {
      throw this.authRefusal(error);
    }
    if (result instanceof Promise) return result as Promise<unknown>;
    this.auth = result;
    return undefined;
  }

  /** A thrown RpcError as it is; anything else UNAUTHENTICATED with its message. */
  private authRefusal(error: unknown): RpcError {
    if (error instanceof RpcError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new RpcError(ErrorCode.UNAUTHENTICATED, `authentication failed: ${message}`, undefined, { cause: error });
  }

  onCall(streamId: number, payload: Buffer): void {
    dispatchCall(this, streamId, payload);
  }

  onGoaway(): void {
    // The client is leaving; its open calls finish and the connection ends with them.
  }

  onClose(reason: RpcError): void {
    const hooks = this.closeHooks ?? [];
    this.closeHooks = undefined;
    for (const hook of hooks) {
      try {
        hook();
      } catch {
        // One failing cleanup must not keep the others from running.
      }
    }
    if (serverChannels.connectionClose.hasSubscribers) {
      serverChannels.connectionClose.publish({ connectionId: this.connection.id, peer: this.peer, reason });
    }
    this.config.onClose(this);
    if (this.incoming !== undefined) {
      // Closed while the chain may still run (handshake timeout, shutdown):
      // read and discard what is pending so the peer's FIN is seen and the
      // socket closes now, not when the close grace runs out.
      this.connection.socket.resume();
      this.incoming.markClosed(reason);
    }
  }
}
