import { lstatSync, unlinkSync } from "node:fs";
import { type Server as NetServer, type Socket, connect, createServer } from "node:net";
import { createRequire } from "node:module";
import type * as Tls from "node:tls";
import { DEFAULT_LIMITS } from "../protocol/connection.js";
import { type Endpoint, formatEndpoint, parseEndpoint } from "../protocol/endpoint.js";
import { DEFAULT_KEEPALIVE, type KeepaliveOptions } from "../protocol/keepalive.js";
import type { CodecLimits } from "../protocol/msgpack-codec.js";
import { type Processor, checkProcessors } from "../protocol/processor.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type Limits, assertLimits } from "../protocol/wire-messages.js";
import type { Remote } from "../client/remote.js";
import { type ConnectionInfo, type PeerInfo, hasPeer, isLoopbackPeer } from "./call-context.js";
import { remoteOf } from "./server-call.js";
import type { ConnectionMiddleware } from "./connection-middleware.js";
import type { CallMiddleware } from "./call-middleware.js";
import { type ChannelHandler, type Handler, type RegisterOptions, type RegisterServiceOptions, Registry } from "./registry.js";
import { type Credentials, ServerConnection, type ServerConnectionConfig } from "./server-connection.js";

/**
 * node:tls, loaded on the first TLS listen: a plain-TCP server (most, and
 * every one behind a TLS-terminating proxy) need not carry it (about 0.5 MB
 * of RSS). require() because listen is synchronous up to its promise.
 */
let tlsModule: typeof Tls | undefined;
function loadTls(): typeof Tls {
  return (tlsModule ??= createRequire(import.meta.url)("node:tls") as typeof Tls);
}

/** Lifecycle hook names, as rap's start and stop events. */
export type ServerHookName = "beforeStart" | "afterStart" | "beforeStop" | "afterStop";
/** A lifecycle hook; the server awaits it. */
export type ServerHook = (server: Server) => void | Promise<void>;

/** Options of a {@link Server}. */
export interface ServerOptions {
  /**
   * Creates state for each connection at its handshake (as tino's
   * ConnState); handlers see it as `this.connectionState`. Register cleanup
   * with `info.onClose`. A factory that throws refuses the connection.
   * Default: none.
   */
  connectionState?: (info: ConnectionInfo) => unknown;
  /** What the server accepts from each client. Defaults: 1 MiB frames, 64 MiB messages, 10,000 concurrent calls per connection. */
  limits?: Partial<Limits>;
  /** PINGs to a silent peer and its timeout; `false` turns them off. Default a PING after 10 s without traffic, drop after 30 s of silence. */
  keepalive?: Partial<KeepaliveOptions> | false;
  /** Milliseconds a new connection has to send its HELLO. Default 10,000. */
  handshakeTimeout?: number;
  /**
   * Send the message of errors that are not RpcErrors to the caller (as
   * INTERNAL). Default false: the caller sees "internal error". Stacks never
   * cross the wire.
   */
  exposeErrors?: boolean;
  /** Who may call private methods. Default: loopback addresses and Unix sockets. */
  trustedPeer?: (peer: PeerInfo) => boolean;
  /** Largest frame payload the server sends. Default 64 KiB. */
  fragmentSize?: number;
  /** MessagePack decode limits; see {@link CodecLimits}. */
  codec?: CodecLimits;
  /** Lifecycle hooks, awaited in order of registration. */
  hooks?: Partial<Record<ServerHookName, ServerHook>>;
  /**
   * Connection middleware, run in order on every accepted connection before
   * its handshake; see {@link ConnectionMiddleware} and
   * {@link Server.useConnection}. Default none.
   */
  connectionMiddleware?: readonly ConnectionMiddleware[];
  /**
   * Call middleware, run in order around every call, streaming call and
   * channel open, after its auth check and argument validation; see
   * {@link CallMiddleware} and {@link Server.useCall}. Default none.
   */
  callMiddleware?: readonly CallMiddleware[];
  /**
   * Authenticates each connection once, at its handshake, from the client's
   * handshake metadata (`ClientOptions.metadata`) and peer. What it returns
   * is the caller's identity: every call's `this.auth` (undefined means not
   * authenticated; methods registered with `auth` then refuse the call with
   * UNAUTHENTICATED). It runs after the `connectionState` factory and before
   * WELCOME: an async one holds the handshake until it settles (within
   * `handshakeTimeout`), so no call runs before the connection's identity is
   * known. A throw or rejection refuses the handshake: an RpcError as it is,
   * anything else UNAUTHENTICATED "authentication failed: <message>"; the
   * client's `connect()` and pending calls reject with it. Default none:
   * `this.auth` is undefined.
   */
  authenticate?: (credentials: Credentials) => unknown;
  /**
   * Payload processors offered to every client: `crypto(...)` (AES-256-GCM,
   * by default required of every client) and `compression(...)`, from
   * `rapt/plugin`; at most one of each, in any order (compression always
   * runs before encryption). Default none. See PROTOCOL.md, "Processors".
   */
  processors?: readonly Processor[];
}

