import { type Socket, connect as netConnect } from "node:net";
import { type ConnectionOptions as TlsConnectionOptions, connect as tlsConnect } from "node:tls";
import { Connection, type ConnectionOptions, type ConnectionOwner } from "../protocol/connection.js";
import { type Endpoint, formatEndpoint } from "../protocol/endpoint.js";
import { FrameType, frameTypeName } from "../protocol/frame.js";
import { type Processor, checkProcessors, confirmProcessors, offerProcessors, startProcessors } from "../protocol/processor.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type Hello, type Metadata, PROTOCOL_VERSION, errorFromBody, parseWelcome } from "../protocol/wire-messages.js";
import { Backoff, type BackoffOptions } from "./backoff.js";

/**
 * TLS settings of a client: Node's `tls.connect` options (`ca` to trust the
 * server's CA, `cert` and `key` for a client certificate in mutual TLS,
 * `servername`, `minVersion`, ...). The host and port (or path) come from
 * the endpoint. The server's certificate is verified (`rejectUnauthorized`
 * defaults to true); a certificate problem on either side fails the
 * connection with UNAUTHENTICATED.
 */
export type ClientTlsOptions = Omit<TlsConnectionOptions, "host" | "port" | "path" | "socket">;

/** Settings of an {@link EndpointConnection}. */
export interface EndpointConnectionOptions {
  readonly connection: Omit<ConnectionOptions, "role">;
  /** Sent in HELLO; the server sees it as `ctx.connectionMetadata`. */
  readonly metadata: Metadata | undefined;
  readonly backoff: BackoffOptions;
  /** Processors offered in every HELLO (crypto, compression). Default none. */
  readonly processors?: readonly Processor[] | undefined;
  /** Connect with TLS. Default plain TCP (or Unix socket). */
  readonly tls?: ClientTlsOptions | undefined;
  /** Serves a CALL the server opens (a server-to-client call or event); without it they are refused. */
  readonly onCall?: (connection: Connection, streamId: number, payload: Buffer, endpoint: Endpoint) => void;
}

type State = "idle" | "connecting" | "ready" | "backoff" | "closed";

/** A connection open at least this long resets the reconnect backoff when it closes. */
const STABLE_CONNECTION_MS = 1000;

/** A caller waiting for a connection; see {@link EndpointConnection.wait}. */
export interface Waiter {
  resolve(connection: Connection): void;
  reject(error: RpcError): void;
  readonly waitForReady: boolean;
}

/**
 * One endpoint, at most one usable connection to it at a time. Connects on
 * demand, completes the handshake, and after a loss reconnects with capped
 * exponential backoff and jitter until closed. Callers wait for it through
 * {@link whenReady}, within their own deadline.
 */
export class EndpointConnection {
  readonly endpoint: Endpoint;
  /** The connection new calls go to, while it is open. */
  current: Connection | undefined;
  private state: State = "idle";
  private readonly options: EndpointConnectionOptions;
  private readonly backoff: Backoff;
  private readonly waiters = new Set<Waiter>();
  private readonly live = new Set<Connection>();
  private readonly closedWaiters: Array<() => void> = [];
  private lastError: RpcError | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The connection whose handshake is in progress. */
  private attempting: Connection | undefined;
  /** When the current connection opened (performance.now()). */
  private currentSince = 0;
  private readonly processors: readonly Processor[];

