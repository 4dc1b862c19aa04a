import { MAX_CREDIT, decodeCredit } from "../protocol/credit.js";
import { FrameType, frameTypeName } from "../protocol/frame.js";
import { Channel } from "../protocol/channel.js";
import { InboundStream } from "../protocol/inbound-stream.js";
import { OutboundPump, type PumpSink } from "../protocol/outbound-pump.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import type { Metadata } from "../protocol/wire-messages.js";
import type { CallContext, PeerInfo } from "./call-context.js";
import type { CallMiddlewareContext } from "./call-middleware.js";
import { serverChannels } from "./diagnostics.js";
import type { Session } from "./session.js";
import { Remote } from "../client/remote.js";

const remotes = new WeakMap<Connection, Remote>();

/** The one {@link Remote} of a connection. */
export function remoteOf(connection: Connection): Remote {
  let remote = remotes.get(connection);
  if (remote === undefined) {
    remote = new Remote(connection);
    remotes.set(connection, remote);
  }
  return remote;
}

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 0x7fff_ffff;

/** What a {@link ServerCall} needs from the connection it arrived on. */
export interface CallHost {
  readonly connection: Connection;
  readonly peer: PeerInfo;
  readonly connectionMetadata: Metadata;
  /** Whether thrown non-RpcError messages reach the caller (else "internal error"). */
  readonly exposeErrors: boolean;
  /** What the server's `connectionState` factory made for this connection, if any. */
  readonly connectionState?: unknown;
  /** What the server's `authenticate` returned for this connection; undefined when not authenticated. */
  readonly auth?: unknown;
}

/**
 * One call on the server: the handler's `this` (its {@link CallContext}) and
 * the receiving end of its stream. It answers exactly once: a RESULT, items
 * then END (when the handler returns an async iterable), an ERROR, or nothing
 * when the caller cancelled or the connection dropped. A client stream's
 * items arrive through {@link attachInput}.
 */
export class ServerCall implements CallContext, CallMiddlewareContext, StreamReceiver, PumpSink {
  readonly method: string;
  readonly metadata: Metadata;
  readonly deadline: number | undefined;
  readonly streamId: number;
  private readonly host: CallHost;
  private controller: AbortController | undefined;
  private abortReason: RpcError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  private input: InboundStream | undefined;
  private pump: OutboundPump | undefined;
  private channel: Channel | undefined;
  /**
   * CREDIT the caller granted before the handler's stream or channel existed
   * (a client may grant right after its CALL, PROTOCOL.md §5.8): it counts
   * from the start, or the stream would stop at the window while the caller
   * waits for items it has credited.
   */
  private earlyCredit = 0;

  /** The client session the call was made in, if any. */
  readonly session: Session | undefined;

  constructor(host: CallHost, streamId: number, method: string, metadata: Metadata, timeoutMs: number | undefined, session?: Session) {
    this.host = host;
    this.session = session;
    this.streamId = streamId;
    this.method = method;
    this.metadata = metadata;
    if (timeoutMs === undefined) this.deadline = undefined;
    else {
      this.deadline = Date.now() + timeoutMs;
      this.arm(timeoutMs, timeoutMs);
    }
  }

  get peer(): PeerInfo {
    return this.host.peer;
  }

  get connectionId(): string {
    return this.host.connection.id;
  }

  get connectionMetadata(): Metadata {
    return this.host.connectionMetadata;
  }

  get connectionState(): unknown {
    return this.host.connectionState;
  }

  get auth(): unknown {
    return this.host.auth;
  }

  get kind(): "call" | "channel" {
    return this.channel === undefined ? "call" : "channel";
  }

  get remote(): Remote {
    return remoteOf(this.host.connection);
  }

  /** Created on first use: most handlers never look, and a controller per call is not free. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  /** Whether the call was answered or abandoned. */
  get finished(): boolean {
    return this.done;
  }

  /**
   * The AsyncIterable the handler receives for a client-streamed argument:
   * the caller's items, flow-controlled by this side's stream window.
   */
  attachInput(): InboundStream {
    const connection = this.host.connection;
    const streamId = this.streamId;
    this.input = new InboundStream(
      {
        grant: (n) => {
          if (!this.done) connection.sendCredit(streamId, n);
        },
        // The handler stopped reading: no more credit goes out, so the caller
        // stops sending; the call itself goes on until the handler answers.
        abandon: () => {},
      },
      connection.streamWindow,
    );
    return this.input;
  }

  /** The channel a channel handler receives; this call carries its frames. */
  attachChannel(): Channel {
    const connection = this.host.connection;
    const streamId = this.streamId;
    const channel = new Channel(this.method, connection.streamWindow);
    channel.attach(
      {
        item: (value) => connection.sendItem(streamId, value),
        end: () => connection.sendEmpty(FrameType.END, streamId),
        credit: (n) => connection.sendCredit(streamId, n),
        // The server's final frame: RESULT carrying the reason.
        close: (reason) => {
          if (this.done) return;
          this.finish();
          connection.sendValue(FrameType.RESULT, streamId, reason);
        },
        whenWritable: () => connection.whenWritable(),
      },
      this.initialCredit(),
    );
    this.channel = channel;
    return channel;
  }

  /** Sends the handler's result: an async iterable is streamed out as items. */
  succeed(value: unknown): void {
    if (this.done) return;
    if (this.channel !== undefined) {
      // The handler returned: the channel closes normally unless it already has.
      this.channel.close();
      return;
    }
    if (typeof value === "object" && value !== null && Symbol.asyncIterator in value) {
      this.pump = new OutboundPump(this, value as AsyncIterable<unknown>, this.initialCredit());
      void this.pump.run();
      return;
    }
    this.finish();
    try {
      this.host.connection.sendValue(FrameType.RESULT, this.streamId, value);
    } catch (error) {
      const reason =
        error instanceof RpcError && error.code === ErrorCode.RESOURCE_EXHAUSTED
          ? error
          : new RpcError(ErrorCode.INTERNAL, `${this.method}: result cannot be sent: ${(error as Error).message}`);
      this.host.connection.sendError(this.streamId, reason);
    }
  }

