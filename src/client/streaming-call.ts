import { encodeCallPrefix } from "../protocol/call-payload.js";
import type { Connection, StreamReceiver } from "../protocol/connection.js";
import { decodeCredit } from "../protocol/credit.js";
import { FrameType, frameTypeName } from "../protocol/frame.js";
import { InboundStream } from "../protocol/inbound-stream.js";
import { OutboundPump, type PumpSink } from "../protocol/outbound-pump.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { assertMetadata, errorFromBody } from "../protocol/wire-messages.js";
import type { CallOptions } from "./call-options.js";
import { LongTimer } from "./long-timer.js";

/**
 * What the caller expects back: one result (`unary`), items (`stream`), or
 * not yet known (`dual`, the typed proxy, which cannot see at run time
 * whether a method streams: the first of `await` or `for await` decides).
 */
export type ResponseMode = "unary" | "stream" | "dual";

/** A server stream as the caller sees it: `for await` over items, or cancel it. */
export interface ServerStream<T> extends AsyncIterable<T> {
  /** Abandons the call: the server is told (CANCEL) and iteration ends with CANCELLED. */
  cancel(): void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: RpcError };

function streamedError(method: string): RpcError {
  return new RpcError(ErrorCode.FAILED_PRECONDITION, `${method} streams its result: use client.stream() or iterate it with for await`);
}

/** The outcome of a call that streamed, should it be awaited after all; its error is made only then. */
class StreamedOutcome {
  readonly ok = false;
  private readonly method: string;

  constructor(method: string) {
    this.method = method;
  }

  get error(): RpcError {
    return streamedError(this.method);
  }
}