  constructor(endpoint: Endpoint, options: EndpointConnectionOptions) {
    this.endpoint = endpoint;
    this.options = options;
    this.backoff = new Backoff(options.backoff);
    this.processors = checkProcessors(options.processors, "client processors");
    if (options.tls !== undefined && (typeof options.tls !== "object" || options.tls === null)) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, "client tls must be an object of tls.connect options");
    }
  }

  /** The open connection, or undefined: the fast path of every call. */
  get ready(): Connection | undefined {
    const current = this.current;
    return current?.isOpen ? current : undefined;
  }

  /** Why the last attempt or connection failed. */
  get lastFailure(): RpcError | undefined {
    return this.lastError;
  }

  /**
   * Hands `waiter` an open connection, now or once one is up. Fail-fast
   * waiters (`waitForReady` false) wait for an attempt in progress but are
   * rejected with UNAVAILABLE while the endpoint is in backoff after a
   * failure; the others wait through reconnects. Deadlines and cancellation
   * are the caller's: it removes a waiter that gives up with {@link cancelWait}.
   */
  wait(waiter: Waiter): void {
    const ready = this.ready;
    if (ready !== undefined) waiter.resolve(ready);
    else if (this.state === "closed") waiter.reject(new RpcError(ErrorCode.UNAVAILABLE, "client is closed"));
    else if (this.state === "backoff" && !waiter.waitForReady) waiter.reject(this.unavailable());
    else {
      if (this.state === "idle") this.attempt();
      this.waiters.add(waiter);
      this.holdProcess();
    }
  }

  /** Removes a waiter that gave up (deadline, cancel). */
  cancelWait(waiter: Waiter): void {
    this.waiters.delete(waiter);
    this.holdProcess();
  }

  /** Stops using the current connection for new calls (ids exhausted) and opens another. */
  retire(connection: Connection): void {
    if (connection !== this.current) return;
    this.current = undefined;
    connection.goaway(new RpcError(ErrorCode.UNAVAILABLE, "stream ids exhausted"));
    this.attempt();
  }

  /**
   * Graceful close: no more reconnects, waiters are rejected, every
   * connection sends GOAWAY and ends once its calls are done.
   */
  close(): Promise<void> {
    if (this.state !== "closed") {
      this.state = "closed";
      clearTimeout(this.retryTimer);
      this.rejectWaiters(new RpcError(ErrorCode.UNAVAILABLE, "client is closed"), true);
      const reason = new RpcError(ErrorCode.UNAVAILABLE, "client is closing");
      for (const connection of this.live) connection.goaway(reason);
    }
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  /** Closes every connection now; their calls are rejected with `reason`. */
  destroy(reason: RpcError): void {
    this.state = "closed";
    clearTimeout(this.retryTimer);
    this.rejectWaiters(reason, true);
    for (const connection of [...this.live]) connection.close(reason);
  }

  private attempt(): void {
    // Closed is final: a GOAWAY from the server racing close() used to start
    // a new connection here and set the state back to "connecting", so the
    // client reconnected forever and close() never resolved.
    if (this.state === "closed" || this.attempting !== undefined) return;
    this.state = "connecting";
    const endpoint = this.endpoint;
    const tls = this.options.tls;
    const where = "path" in endpoint ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port };
    const socket: Socket = tls === undefined ? netConnect(where) : tlsConnect({ ...tls, ...where });
    // The HELLO as sent: processors bind the connection to it.
    let hello: Buffer | undefined;
    // The owner closes over its own connection: an old, draining connection
    // and a new one can report at the same time.
    const owner: ConnectionOwner = {
      onHandshake: (type, payload) => this.onHandshake(connection, type, payload, hello as Buffer),
      onCall: (streamId, payload) => {
        if (this.options.onCall !== undefined) this.options.onCall(connection, streamId, payload, endpoint);
        else connection.sendError(streamId, new RpcError(ErrorCode.UNIMPLEMENTED, "this client serves no methods"));
      },
      onGoaway: () => this.onGoaway(connection),
      onClose: (reason) => this.onClose(connection, reason),
    };
    const connection: Connection = new Connection(socket, owner, { ...this.options.connection, role: "client" });
    this.live.add(connection);
    this.attempting = connection;
    // Over TLS, HELLO waits for the TLS handshake (and its certificate checks).
    socket.once(tls === undefined ? "connect" : "secureConnect", () => {
      let offered: ReturnType<typeof offerProcessors>;
      try {
        offered = offerProcessors(this.processors, this.options.metadata, connection.codec);
      } catch (error) {
        connection.close(RpcError.from(error, ErrorCode.INTERNAL));
        return;
      }
      const message: Hello = { version: PROTOCOL_VERSION, limits: connection.limits };
      if (offered.metadata !== undefined) message.metadata = offered.metadata;
      if (offered.offers !== undefined) message.processors = offered.offers;
      hello = connection.sendHandshake(FrameType.HELLO, message);
      if (this.processors.some((processor) => processor.kind === "crypto")) connection.sendOnlyRecords();
    });
  }

  private onHandshake(connection: Connection, type: number, payload: Buffer, hello: Buffer): void {
    if (type === FrameType.ERROR) {
      connection.close(errorFromBody(connection.codec.decode(payload)));
      return;
    }
    if (type !== FrameType.WELCOME) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `expected WELCOME from the server, got ${frameTypeName(type)}`);
    }
    const welcome = parseWelcome(connection.codec.decode(payload));
    if (welcome.version !== PROTOCOL_VERSION) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `server answered with protocol version ${welcome.version}; this client speaks ${PROTOCOL_VERSION}`,
      );
    }
    // Throws UNAUTHENTICATED when a crypto client's server did not prove it holds the key.
    const agreements = confirmProcessors(this.processors, welcome.processors as Readonly<Record<string, unknown>> | undefined, hello);
    const chain = startProcessors(agreements, {
      role: "client",
      hello,
      welcome: payload,
      maxMessageSize: connection.limits.maxMessageSize,
    });
    connection.open(welcome.limits, welcome.connectionId, chain);
    if (connection === this.attempting) this.attempting = undefined;
    if (this.state === "closed") {
      connection.goaway(new RpcError(ErrorCode.UNAVAILABLE, "client is closing"));
      return;
    }
    this.current = connection;
    this.currentSince = performance.now();
    this.state = "ready";
    this.lastError = undefined;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiters) waiter.resolve(connection);
  }

  private onGoaway(connection: Connection): void {
    if (connection !== this.current) return;
    this.current = undefined;
    if (this.state !== "closed") this.attempt();
  }

  private onClose(connection: Connection, reason: RpcError): void {
    this.live.delete(connection);
    if (this.state === "closed") {
      if (this.live.size === 0) for (const resolve of this.closedWaiters.splice(0)) resolve();
      return;
    }
    if (connection === this.current) {
      this.current = undefined;
      // The backoff starts over only after a connection that lasted: one that
      // a server fails right after its handshake (a broken record, a policy
      // after WELCOME) must not make every client reconnect at the first delay.
      if (performance.now() - this.currentSince >= STABLE_CONNECTION_MS) this.backoff.reset();
    } else if (connection === this.attempting) this.attempting = undefined;
    // Otherwise a draining connection finished its calls: no failure.
    else return;
    this.lastError = reason;
    this.state = "backoff";
    this.rejectWaiters(this.unavailable(), false);
    const delay = this.backoff.next();
    this.retryTimer = setTimeout(() => {
      if (this.state === "backoff") this.attempt();
    }, delay);
    this.holdProcess();
  }

  /**
   * The retry timer keeps the process alive only while a call waits for the
   * connection: an idle client in backoff must not, but a pending
   * waitForReady call must (it would otherwise end the process with the call
   * unsettled, as nothing else is running then).
   */
  private holdProcess(): void {
    if (this.waiters.size > 0) this.retryTimer?.ref();
    else this.retryTimer?.unref();
  }

  private unavailable(): RpcError {
    const last = this.lastError;
    const where = formatEndpoint(this.endpoint);
    if (last === undefined) return new RpcError(ErrorCode.UNAVAILABLE, `no connection to ${where}`);
    // Permanent handshake refusals keep their code; transport failures are UNAVAILABLE.
    const code =
      last.code === ErrorCode.PROTOCOL_ERROR || last.code === ErrorCode.UNAUTHENTICATED || last.code === ErrorCode.PERMISSION_DENIED
        ? last.code
        : ErrorCode.UNAVAILABLE;
    return new RpcError(code, `no connection to ${where}: ${last.message}`, last.data, { cause: last });
  }

  private rejectWaiters(error: RpcError, all: boolean): void {
    for (const waiter of [...this.waiters]) {
      if (!all && waiter.waitForReady) continue;
      this.waiters.delete(waiter);
      waiter.reject(error);
    }
  }
}