/**
 * TLS settings of a listener: Node's `tls.createServer` options (`key`,
 * `cert`, `ca`, `requestCert`, `rejectUnauthorized`, `minVersion`, ...).
 * For mutual TLS set `requestCert: true` and `ca` to the CA that issues
 * client certificates; `rejectUnauthorized` (default true) then refuses
 * clients without a valid one in the TLS handshake, and connection
 * middleware and handlers see the client's certificate on `peer.certificate`.
 * `handshakeTimeout` defaults to the server's.
 */
export type ServerTlsOptions = Tls.TlsOptions;

/**
 * Where to listen: `host:port`, `[v6]:port`, `:port`, `unix:/path` or a path,
 * or an {@link Endpoint} object, which may carry `tls` to serve TLS on it.
 */
export type ListenEndpoint = string | (Endpoint & { readonly tls?: ServerTlsOptions });

/** Options of {@link Server.close}. */
export interface CloseOptions {
  /** Milliseconds in-flight calls get to finish after GOAWAY before their connections are cut. Default 10,000. */
  timeout?: number;
}

type ServerState = "idle" | "started" | "stopping" | "stopped";

interface Listener {
  server: NetServer;
  address: string;
}

/** A parsed listen target. */
interface ListenTarget {
  endpoint: Endpoint;
  tls: ServerTlsOptions | undefined;
}

/** The listener a socket came in on, as its address will be listed once bound. */
interface ListenerAddress {
  address: string;
}

/**
 * A rapt server: a registry of functions served on any number of TCP and
 * Unix socket listeners. Calls arrive multiplexed on each connection.
 */
export class Server {
  private readonly registry = new Registry();
  private readonly listeners: Listener[] = [];
  private readonly connections = new Set<ServerConnection>();
  private readonly connectionMiddleware: ConnectionMiddleware[] = [];
  private readonly callMiddleware: CallMiddleware[] = [];
  private readonly hooks: Record<ServerHookName, ServerHook[]> = {
    beforeStart: [],
    afterStart: [],
    beforeStop: [],
    afterStop: [],
  };
  private readonly config: ServerConnectionConfig;
  private state: ServerState = "idle";
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private drained: (() => void) | undefined;

