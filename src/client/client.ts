import { MAX_TIMEOUT_MS } from "../protocol/call-payload.js";
import { type Connection, DEFAULT_LIMITS } from "../protocol/connection.js";
import { type Endpoint, formatEndpoint, parseEndpoint } from "../protocol/endpoint.js";
import { DEFAULT_KEEPALIVE, type KeepaliveOptions } from "../protocol/keepalive.js";
import type { CodecLimits } from "../protocol/msgpack-codec.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { DEFAULT_STREAM_WINDOW, type Limits, type Metadata, assertLimits, assertMetadata } from "../protocol/wire-messages.js";
import type { BackoffOptions } from "./backoff.js";
import type { CallOptions } from "./call-options.js";
import { peerOf } from "../server/call-context.js";
import { type DispatchHost, dispatchCall } from "../server/dispatch.js";
import { type EventListener, type Handler, type RegisterOptions, type RegisterServiceOptions, Registry } from "../server/registry.js";
import { ConnectionPool, type PoolOptions } from "./connection-pool.js";
import type { ClientTlsOptions, Waiter } from "./endpoint-connection.js";
import type { Processor } from "../protocol/processor.js";
import { type Picker, leastLoaded, roundRobin } from "./picker.js";
import { SessionPin, activeSession, runInSession } from "./session.js";
import { LongTimer } from "./long-timer.js";
import type { Channel } from "../protocol/channel.js";
import { ChannelCall, type ChannelOptions } from "./channel-call.js";
import { type ChannelProxy, type ProxyTarget, type ServiceProxy, createChannelProxy, createProxy } from "./proxy.js";
import { type ResponseMode, type ServerStream, StreamingCall, isStreamSource } from "./streaming-call.js";
import { type UnprocessedRetry, startUnary } from "./unary-call.js";

/** Options of a {@link Client}. */
export interface ClientOptions {
  /** Default per-call timeout in ms. Default: none. */
  timeout?: number;
  /** Default for {@link CallOptions.waitForReady}. Default false. */
  waitForReady?: boolean;
  /** Sent in the handshake; the server sees it on every call as `connectionMetadata`. */
  metadata?: Metadata;
  /** What the client accepts from the server. Defaults as the server's. */
  limits?: Partial<Limits>;
  /** PINGs to a silent peer and its timeout; `false` turns them off. Default a PING after 10 s without traffic, drop after 30 s of silence. */
  keepalive?: Partial<KeepaliveOptions> | false;
  /** Milliseconds for TCP connect plus handshake. Default 10,000. */
  connectTimeout?: number;
  /** Reconnect backoff. Defaults: 100 ms doubling by 1.6 up to 10 s, +/-20 % jitter. */
  reconnect?: BackoffOptions;
  /** Largest frame payload the client sends. Default 64 KiB. */
  fragmentSize?: number;
  /** MessagePack decode limits. */
  codec?: CodecLimits;
  /** Send the message of errors thrown by this client's own handlers (see `register`) to the server. Default false. */
  exposeErrors?: boolean;
  /** Connections per endpoint; see {@link PoolOptions}. Default one connection per endpoint. */
  pool?: PoolOptions;
  /**
   * How a call's connection is chosen among the open ones: "round-robin",
   * "least-loaded" (power of two choices by in-flight calls times ping RTT),
   * or a {@link Picker} function. Default "round-robin".
   */
  picker?: "round-robin" | "least-loaded" | Picker;
  /**
   * Payload processors offered in the handshake: `crypto(...)` (AES-256-GCM;
   * the client then refuses a server that does not accept it) and
   * `compression(...)`, from `rapt/plugin`. Default none.
   */
  processors?: readonly Processor[];
  /** Connect with TLS: Node's `tls.connect` options (`ca`, and `cert` and `key` for mutual TLS). Default plain TCP. */
  tls?: ClientTlsOptions;
  /**
   * Run in order, as an onion, around every call, stream and channel the
   * client opens (`call()`, proxy calls, `stream()`, `channel()`, sessions'
   * included); see {@link ClientInterceptor}. Default none.
   */
  interceptors?: readonly ClientInterceptor[];
}

