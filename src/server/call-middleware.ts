import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { Metadata } from "../protocol/wire-messages.js";
import type { PeerInfo } from "./call-context.js";
import type { Session } from "./session.js";

/**
 * What a {@link CallMiddleware} knows about a call: the handler's
 * `CallContext` plus the kind of call. `metadata` is mutable: entries a
 * middleware sets are what the handler sees as `this.metadata`.
 */
export interface CallMiddlewareContext {
  /** Full method (or channel) name, `group.name`. */
  readonly method: string;
  /** "call" for unary and streaming calls, "channel" for a channel open. */
  readonly kind: "call" | "channel";
  readonly peer: PeerInfo;
  /** Server-assigned id of the connection the call came on. */
  readonly connectionId: string;
  /** The call's metadata; set entries here to pass them to the handler. */
  readonly metadata: Metadata;
  /** Metadata the client sent in its handshake. */
  readonly connectionMetadata: Metadata;
  /** What the server's `authenticate` returned for this connection; undefined when not authenticated. */
  readonly auth: unknown;
  /** The client session the call was made in, if any. */
  readonly session: Session | undefined;
  /** Aborted when the caller cancels, the deadline passes or the connection drops. */
  readonly signal: AbortSignal;
  /** Absolute deadline (ms since the epoch, server clock), or undefined for none. */
  readonly deadline: number | undefined;
  /** What the server's `connectionState` factory made for this connection, if any. */
  readonly connectionState: unknown;
}

/**
 * A call middleware (`ServerOptions.callMiddleware`, `server.useCall`): runs
 * around every call, streaming call and channel open, in the order added, as
 * an onion. It runs once the method is found, authorized (see
 * `RegisterOptions.auth`) and its arguments decoded and validated, just
 * before the handler.
 *
 * `next()` runs the rest of the chain and the handler. It resolves with the
 * handler's result: for a streaming call, the iterable the handler returned
 * (so when the handler has returned it, not when the stream has ended); for a
 * channel, what the channel handler returned. It rejects with the call's
 * error, always an {@link RpcError} (a non-RpcError thrown by the handler is
 * INTERNAL, with its message only under `exposeErrors`).
 *
 * The answer is sent once every middleware's promise has settled. It is the
 * handler's result or error: middleware observes it but cannot change it
 * (return values are ignored, and an error from `next()` is sent even if a
 * middleware catches it). A middleware refuses the call by throwing: an
 * RpcError is sent as it is, anything else as INTERNAL ("internal error", or
 * its message with `exposeErrors`); its throw replaces the outcome even after
 * `next()`. Returning without calling `next()` refuses the call with
 * PERMISSION_DENIED "call to "X" refused by call middleware #N"; calling
 * `next()` twice rejects the second with INTERNAL.
 */
export type CallMiddleware = (ctx: CallMiddlewareContext, next: () => Promise<unknown>) => Promise<unknown> | unknown;

const noop = (): void => {};

/**
 * Runs `chain` around `handler`. Resolves with the handler's result, rejects
 * with the call's outcome error (raw: the caller converts it to an RpcError).
 * `toRpcError` converts what the handler threw, for `next()`.
 */
export function runCallChain(
  chain: readonly CallMiddleware[],
  ctx: CallMiddlewareContext,
  handler: () => Promise<unknown>,
  toRpcError: (error: unknown) => RpcError,
): Promise<unknown> {
  const step = async (index: number): Promise<unknown> => {
    if (index === chain.length) {
      try {
        return await handler();
      } catch (error) {
        throw toRpcError(error);
      }
    }
    const middleware = chain[index] as CallMiddleware;
    let inner: Promise<unknown> | undefined;
    const next = (): Promise<unknown> => {
      if (inner !== undefined) {
        const twice = Promise.reject(new RpcError(ErrorCode.INTERNAL, `call middleware #${index + 1} called next() more than once`));
        twice.catch(noop);
        return twice;
      }
      inner = step(index + 1);
      // Handled here: a middleware that does not await next() must not cause
      // an unhandled rejection; the outcome is still taken from `inner` below.
      inner.catch(noop);
      return inner;
    };
    try {
      await middleware(ctx, next);
    } catch (error) {
      throw toRpcError(error);
    }
    if (inner === undefined) {
      throw new RpcError(ErrorCode.PERMISSION_DENIED, `call to "${ctx.method}" refused by call middleware #${index + 1}`);
    }
    return inner;
  };
  return step(0);
}