  constructor(options: ServerOptions = {}) {
    const keepalive = options.keepalive === false ? false : { ...DEFAULT_KEEPALIVE, ...options.keepalive };
    this.config = {
      registry: this.registry,
      connectionOptions: {
        limits: assertLimits({ ...DEFAULT_LIMITS, ...options.limits }),
        keepalive,
        ...(options.handshakeTimeout === undefined ? {} : { handshakeTimeout: options.handshakeTimeout }),
        ...(options.fragmentSize === undefined ? {} : { fragmentSize: options.fragmentSize }),
        ...(options.codec === undefined ? {} : { codec: options.codec }),
      },
      exposeErrors: options.exposeErrors === true,
      trustedPeer: options.trustedPeer ?? isLoopbackPeer,
      processors: checkProcessors(options.processors, "server processors"),
      connectionMiddleware: this.connectionMiddleware,
      onClose: (connection) => this.forget(connection),
      connectionState: options.connectionState,
      callMiddleware: this.callMiddleware,
      authenticate: options.authenticate,
    };
    if (options.authenticate !== undefined && typeof options.authenticate !== "function") {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, "authenticate must be a function ({ metadata, peer }) => auth");
    }
    for (const middleware of options.callMiddleware ?? []) this.useCall(middleware);
    for (const [name, hook] of Object.entries(options.hooks ?? {})) this.hook(name as ServerHookName, hook);
    for (const middleware of options.connectionMiddleware ?? []) this.useConnection(middleware);
  }

  /**
   * Adds a connection middleware after those already added (the
   * `connectionMiddleware` option's come first). It runs on connections
   * accepted from now on, before their handshake: it admits a connection by
   * calling `next()` and refuses it by throwing an RpcError, which the client
   * receives as the ERROR that closes the connection. See
   * {@link ConnectionMiddleware}.
   */
  useConnection(middleware: ConnectionMiddleware): this {
    if (typeof middleware !== "function") {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, "connection middleware must be a function (conn, next) => ...");
    }
    this.connectionMiddleware.push(middleware);
    return this;
  }

  /**
   * Adds a call middleware after those already added (the `callMiddleware`
   * option's come first). It runs around calls dispatched from now on: it
   * passes a call on with `next()`, sees its result or error, and refuses it
   * by throwing an RpcError. See {@link CallMiddleware}.
   */
  useCall(middleware: CallMiddleware): this {
    if (typeof middleware !== "function") {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, "call middleware must be a function (ctx, next) => ...");
    }
    this.callMiddleware.push(middleware);
    return this;
  }

  /**
   * Registers a function under `name`, or every function of a plain object
   * under the group `name` (`calc.add`). Names already taken are refused with
   * ALREADY_EXISTS.
   */
  register(name: string, fn: Handler, options?: RegisterOptions): this;
  register(group: string, service: object, options?: RegisterServiceOptions): this;
  register(name: string, target: Handler | object, options?: RegisterOptions | RegisterServiceOptions): this {
    this.registry.add(name, target, options);
    return this;
  }

  /**
   * Registers a duplex channel under `name`, opened by clients with
   * `client.channel(name)`. The handler gets its CallContext as `this` and
   * the channel (`Send` is what the server sends); see {@link ChannelHandler}.
   */
  channel<Send = unknown, Receive = unknown>(
    name: string,
    handler: ChannelHandler<Send, Receive>,
    options: Pick<RegisterOptions, "private" | "auth"> = {},
  ): this {
    this.registry.addChannel(name, handler as unknown as ChannelHandler, options);
    return this;
  }

  /** Registered method names, sorted. */
  get methods(): string[] {
    return this.registry.names();
  }

  /** Adds a lifecycle hook. */
  hook(name: ServerHookName, fn: ServerHook): this {
    if (!(name in this.hooks)) throw new RpcError(ErrorCode.INVALID_ARGUMENT, `unknown hook "${name}"`);
    this.hooks[name].push(fn);
    return this;
  }

  /** Addresses listened on, in the form clients accept (`127.0.0.1:4000`, `[::1]:4000`, `unix:/path`). */
  get addresses(): string[] {
    return this.listeners.map((l) => l.address);
  }

  /** Open connections (including those still in their handshake or their connection middleware). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * The clients connected now (past their handshake), each as a
   * {@link Remote}: push them events (`emit`) or call their registered
   * functions at any time, not only from inside a handler.
   */
  get clients(): Remote[] {
    const remotes: Remote[] = [];
    for (const { connection } of this.connections) if (connection.isOpen) remotes.push(remoteOf(connection));
    return remotes;
  }

  /**
   * Listens on each endpoint (`host:port`, `[::1]:0`, `unix:/path`, or an
   * {@link Endpoint}); port 0 picks a free port. An endpoint object with
   * `tls` serves TLS there: `listen({ host: "0.0.0.0", port: 4433, tls: {
   * key, cert } })`. The first call runs the beforeStart and afterStart
   * hooks around opening the listeners. Resolves with the bound addresses of
   * these endpoints.
   */
  async listen(...endpoints: ListenEndpoint[]): Promise<string[]> {
    if (this.state === "stopping" || this.state === "stopped") {
      throw new RpcError(ErrorCode.FAILED_PRECONDITION, "server is closed; create a new one");
    }
    const parsed = endpoints.map((e) => listenTarget(e));
    if (this.state === "idle") {
      this.state = "started";
      this.starting = this.runHooks("beforeStart");
      await this.starting;
      const bound = await this.openListeners(parsed);
      await this.runHooks("afterStart");
      return bound;
    }
    await this.starting;
    return this.openListeners(parsed);
  }

  /**
   * Graceful stop: runs beforeStop hooks, stops accepting, sends GOAWAY on
   * every connection, lets in-flight calls finish up to `timeout`, then cuts
   * what remains (their handlers' signals abort) and runs afterStop hooks.
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.closing ??= this.shutdown(options.timeout ?? 10_000);
    return this.closing;
  }

  private async shutdown(timeout: number): Promise<void> {
    await this.runHooks("beforeStop");
    this.state = "stopping";
    const listenersClosed = this.listeners.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve())));
    const reason = new RpcError(ErrorCode.UNAVAILABLE, "server is shutting down");
    if (this.connections.size > 0) {
      const drained = new Promise<void>((resolve) => {
        this.drained = resolve;
      });
      for (const connection of [...this.connections]) connection.shutdown(reason);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeout);
      });
      await Promise.race([drained, timedOut]);
      clearTimeout(timer);
      const cut = new RpcError(ErrorCode.UNAVAILABLE, `server closed; call did not finish within the ${timeout} ms shutdown timeout`);
      for (const connection of [...this.connections]) connection.connection.close(cut);
    }
    await Promise.all(listenersClosed);
    this.state = "stopped";
    await this.runHooks("afterStop");
  }

  private forget(connection: ServerConnection): void {
    this.connections.delete(connection);
    if (this.connections.size === 0) this.drained?.();
  }

  private accept(socket: Socket, listening: Endpoint, listener: ListenerAddress): void {
    if (this.state !== "started" || !hasPeer(socket, listening)) {
      socket.destroy();
      return;
    }
    this.connections.add(new ServerConnection(socket, this.config, listening, listener.address));
  }

  /**
   * Opens one listener per endpoint. They are recorded in the order given
   * (not the order they happen to bind in), so `addresses` lists them as
   * `listen` returned them; when some fail, those that opened are still
   * recorded (and closed with the server) and the first failure is thrown.
   */
  private async openListeners(endpoints: ListenTarget[]): Promise<string[]> {
    const results = await Promise.allSettled(endpoints.map((e) => this.openListener(e)));
    const bound: string[] = [];
    for (const result of results) {
      if (result.status === "rejected") continue;
      if (this.state !== "started") {
        // close() began while this listener was binding: it did not see it.
        result.value.server.close();
        continue;
      }
      this.listeners.push(result.value);
      bound.push(result.value.address);
    }
    for (const result of results) if (result.status === "rejected") throw result.reason;
    if (this.state !== "started") throw new RpcError(ErrorCode.FAILED_PRECONDITION, "server closed while it was starting to listen");
    return bound;
  }

  private async openListener(target: ListenTarget): Promise<Listener> {
    const endpoint = target.endpoint;
    try {
      return await this.tryListen(target);
    } catch (error) {
      const code = ((error as RpcError).cause as NodeJS.ErrnoException | undefined)?.code;
      if (!("path" in endpoint) || code !== "EADDRINUSE") throw error;
      if (!(await isStaleSocket(endpoint.path))) {
        throw new RpcError(
          ErrorCode.UNAVAILABLE,
          `cannot listen on ${formatEndpoint(endpoint)}: EADDRINUSE (another server is accepting connections on this socket)`,
          undefined,
          { cause: (error as RpcError).cause },
        );
      }
      // A socket file left by a crashed server: nobody answers on it.
      unlinkSync(endpoint.path);
      return this.tryListen(target);
    }
  }

  private tryListen({ endpoint, tls }: ListenTarget): Promise<Listener> {
    return new Promise((resolve, reject) => {
      const listener: ListenerAddress = { address: formatEndpoint(endpoint) };
      const onSocket = (socket: Socket): void => this.accept(socket, endpoint, listener);
      // A TLS listener hands over sockets once their TLS handshake is done
      // (so the client's certificate is known); one that fails it never
      // reaches the connection middleware. The handshake gets the server's
      // handshake timeout, so a silent client cannot hold it open.
      const server =
        tls === undefined
          ? createServer({ noDelay: true }, onSocket)
          : loadTls().createServer(
              { handshakeTimeout: this.config.connectionOptions.handshakeTimeout ?? 10_000, ...tls, noDelay: true },
              onSocket,
            );
      server.once("error", (error: NodeJS.ErrnoException) => {
        const where = formatEndpoint(endpoint);
        reject(
          new RpcError(ErrorCode.UNAVAILABLE, `cannot listen on ${where}: ${error.code ?? error.message}`, undefined, { cause: error }),
        );
      });
      const onListening = (): void => {
        server.removeAllListeners("error");
        // Errors after listening (EMFILE on accept) must not crash the process.
        server.on("error", () => {});
        const bound = server.address();
        const address =
          typeof bound === "string" || bound === null
            ? formatEndpoint(endpoint)
            : formatEndpoint({ host: bound.address, port: bound.port });
        listener.address = address;
        resolve({ server, address });
      };
      if ("path" in endpoint) server.listen(endpoint.path, onListening);
      else server.listen({ host: endpoint.host, port: endpoint.port }, onListening);
    });
  }

  private async runHooks(name: ServerHookName): Promise<void> {
    for (const hook of this.hooks[name]) await hook(this);
  }
}

/** Splits a listen argument into its endpoint and TLS settings. */
function listenTarget(input: ListenEndpoint): ListenTarget {
  const endpoint = parseEndpoint(input);
  if (typeof input === "string" || input.tls === undefined) return { endpoint, tls: undefined };
  if (typeof input.tls !== "object" || input.tls === null) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `tls for ${formatEndpoint(endpoint)} must be an object of tls.createServer options`);
  }
  return { endpoint, tls: input.tls };
}

/** Whether `path` is a Unix socket that no process accepts on. */
function isStaleSocket(path: string): Promise<boolean> {
  try {
    if (!lstatSync(path).isSocket()) return Promise.resolve(false);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(false);
    });
    probe.once("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"));
  });
}