/**
 * The call a {@link ClientInterceptor} sees. `args` and `options` may be
 * replaced or changed before `next()`; `options.metadata` is this call's own
 * copy, so setting entries on it (an auth token, a trace id) does not touch
 * the caller's object.
 */
export interface InterceptedCall {
  /**
   * What the caller opened: `call` (client.call and proxy calls), `stream`
   * (client.stream) or `channel`. For streams and channels only metadata
   * entries set on `options.metadata` apply; `next()` resolves when they end.
   */
  readonly kind: "call" | "stream" | "channel";
  readonly method: string;
  args: readonly unknown[];
  options: CallOptions & { metadata: Metadata };
}

/**
 * A client interceptor (`ClientOptions.interceptors`): runs around each
 * call, stream and channel the client opens (see {@link InterceptedCall}).
 * For `client.call()`, `next()` runs the later interceptors and then the call
 * itself with `call.args` and `call.options` as they are at that moment, and
 * returns its result promise (rejected with an {@link RpcError}); the call
 * resolves with what the outermost interceptor returns, so return `next()`'s
 * result (or another value, to answer without calling), and `next()` may be
 * called again, to retry. For proxy calls, streams and channels, `next()`
 * sends the open once and settles when it ends; what the interceptor returns
 * is ignored, and returning without `next()` fails it. Anything thrown
 * reaches the caller; a thrown non-RpcError as an RpcError INTERNAL.
 */
export type ClientInterceptor = (call: InterceptedCall, next: () => Promise<unknown>) => Promise<unknown>;

/**
 * A client session (`client.session(fn)`): every call, stream and channel
 * made through it, or implicitly by code running inside `fn`, goes to one
 * connection, and the server sees the session (`this.session`) on each.
 */
export interface ClientSession {
  /** The session id the server sees. */
  readonly id: string;
  /** The id of the connection the session is pinned to. */
  readonly connectionId: string;
  call<R = unknown>(method: string, args?: readonly unknown[], options?: CallOptions): Promise<R>;
  stream<T = unknown>(method: string, args?: readonly unknown[], options?: CallOptions): ServerStream<T>;
  channel<Send = unknown, Receive = unknown>(name: string, options?: ChannelOptions): Channel<Send, Receive>;
  proxy<T>(group?: string, options?: CallOptions): ServiceProxy<T>;
}

/**
 * A rapt client for one or more endpoints. Calls made concurrently share a
 * pool of connections (one per endpoint by default); a lost connection
 * rejects its calls with UNAVAILABLE at once and is re-established in the
 * background with backoff, while calls go to the endpoints still up.
 */
export class Client {
  /** The first endpoint, as `host:port` or `unix:/path`. */
  readonly endpoint: string;
  private readonly registry = new Registry();
  private readonly hosts = new WeakMap<Connection, DispatchHost>();
  private readonly exposeErrors: boolean;
  /** Every endpoint, in the form {@link endpoint} has. */
  readonly endpoints: readonly string[];
  private readonly link: ConnectionPool;
  private readonly defaults: { timeout: number | undefined; waitForReady: boolean };
  private readonly interceptors: readonly ClientInterceptor[];
  private closed = false;
  private readonly proxyTarget: ProxyTarget = {
    open: (method, args, options) => this.open(method, args, options ?? {}, "dual"),
  };
  /** This client's stream window: items a server may send per stream before a grant. */
  private readonly window: number;
  /** One retry of a call the server refused unprocessed (GOAWAY); the retry itself gets none. */
  private readonly retrier: UnprocessedRetry = {
    retry: (method, args, options, timeout, totalTimeout) => {
      if (this.closed) return Promise.reject(new RpcError(ErrorCode.UNAVAILABLE, `${method}: client is closed`));
      if (options.signal?.aborted) return Promise.reject(new RpcError(ErrorCode.CANCELLED, `${method}: cancelled by the caller`));
      return this.dispatch(method, args, options, timeout, totalTimeout, undefined);
    },
  };