  /** Sends an error: an RpcError as it is; anything else as INTERNAL. */
  fail(error: unknown): void {
    if (this.done) return;
    const reason = this.toRpcError(error);
    this.finish();
    this.stopStreams(reason);
    this.host.connection.sendError(this.streamId, reason);
  }

  // --- PumpSink: the handler's result stream ---

  item(value: unknown, sent: number): void {
    if (!this.done) this.host.connection.sendItem(this.streamId, value, sent);
  }

  end(): void {
    if (this.done) return;
    this.finish();
    this.input?.fail(new RpcError(ErrorCode.CANCELLED, `${this.method}: the call has ended`));
    this.host.connection.sendEmpty(FrameType.END, this.streamId);
  }

  error(error: unknown): void {
    this.fail(error);
  }

  // --- StreamReceiver ---

  onMessage(type: number, payload: Buffer): void {
    if (this.done) return;
    switch (type) {
      case FrameType.CANCEL: {
        const reason = new RpcError(ErrorCode.CANCELLED, `${this.method}: cancelled by the caller`);
        this.abort(reason);
        this.finish();
        const channel = this.channel;
        if (channel !== undefined) {
          // A client closing its channel: the reason, if any, is the payload.
          channel.closeFromRemote({ reason: this.closeReason(payload), by: "remote" });
          return;
        }
        this.stopStreams(reason);
        return;
      }
      case FrameType.CREDIT:
        try {
          const n = decodeCredit(payload);
          if (this.pump !== undefined) this.pump.grant(n);
          else if (this.channel !== undefined) this.channel.grant(n);
          else this.earlyCredit = Math.min(MAX_CREDIT, this.earlyCredit + n);
        } catch (error) {
          this.violation(error as RpcError);
        }
        return;
      case FrameType.ITEM: {
        const receiver = this.input ?? this.channel;
        if (receiver === undefined) break;
        try {
          const value = this.host.connection.codec.decode(payload);
          if (!(receiver instanceof Channel ? receiver.receive(value, payload.length) : receiver.push(value, payload.length))) {
            this.violation(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: ITEM sent without credit`));
          }
        } catch (error) {
          this.violation(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
        }
        return;
      }
      case FrameType.ITEMS: {
        const receiver = this.input ?? this.channel;
        if (receiver === undefined) break;
        try {
          const values = this.host.connection.decodeItems(payload);
          if (!(receiver instanceof Channel ? receiver.receiveAll(values, payload.length) : receiver.pushAll(values, payload.length))) {
            this.violation(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: ITEMS of ${values.length} items exceeds the credit`));
          }
        } catch (error) {
          this.violation(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
        }
        return;
      }
      case FrameType.END:
        if (this.channel !== undefined) this.channel.receiveEnd();
        else if (this.input !== undefined) this.input.end();
        else break;
        return;
    }
    const streaming = this.input === undefined && this.channel === undefined ? "a call without a client stream" : "this call";
    this.violation(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: unexpected ${frameTypeName(type)} frame on ${streaming}`));
  }

  onReset(error: RpcError): void {
    this.abort(error);
    this.done = true;
    clearTimeout(this.timer);
    this.stopStreams(error, "remote");
  }

  /** The window the caller announced, plus what it granted before there was a stream to grant to. */
  private initialCredit(): number {
    return Math.min(MAX_CREDIT, this.host.connection.peerStreamWindow + this.earlyCredit);
  }

  private closeReason(payload: Buffer): string {
    if (payload.length === 0) return "";
    try {
      const reason = this.host.connection.codec.decode(payload);
      return typeof reason === "string" ? reason : "";
    } catch {
      return "";
    }
  }

  /** The caller broke the protocol on this stream: the handler is aborted and the caller told. */
  private violation(error: RpcError): void {
    this.abort(error);
    this.fail(error);
  }

  private stopStreams(reason: RpcError, by: "local" | "remote" = "local"): void {
    this.pump?.stop(reason);
    this.input?.fail(reason);
    this.channel?.closeFromRemote({ reason: reason.message, error: reason, by });
  }

  /**
   * Timeouts go up to the CALL head's uint32 (49.7 days), past setTimeout's
   * 24.8-day range, where it would fire after 1 ms: long ones are waited out
   * in steps.
   */
  private arm(left: number, timeoutMs: number): void {
    const step = Math.min(left, MAX_TIMER_MS);
    this.timer = setTimeout(() => (left > step ? this.arm(left - step, timeoutMs) : this.expire(timeoutMs)), step);
    this.timer.unref();
  }

  private expire(timeoutMs: number): void {
    const error = new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${this.method}: deadline of ${timeoutMs} ms exceeded`);
    this.abort(error);
    this.fail(error);
  }

  private abort(reason: RpcError): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }

  private finish(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.host.connection.removeStream(this.streamId);
  }

  /** What the caller is sent for `error`: an RpcError as it is, anything else INTERNAL (published on the handler-error channel). */
  toRpcError(error: unknown): RpcError {
    if (error instanceof RpcError) return error;
    if (serverChannels.handlerError.hasSubscribers) {
      serverChannels.handlerError.publish({ method: this.method, connectionId: this.connectionId, error });
    }
    if (!this.host.exposeErrors) return new RpcError(ErrorCode.INTERNAL, "internal error");
    return new RpcError(ErrorCode.INTERNAL, error instanceof Error ? error.message : String(error));
  }
}
