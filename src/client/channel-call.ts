import { encodeCallPayload } from "../protocol/call-payload.js";
import { Channel } from "../protocol/channel.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import { decodeCredit } from "../protocol/credit.js";
import { FrameType, frameTypeName } from "../protocol/frame.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { CallKind, type Metadata, assertMetadata, errorFromBody } from "../protocol/wire-messages.js";

/** Options of {@link Client.channel}. */
export interface ChannelOptions {
  /** Sent with the open; the handler sees it as `this.metadata`. */
  metadata?: Metadata;
  /** Milliseconds the channel may stay open (sent to the server as its deadline). Default: none. */
  timeout?: number;
  /** Aborting it closes the channel (reason "aborted"). */
  signal?: AbortSignal;
  /** Wait through reconnects for a connection to open on. Default: the client's `waitForReady`. */
  waitForReady?: boolean;
}

/**
 * The client's end of a channel's stream: opens it with a CALL of kind
 * CHANNEL and moves frames between the connection and the {@link Channel}.
 * The client closes with CANCEL (carrying the reason); the server with RESULT
 * (its reason) or ERROR.
 */
export class ChannelCall implements StreamReceiver {
  readonly channel: Channel;
  private readonly options: ChannelOptions;
  private connection: Connection | undefined;
  private streamId = 0;
  private done = false;

  constructor(name: string, options: ChannelOptions, window: number) {
    this.channel = new Channel(name, window);
    this.options = options;
    const signal = options.signal;
    if (signal !== undefined) {
      const onAbort = (): void => this.channel.close("aborted");
      signal.addEventListener("abort", onAbort, { once: true });
      void this.channel.closed.then(() => signal.removeEventListener("abort", onAbort));
    }
  }

  /** Sends the open and attaches the channel to `connection`. */
  bind(connection: Connection, streamId: number, timeout: number | undefined, session?: number): void {
    if (this.channel.isClosed) return;
    const metadata = this.options.metadata === undefined ? undefined : assertMetadata(this.options.metadata);
    const payload = encodeCallPayload(
      connection.codec,
      this.channel.name,
      timeout === undefined ? undefined : Math.ceil(timeout),
      metadata,
      [],
      undefined,
      CallKind.CHANNEL,
      session,
    );
    this.connection = connection;
    this.streamId = streamId;
    connection.addStream(streamId, this);
    connection.send(FrameType.CALL, streamId, payload, true);
    this.channel.attach(
      {
        item: (value) => connection.sendItem(streamId, value),
        end: () => connection.sendEmpty(FrameType.END, streamId),
        credit: (n) => connection.sendCredit(streamId, n),
        close: (reason) => {
          if (this.done) return;
          this.done = true;
          connection.cancelStream(streamId, reason);
          connection.removeStream(streamId);
        },
        whenWritable: () => connection.whenWritable(),
      },
      connection.peerStreamWindow,
    );
  }

  /** The channel could not be opened (no connection, bad metadata). */
  fail(error: RpcError): void {
    this.done = true;
    this.channel.closeFromRemote({ reason: error.message, error, by: "remote" });
  }

  onMessage(type: number, payload: Buffer): void {
    if (this.done) return;
    const connection = this.connection as Connection;
    try {
      switch (type) {
        case FrameType.ITEM:
          if (!this.channel.receive(connection.codec.decode(payload), payload.length)) {
            this.abort(new RpcError(ErrorCode.PROTOCOL_ERROR, `channel ${this.channel.name}: server sent a message without credit`));
          }
          return;
        case FrameType.ITEMS: {
          const values = connection.decodeItems(payload);
          if (!this.channel.receiveAll(values, payload.length)) {
            this.abort(
              new RpcError(
                ErrorCode.PROTOCOL_ERROR,
                `channel ${this.channel.name}: server sent ITEMS of ${values.length} messages beyond the credit`,
              ),
            );
          }
          return;
        }
        case FrameType.END:
          this.channel.receiveEnd();
          return;
        case FrameType.CREDIT:
          this.channel.grant(decodeCredit(payload));
          return;
        case FrameType.RESULT: {
          const reason = connection.codec.decode(payload);
          this.settle();
          this.channel.closeFromRemote({ reason: typeof reason === "string" ? reason : "", by: "remote" });
          return;
        }
        case FrameType.ERROR: {
          const error = errorFromBody(connection.codec.decode(payload));
          this.settle();
          this.channel.closeFromRemote({ reason: error.message, error, by: "remote" });
          return;
        }
      }
      this.abort(new RpcError(ErrorCode.PROTOCOL_ERROR, `channel ${this.channel.name}: unexpected ${frameTypeName(type)} frame`));
    } catch (error) {
      this.abort(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    }
  }

  onReset(error: RpcError): void {
    if (this.done) return;
    this.done = true;
    this.channel.closeFromRemote({ reason: error.message, error, by: "remote" });
  }

  private settle(): void {
    this.done = true;
    this.connection?.removeStream(this.streamId);
  }

  /** Ends the channel from this side with `error`, telling the server (CANCEL) if it was opened. */
  abort(error: RpcError): void {
    if (this.done) return;
    this.connection?.cancelStream(this.streamId);
    this.settle();
    this.channel.closeFromRemote({ reason: error.message, error, by: "local" });
  }
}