  constructor(endpoints: string | Endpoint | ReadonlyArray<string | Endpoint>, options: ClientOptions = {}) {
    const list = Array.isArray(endpoints) ? (endpoints as ReadonlyArray<string | Endpoint>) : [endpoints as string | Endpoint];
    if (list.length === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, "a client needs at least one endpoint");
    const parsed = list.map((e) => parseEndpoint(e));
    this.endpoints = parsed.map(formatEndpoint);
    this.endpoint = this.endpoints[0] as string;
    const keepalive = options.keepalive === false ? false : { ...DEFAULT_KEEPALIVE, ...options.keepalive };
    if (options.metadata !== undefined) assertMetadata(options.metadata);
    const limits = assertLimits({ ...DEFAULT_LIMITS, ...options.limits });
    this.window = limits.streamWindow ?? DEFAULT_STREAM_WINDOW;
    this.link = new ConnectionPool(
      parsed,
      {
        connection: {
          limits,
          keepalive,
          handshakeTimeout: options.connectTimeout ?? 10_000,
          ...(options.fragmentSize === undefined ? {} : { fragmentSize: options.fragmentSize }),
          ...(options.codec === undefined ? {} : { codec: options.codec }),
        },
        metadata: options.metadata,
        backoff: options.reconnect ?? {},
        onCall: (connection, streamId, payload, endpoint) => dispatchCall(this.hostFor(connection, endpoint), streamId, payload),
        processors: options.processors,
        tls: options.tls,
      },
      options.pool ?? {},
      pickerOf(options.picker),
    );
    this.defaults = { timeout: options.timeout, waitForReady: options.waitForReady === true };
    this.exposeErrors = options.exposeErrors === true;
    const interceptors = options.interceptors ?? [];
    if (!Array.isArray(interceptors) || interceptors.some((i) => typeof i !== "function")) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, "interceptors must be an array of functions (call, next) => ...");
    }
    this.interceptors = [...interceptors];
  }

  /**
   * Registers functions the server may call back (`this.remote.call()` in a
   * server handler), with the same names, validation and error model as
   * `Server.register`: one function, or a plain object as a group.
   */
  register(name: string, fn: Handler, options?: RegisterOptions): this;
  register(group: string, service: object, options?: RegisterServiceOptions): this;
  register(name: string, target: Handler | object, options?: RegisterOptions | RegisterServiceOptions): this {
    this.registry.add(name, target, options);
    return this;
  }

  /** Listens for events the server sends (`this.remote.emit(event, ...args)`). */
  on(event: string, listener: EventListener): this {
    this.registry.addListener(event, listener);
    return this;
  }

  /** Removes a listener added with {@link on}. */
  off(event: string, listener: EventListener): this {
    this.registry.removeListener(event, listener);
    return this;
  }

  /** How this client serves CALLs the server opens on `connection`. */
  private hostFor(connection: Connection, endpoint: Endpoint): DispatchHost {
    let host = this.hosts.get(connection);
    if (host === undefined) {
      host = {
        connection,
        // The endpoint this connection was made to (not the client's first),
        // with the server's certificate on TLS.
        peer: peerOf(connection.socket, endpoint) ?? { address: formatEndpoint(endpoint), port: 0, family: "IPv4" },
        connectionMetadata: NO_METADATA,
        exposeErrors: this.exposeErrors,
        registry: this.registry,
        // Private functions of a client: callable by the server it connected to.
        trustedPeer: () => true,
      };
      this.hosts.set(connection, host);
    }
    return host;
  }

  /**
   * The id the server assigned to the connection a call would use now (the
   * session's, inside a session), or undefined while not connected.
   */
  get connectionId(): string | undefined {
    return this.pinned()?.connection.id ?? this.link.ready?.id;
  }

  /** Ids of every open connection of the pool. */
  get connectionIds(): string[] {
    return this.link.openConnections.map((connection) => connection.id);
  }

  /** Last keepalive round-trip time in ms, if measured: by a PING when the connection opens, then by each PING to a silent server. */
  get rtt(): number | undefined {
    return this.link.ready?.rtt;
  }

  /** Connects now instead of on the first call; rejects if the attempt fails. */
  async connect(options: Pick<CallOptions, "timeout" | "signal"> = {}): Promise<void> {
    await this.connection("connect", options.timeout ?? this.defaults.timeout, options.signal, false, performance.now());
  }

  /**
   * Calls `method` with positional `args`. Resolves with the result; rejects
   * with an {@link RpcError} (the server's, or CANCELLED, DEADLINE_EXCEEDED,
   * UNAVAILABLE, INVALID_ARGUMENT for arguments that cannot be encoded).
   */
  call<R = unknown>(method: string, args: readonly unknown[] = [], options: CallOptions = {}): Promise<R> {
    if (this.interceptors.length === 0) return this.callNow(method, args, options);
    return this.intercepted(method, args, options) as Promise<R>;
  }

  /** Runs the interceptors around {@link callNow}. */
  private async intercepted(method: string, args: readonly unknown[], options: CallOptions): Promise<unknown> {
    const call: InterceptedCall = { kind: "call", method, args, options: { ...options, metadata: { ...options.metadata } } };
    return this.runInterceptors(call, () => this.callNow(call.method, call.args, call.options));
  }

  /**
   * Runs the interceptors as an onion around `last`, which does the call
   * itself; a thrown non-RpcError becomes INTERNAL.
   */
  private async runInterceptors(call: InterceptedCall, last: () => Promise<unknown>): Promise<unknown> {
    const chain = this.interceptors;
    const step = (index: number): Promise<unknown> => {
      const interceptor = chain[index];
      if (interceptor === undefined) return last();
      try {
        return Promise.resolve(interceptor(call, () => step(index + 1)));
      } catch (error) {
        return Promise.reject(error as Error);
      }
    };
    try {
      return await step(0);
    } catch (error) {
      throw RpcError.from(error, ErrorCode.INTERNAL);
    }
  }

  /**
   * Opens a stream, proxy call or channel through the interceptors: `start`
   * sends it (with the metadata as the interceptors left it) and `settled`
   * ends when it does. An interceptor that throws before `next()`, or never
   * calls it, ends the call with that error.
   */
  private interceptOpen(call: InterceptedCall, start: () => void, settled: () => Promise<unknown>, fail: (error: RpcError) => void): void {
    let started = false;
    this.runInterceptors(call, () => {
      if (!started) {
        started = true;
        start();
      }
      return settled();
    }).then(
      () => {
        if (!started)
          fail(new RpcError(ErrorCode.FAILED_PRECONDITION, `${call.method}: a client interceptor returned without calling next()`));
      },
      (error: RpcError) => fail(error),
    );
  }

  private callNow<R>(method: string, args: readonly unknown[], options: CallOptions): Promise<R> {
    const invalid = this.checkCall(method, args, options);
    if (invalid !== undefined) return Promise.reject(invalid);
    if (args.some(isStreamSource)) return this.open(method, args, options, "unary").result() as Promise<R>;
    const timeout = options.timeout ?? this.defaults.timeout;
    const pin = this.pinned();
    if (pin !== undefined) {
      const unusable = pin.unusable;
      if (unusable !== undefined) return Promise.reject(unusable);
      // Pinned calls are not retried elsewhere: that would leave the session.
      return this.start(pin.connection, method, args, timeout, timeout, options, undefined, pin.streamId) as Promise<R>;
    }
    return this.dispatch(method, args, options, timeout, timeout, this.retrier) as Promise<R>;
  }

  /**
   * Runs `fn` in a session: every call, stream and channel made through the
   * session object, or by any code `fn` runs (through awaits, via
   * AsyncLocalStorage, as rap's contextvars), goes to one connection, and
   * the server sees the session on each call (`this.session`, with state it
   * keeps until the session ends). The session ends when `fn` settles; if
   * its connection is lost, its calls fail with UNAVAILABLE.
   */
  async session<T>(
    fn: (session: ClientSession) => T | Promise<T>,
    options: Pick<CallOptions, "timeout" | "signal" | "waitForReady"> = {},
  ): Promise<T> {
    if (this.closed) throw new RpcError(ErrorCode.UNAVAILABLE, "session: client is closed");
    const outer = this.pinned();
    const connection =
      outer !== undefined && outer.unusable === undefined
        ? outer.connection
        : await this.connection(
            "session",
            options.timeout ?? this.defaults.timeout,
            options.signal,
            options.waitForReady ?? this.defaults.waitForReady,
            performance.now(),
          );
    const pin = new SessionPin(this, connection);
    const inSession = <R>(run: () => R): R => runInSession(pin, run);
    const target: ProxyTarget = { open: (method, args, o) => inSession(() => this.open(method, args, o ?? {}, "dual")) };
    const session: ClientSession = {
      id: pin.id,
      connectionId: connection.id,
      call: (method, args, o) => inSession(() => this.call(method, args, o)),
      stream: (method, args, o) => inSession(() => this.stream(method, args, o)),
      channel: (name, o) => inSession(() => this.channel(name, o)),
      proxy: (group = "", o) => createProxy(target, group, o),
    };
    try {
      return await runInSession(pin, () => fn(session));
    } finally {
      pin.end();
    }
  }

  /** The session this client's call is made in (AsyncLocalStorage), if any. */
  private pinned(): SessionPin | undefined {
    const pin = activeSession();
    return pin !== undefined && pin.owner === this ? pin : undefined;
  }

  /**
   * Calls a method that streams its result (an `async function*` on the
   * server) and returns its items to read with `for await`. Leaving the loop
   * early (`break`), the signal or the deadline cancels the call on the
   * server, whose generator is closed. An argument that is an AsyncIterable
   * is streamed to the server too (bidirectional). Items arrive under flow
   * control: a consumer that stops reading stops the server's generator.
   */
  stream<T = unknown>(method: string, args: readonly unknown[] = [], options: CallOptions = {}): ServerStream<T> {
    return this.open(method, args, options, "stream") as ServerStream<T>;
  }

  /**
   * Opens a duplex channel registered on the server with `server.channel()`.
   * Returns at once; messages sent before it is open wait (flow control), and
   * an open that fails closes it with the error (see `channel.closed`).
   * `Send` is what this end sends, `Receive` what it reads.
   */
  channel<Send = unknown, Receive = unknown>(name: string, given: ChannelOptions = {}): Channel<Send, Receive> {
    const interceptedOptions = this.interceptors.length === 0 ? undefined : { ...given, metadata: { ...given.metadata } };
    const options: ChannelOptions = interceptedOptions ?? given;
    const call = new ChannelCall(name, options, this.window);
    const problem = this.checkCall(name, [], { ...(options.timeout === undefined ? {} : { timeout: options.timeout }) });
    if (problem !== undefined) {
      call.fail(problem);
      return call.channel as Channel<Send, Receive>;
    }
    const started = performance.now();
    const open = (connection: Connection): void => {
      if (call.channel.isClosed) return;
      const streamId = connection.nextStreamId();
      if (streamId < 0) {
        this.link.retire(connection);
        this.connection(name, undefined, options.signal, true, started).then(open, (error: RpcError) => call.fail(error));
        return;
      }
      const left = options.timeout === undefined ? undefined : Math.max(0, options.timeout - (performance.now() - started));
      try {
        call.bind(connection, streamId, left, pin?.streamId);
      } catch (error) {
        connection.removeStream(streamId);
        call.fail(RpcError.from(error, ErrorCode.INVALID_ARGUMENT));
      }
    };
    const pin = this.pinned();
    const start = (): void => {
      if (pin !== undefined) {
        const unusable = pin.unusable;
        if (unusable !== undefined) call.fail(unusable);
        else open(pin.connection);
        return;
      }
      const ready = this.link.ready;
      if (ready !== undefined) open(ready);
      else {
        const waitForReady = options.waitForReady ?? this.defaults.waitForReady;
        this.connection(name, options.timeout, options.signal, waitForReady, started).then(open, (error: RpcError) => call.fail(error));
      }
    };
    if (interceptedOptions === undefined) start();
    else {
      const intercepted: InterceptedCall = {
        kind: "channel",
        method: name,
        args: [],
        options: interceptedOptions as InterceptedCall["options"],
      };
      const settled = (): Promise<unknown> =>
        call.channel.closed.then((info) => {
          if (info.error !== undefined) throw info.error;
          return undefined;
        });
      this.interceptOpen(intercepted, start, settled, (error) => call.abort(error));
    }
    return call.channel as Channel<Send, Receive>;
  }

  /**
   * Typed openers for the server's channels, from the handlers' types:
   * `client.channels<typeof chat>("chat").join({ metadata })` opens
   * `chat.join` as a `Channel` typed from the client's side. See
   * {@link ChannelProxy}.
   */
  channels<T>(group = ""): ChannelProxy<T> {
    return createChannelProxy<T>((name, options) => this.channel(name, options), group);
  }

  /** Everything wrong with a call before it starts, or undefined. */
  private checkCall(method: string, args: readonly unknown[], options: CallOptions): RpcError | undefined {
    if (typeof method !== "string" || method.length === 0)
      return new RpcError(ErrorCode.INVALID_ARGUMENT, "method must be a non-empty string");
    if (!Array.isArray(args)) return new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: args must be an array of positional arguments`);
    if (this.closed) return new RpcError(ErrorCode.UNAVAILABLE, `${method}: client is closed`);
    if (options.signal?.aborted) return new RpcError(ErrorCode.CANCELLED, `${method}: cancelled before it started`);
    const timeout = options.timeout ?? this.defaults.timeout;
    if (timeout !== undefined && !(timeout >= 0 && timeout <= MAX_TIMEOUT_MS)) {
      return new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: timeout must be between 0 and ${MAX_TIMEOUT_MS} ms`);
    }
    return undefined;
  }

  /** Starts a {@link StreamingCall}; problems surface through it, never as a throw. */
  private open(method: string, args: readonly unknown[], given: CallOptions, mode: ResponseMode): StreamingCall {
    // With interceptors the call gets its own metadata, which they may change before it is sent.
    const interceptedOptions = this.interceptors.length === 0 ? undefined : { ...given, metadata: { ...given.metadata } };
    const options: CallOptions = interceptedOptions ?? given;
    const timeout = options.timeout ?? this.defaults.timeout;
    let call: StreamingCall;
    let problem = this.checkCall(method, args, options);
    try {
      call = new StreamingCall(
        method,
        problem === undefined ? args : [],
        options,
        problem === undefined ? timeout : undefined,
        mode,
        this.window,
      );
    } catch (error) {
      call = new StreamingCall(method, [], options, undefined, mode, this.window);
      problem = RpcError.from(error, ErrorCode.INVALID_ARGUMENT);
    }
    if (problem !== undefined) {
      call.reject(problem);
      return call;
    }
    const pin = this.pinned();
    const start = (): void => {
      if (pin !== undefined) {
        const unusable = pin.unusable;
        if (unusable !== undefined) call.reject(unusable);
        else {
          call.session = pin.streamId;
          this.bindStreaming(pin.connection, call);
        }
        return;
      }
      const ready = this.link.ready;
      if (ready !== undefined) this.bindStreaming(ready, call);
      else {
        const waitForReady = options.waitForReady ?? this.defaults.waitForReady;
        this.connection(method, call.timeLeft, options.signal, waitForReady, performance.now()).then(
          (connection) => this.bindStreaming(connection, call),
          (error: RpcError) => call.reject(error),
        );
      }
    };
    if (this.interceptors.length === 0) start();
    else {
      const intercepted: InterceptedCall = {
        kind: mode === "stream" ? "stream" : "call",
        method,
        args,
        options: interceptedOptions as InterceptedCall["options"],
      };
      this.interceptOpen(
        intercepted,
        start,
        () => call.settled(),
        (error) => call.abort(error),
      );
    }
    return call;
  }

  private bindStreaming(connection: Connection, call: StreamingCall): void {
    if (call.finished) return;
    const streamId = connection.nextStreamId();
    if (streamId < 0) {
      this.link.retire(connection);
      this.connection(call.method, call.timeLeft, undefined, true, performance.now()).then(
        (next) => this.bindStreaming(next, call),
        (error: RpcError) => call.reject(error),
      );
      return;
    }
    const limit = connection.peerLimits?.maxConcurrentStreams ?? Number.POSITIVE_INFINITY;
    if (connection.streamCount >= limit) {
      call.reject(new RpcError(ErrorCode.RESOURCE_EXHAUSTED, `${call.method}: the server allows ${limit} concurrent calls per connection`));
      return;
    }
    try {
      call.bind(connection, streamId);
    } catch (error) {
      connection.removeStream(streamId);
      call.reject(RpcError.from(error, ErrorCode.INVALID_ARGUMENT));
    }
  }

  /** Starts a call on the current connection, or once there is one. */
  private dispatch(
    method: string,
    args: readonly unknown[],
    options: CallOptions,
    timeout: number | undefined,
    totalTimeout: number | undefined,
    retrier: UnprocessedRetry | undefined,
  ): Promise<unknown> {
    const ready = this.link.ready;
    if (ready !== undefined) return this.start(ready, method, args, timeout, totalTimeout, options, retrier);
    const started = performance.now();
    const signal = options.signal;
    const waitForReady = options.waitForReady ?? this.defaults.waitForReady;
    return this.connection(method, timeout, signal, waitForReady, started).then((connection) => {
      // The signal may have fired after the connection came up but before this
      // continuation ran; its listener is gone then, and a call started now
      // would not be cancelled.
      if (signal?.aborted) throw new RpcError(ErrorCode.CANCELLED, `${method}: cancelled while waiting for a connection`);
      const left = timeout === undefined ? undefined : Math.max(0, timeout - (performance.now() - started));
      return this.start(connection, method, args, left, totalTimeout, options, retrier);
    });
  }

  /**
   * A typed stub: `client.proxy<typeof calc>("calc").add(1, 2)` calls
   * `calc.add` and type-checks arguments and result against the handler's
   * signature, with no code generation. `options` apply to every call made
   * through it.
   */
  proxy<T>(group = "", options?: CallOptions): ServiceProxy<T> {
    return createProxy<T>(this.proxyTarget, group, options);
  }

  /** Graceful close: no new calls; in-flight calls finish; resolves when every connection has ended. */
  close(): Promise<void> {
    this.closed = true;
    return this.link.close();
  }

  /** Closes at once; in-flight calls reject with CANCELLED. */
  destroy(): void {
    this.closed = true;
    this.link.destroy(new RpcError(ErrorCode.CANCELLED, "client destroyed"));
  }

  private start(
    connection: Connection,
    method: string,
    args: readonly unknown[],
    timeout: number | undefined,
    totalTimeout: number | undefined,
    options: CallOptions,
    retrier: UnprocessedRetry | undefined,
    session?: number,
  ): Promise<unknown> {
    const streamId = connection.nextStreamId();
    if (streamId < 0) {
      if (session !== undefined)
        return Promise.reject(new RpcError(ErrorCode.UNAVAILABLE, `${method}: the session's connection has no stream ids left`));
      this.link.retire(connection);
      return this.dispatch(method, args, options, timeout, totalTimeout, retrier);
    }
    return startUnary(connection, streamId, method, args, timeout, totalTimeout, options, retrier, session);
  }

  /** Waits for a connection within the call's deadline and signal. */
  private connection(
    what: string,
    timeout: number | undefined,
    signal: AbortSignal | undefined,
    waitForReady: boolean,
    started: number,
  ): Promise<Connection> {
    return new Promise<Connection>((resolve, reject) => {
      let timer: LongTimer | undefined;
      const cleanup = (): void => {
        timer?.clear();
        signal?.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter = {
        waitForReady,
        resolve: (connection) => {
          cleanup();
          resolve(connection);
        },
        reject: (error) => {
          cleanup();
          reject(error);
        },
      };
      const giveUp = (error: RpcError): void => {
        this.link.cancelWait(waiter);
        waiter.reject(error);
      };
      const onAbort = (): void => giveUp(new RpcError(ErrorCode.CANCELLED, `${what}: cancelled while waiting for a connection`));
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeout !== undefined) {
        timer = new LongTimer(Math.max(0, timeout - (performance.now() - started)), () => {
          const last = this.link.lastFailure;
          const cause = last === undefined ? "" : ` (last error: ${last.message})`;
          giveUp(
            new RpcError(
              ErrorCode.DEADLINE_EXCEEDED,
              `${what}: no connection to ${this.endpoint} within the ${timeout} ms deadline${cause}`,
            ),
          );
        });
      }
      this.link.wait(waiter);
    });
  }
}

const NO_METADATA: Metadata = Object.freeze({}) as Metadata;

function pickerOf(choice: ClientOptions["picker"]): Picker {
  if (typeof choice === "function") return choice;
  if (choice === undefined || choice === "round-robin") return roundRobin();
  if (choice === "least-loaded") return leastLoaded();
  throw new RpcError(ErrorCode.INVALID_ARGUMENT, `unknown picker "${String(choice)}": use "round-robin", "least-loaded" or a function`);
}