/** Who awaits a call's single result: a promise's two functions. */
export interface ResultTarget {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * The client's end of a call that streams in either direction: a
 * client-streamed argument (pumped out as ITEMs under the server's credit)
 * and/or a streamed response (ITEMs into an {@link InboundStream} under this
 * side's window). Created before it has a connection, so `client.stream()`
 * can return at once; {@link bind} sends the CALL.
 */
export class StreamingCall implements StreamReceiver, PumpSink, ServerStream<unknown> {
  readonly method: string;
  private readonly args: unknown[];
  private readonly options: CallOptions;
  private readonly inputArg: number | undefined;
  private mode: ResponseMode;
  private connection: Connection | undefined;
  private streamId = 0;
  private done = false;
  private outcome: Outcome | undefined;
  private settleUnary: ResultTarget | undefined;
  private output: InboundStream | undefined;
  private pump: OutboundPump | undefined;
  private timer: LongTimer | undefined;
  private readonly deadlineAt: number | undefined;
  private readonly totalTimeout: number | undefined;
  private onAbort: (() => void) | undefined;
  /** The server ended the stream with END. */
  private endedCleanly = false;
  /** Set by {@link settled}: told once how the call ended. */
  private onSettled: ((result: Outcome | RpcError | undefined) => void) | undefined;

  private readonly window: number;
  /** The session stream this call belongs to, if any; set before {@link bind}. */
  session: number | undefined;

  /** `window` is this side's stream window: items the server may send before a grant. */
  constructor(
    method: string,
    args: readonly unknown[],
    options: CallOptions,
    timeout: number | undefined,
    mode: ResponseMode,
    window: number,
  ) {
    this.method = method;
    this.window = window;
    this.options = options;
    this.mode = mode;
    this.totalTimeout = timeout;
    // A copy: the CALL may go out later (waiting for a connection), after the caller reused its array.
    const copy = args.slice();
    let inputArg = -1;
    for (let i = 0; i < copy.length; i++) {
      if (!isStreamSource(copy[i])) continue;
      if (inputArg >= 0) {
        throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: at most one argument may be streamed (an AsyncIterable)`);
      }
      inputArg = i;
    }
    if (inputArg >= 0) {
      if (inputArg > 255) throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: a streamed argument must be one of the first 256`);
      this.inputArg = inputArg;
    }
    this.args = copy;
    if (timeout !== undefined) {
      this.deadlineAt = performance.now() + timeout;
      this.timer = new LongTimer(timeout, () =>
        this.finishWith(new RpcError(ErrorCode.DEADLINE_EXCEEDED, `${method}: deadline of ${timeout} ms exceeded`), false),
      );
    }
    const signal = options.signal;
    if (signal !== undefined) {
      this.onAbort = () =>
        this.cancelWith(new RpcError(ErrorCode.CANCELLED, `${method}: cancelled by the caller`, undefined, { cause: signal.reason }));
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
  }

  /** Whether the call has ended (answered, failed or cancelled). */
  get finished(): boolean {
    return this.done;
  }

  /** Milliseconds left of the deadline, or undefined without one. */
  get timeLeft(): number | undefined {
    return this.deadlineAt === undefined ? undefined : Math.max(0, this.deadlineAt - performance.now());
  }

  /**
   * Sends the CALL on `connection` and starts pumping the streamed argument.
   * Throws (leaving nothing registered) if the call cannot be encoded.
   */
  bind(connection: Connection, streamId: number): void {
    if (this.done) return;
    const metadata = this.options.metadata === undefined ? undefined : assertMetadata(this.options.metadata);
    const sent = this.inputArg === undefined ? this.args : this.args.map((arg, i) => (i === this.inputArg ? null : arg));
    const left = this.timeLeft;
    const prefix = encodeCallPrefix(
      connection.codec,
      this.method,
      left === undefined ? undefined : Math.ceil(left),
      metadata,
      this.inputArg,
      undefined,
      this.session,
    );
    // A view of the shared encoder's buffer: nothing may encode until sendParts has copied it.
    const encodedArgs = connection.codec.encodeShared(sent);
    this.connection = connection;
    this.streamId = streamId;
    connection.addStream(streamId, this);
    connection.sendParts(FrameType.CALL, streamId, prefix, encodedArgs);
    // A method whose last stream had small items gets their credit with the
    // CALL, in the same write, not a round trip after its first items; not
    // with a CALL large enough to go in fragments, which a CREDIT may not
    // come between.
    if (this.mode !== "unary" && !connection.isFragmenting(streamId)) {
      const expected = connection.expectedItemBytes(this.method);
      if (expected > 0) {
        const grant = this.outputStream(expected).openingGrant();
        if (grant > 0) connection.sendCredit(streamId, grant, true);
      }
    }
    if (this.inputArg !== undefined) {
      const source = this.args[this.inputArg] as AsyncIterable<unknown> | Iterable<unknown>;
      this.pump = new OutboundPump(this, source, connection.peerStreamWindow);
      void this.pump.run();
    }
  }

  /** The call could not be started (no connection, deadline while waiting). */
  reject(error: RpcError): void {
    this.finishWith(error, false);
  }

  // --- the caller's two views ---

  /** The single result; makes this a unary call if the mode was still open. */
  result(): Promise<unknown> {
    return new Promise((resolve, reject) => this.awaitResult({ resolve, reject }));
  }

  /**
   * {@link result} for a caller that has its own promise (a proxy call): the
   * outcome goes straight to `target`, with no promise in between.
   */
  awaitResult(target: ResultTarget): void {
    if (this.mode === "stream") {
      target.reject(new RpcError(ErrorCode.FAILED_PRECONDITION, `${this.method}: this call is read as a stream; iterate it instead`));
      return;
    }
    this.mode = "unary";
    if (this.output !== undefined && this.output.buffered > 0) {
      this.cancelWith(this.streamedError());
    }
    const outcome = this.outcome;
    if (outcome === undefined) this.settleUnary = target;
    else if (outcome.ok) target.resolve(outcome.value);
    else target.reject(outcome.error);
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    if (this.mode === "unary") {
      throw new RpcError(
        ErrorCode.FAILED_PRECONDITION,
        `${this.method}: this call is awaited for a single result; it cannot also be iterated`,
      );
    }
    this.mode = "stream";
    const output = this.outputStream();
    const outcome = this.outcome;
    if (outcome !== undefined && !output.closed) {
      if (outcome.ok) output.fail(this.singleResultError());
      else output.fail(outcome.error);
    }
    return output;
  }

  cancel(): void {
    this.cancelWith(new RpcError(ErrorCode.CANCELLED, `${this.method}: cancelled by the caller`));
  }

  /** Ends the call with `error`, telling the server (CANCEL) if it was sent. */
  abort(error: RpcError): void {
    this.cancelWith(error);
  }

  /**
   * Resolves once the call is over: with its result, with undefined for a
   * stream that ended, or rejects with its error. For client interceptors,
   * which see a call end whichever way its caller reads it.
   */
  settled(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const settle = (result: Outcome | RpcError | undefined): void => {
        if (result === undefined) resolve(undefined);
        else if (result instanceof RpcError) reject(result);
        else if (result.ok) resolve(result.value);
        else reject(result.error);
      };
      // A stream that ended with END keeps a "streams its result" outcome for
      // a late await; for settled() it ended cleanly.
      if (this.done) settle(this.endedCleanly ? undefined : this.outcome);
      else this.onSettled = settle;
    });
  }

  // --- StreamReceiver ---

  onMessage(type: number, payload: Buffer): void {
    if (this.done) return;
    const connection = this.connection as Connection;
    try {
      switch (type) {
        case FrameType.RESULT: {
          const value = connection.codec.decode(payload);
          if (this.mode === "stream") this.finishWith(this.singleResultError(), false);
          else this.finishWith({ ok: true, value }, false);
          return;
        }
        case FrameType.ERROR:
          this.finishWith(errorFromBody(connection.codec.decode(payload)), false);
          return;
        case FrameType.ITEM: {
          if (this.mode === "unary") {
            this.cancelWith(this.streamedError());
            return;
          }
          if (!this.outputStream().push(connection.codec.decode(payload), payload.length)) {
            this.cancelWith(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: server sent an ITEM without credit`));
          }
          return;
        }
        case FrameType.ITEMS: {
          if (this.mode === "unary") {
            this.cancelWith(this.streamedError());
            return;
          }
          const values = connection.decodeItems(payload);
          if (!this.outputStream().pushAll(values, payload.length)) {
            this.cancelWith(
              new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: server sent ITEMS of ${values.length} items beyond the credit`),
            );
          }
          return;
        }
        case FrameType.END:
          if (this.mode === "unary") this.finishWith(this.streamedError(), false);
          else {
            const output = this.outputStream();
            output.end();
            connection.rememberItemBytes(this.method, output.averageItemBytes);
            // Should the (dual) call be awaited after all, it streamed. The
            // error is made only then: capturing its stack at every END
            // cost a client about 1% of a 10,000-item stream's time.
            this.outcome = new StreamedOutcome(this.method);
            this.finishWith(undefined, false);
          }
          return;
        case FrameType.CREDIT:
          this.pump?.grant(decodeCredit(payload));
          return;
      }
      this.cancelWith(new RpcError(ErrorCode.PROTOCOL_ERROR, `${this.method}: unexpected ${frameTypeName(type)} frame from the server`));
    } catch (error) {
      this.cancelWith(RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
    }
  }

  onReset(error: RpcError): void {
    this.finishWith(error, true);
  }

  // --- PumpSink: the streamed argument ---

  item(value: unknown, sent: number): void {
    if (!this.done) (this.connection as Connection).sendItem(this.streamId, value, sent);
  }

  end(): void {
    if (!this.done) (this.connection as Connection).sendEmpty(FrameType.END, this.streamId);
  }

  error(error: unknown): void {
    const reason =
      error instanceof RpcError
        ? error
        : new RpcError(
            ErrorCode.CANCELLED,
            `${this.method}: the streamed argument failed: ${(error as Error)?.message ?? String(error)}`,
            undefined,
            {
              cause: error,
            },
          );
    this.cancelWith(reason);
  }

  // --- internals ---

  /** The response stream, made on first use; `expectedItemBytes` as InboundStream's. */
  private outputStream(expectedItemBytes = 0): InboundStream {
    if (this.output === undefined) {
      this.output = new InboundStream(
        {
          grant: (n) => {
            if (!this.done) this.connection?.sendCredit(this.streamId, n);
          },
          abandon: () => this.cancelWith(new RpcError(ErrorCode.CANCELLED, `${this.method}: the caller stopped reading`)),
        },
        this.window,
        expectedItemBytes,
      );
    }
    return this.output;
  }

  private streamedError(): RpcError {
    return streamedError(this.method);
  }

  private singleResultError(): RpcError {
    return new RpcError(ErrorCode.FAILED_PRECONDITION, `${this.method} returns a single result, not a stream: await it (client.call())`);
  }

  /** Ends the call from this side: the server is told with CANCEL. */
  private cancelWith(error: RpcError): void {
    if (this.done) return;
    const connection = this.connection;
    if (connection !== undefined) connection.cancelStream(this.streamId);
    this.finishWith(error, false);
  }

  /**
   * Settles everything once. `error` undefined means the stream ended
   * normally (END). A deadline sends no CANCEL (the server runs the same
   * deadline) unless the CALL was cut off mid-message.
   */
  private finishWith(result: Outcome | RpcError | undefined, reset: boolean): void {
    if (this.done) return;
    this.done = true;
    this.timer?.clear();
    if (this.onAbort !== undefined) this.options.signal?.removeEventListener("abort", this.onAbort);
    const connection = this.connection;
    if (connection !== undefined && !reset) {
      if (result instanceof RpcError && result.code === ErrorCode.DEADLINE_EXCEEDED && connection.dropStream(this.streamId)) {
        connection.sendEmpty(FrameType.CANCEL, this.streamId);
      }
      connection.removeStream(this.streamId);
    }
    const outcome: Outcome | undefined = result instanceof RpcError ? { ok: false, error: result } : result;
    this.endedCleanly = outcome === undefined;
    const onSettled = this.onSettled;
    this.onSettled = undefined;
    onSettled?.(outcome);
    if (outcome !== undefined && !outcome.ok) {
      this.pump?.stop(outcome.error);
      this.output?.fail(outcome.error);
    } else this.pump?.stop();
    if (outcome === undefined) return;
    this.outcome = outcome;
    const target = this.settleUnary;
    if (target === undefined) return;
    this.settleUnary = undefined;
    if (outcome.ok) target.resolve(outcome.value);
    else target.reject(outcome.error);
  }
}

/** An argument sent as a stream: any AsyncIterable (a plain array is a value, not a stream). */
export function isStreamSource(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === "object" && value !== null && Symbol.asyncIterator in value;
}
