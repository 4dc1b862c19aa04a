import type { Channel } from "../protocol/channel.js";
import type { CallOptions } from "./call-options.js";
import type { ChannelOptions } from "./channel-call.js";
import type { ResultTarget, ServerStream, StreamingCall } from "./streaming-call.js";

/**
 * What a result type becomes after MessagePack: `undefined` (and `void`, a
 * handler returning nothing) arrives as `null`.
 */
export type WireValue<T> = [T] extends [void] ? null : T extends undefined ? null : T;

/**
 * The typed stub of a service: every function becomes a function with the
 * same parameters (the handler's `this: CallContext` is not one of them).
 * One whose result is an async iterable (an `async function*`) returns a
 * {@link ServerStream} to read with `for await`; any other returns a promise
 * of its awaited result. Nested objects become nested stubs.
 */
export type ServiceProxy<T> = {
  readonly [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? Awaited<R> extends AsyncIterable<infer I>
      ? (...args: A) => ServerStream<WireValue<I>>
      : (...args: A) => Promise<WireValue<Awaited<R>>>
    : T[K] extends object
      ? ServiceProxy<T[K]>
      : never;
};

/** What a proxy calls through (the client, privately). */
export interface ProxyTarget {
  open(method: string, args: readonly unknown[], options: CallOptions | undefined): StreamingCall;
}

/**
 * A proxy call: a real Promise of the result when awaited, and a
 * {@link ServerStream} when iterated; whichever is used first decides. It
 * cannot be known beforehand, as the method's type is gone at run time.
 */
export class ProxyCall<T> extends Promise<T> implements ServerStream<unknown> {
  // then/catch/finally derive plain promises, not more proxy calls.
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  private readonly call: StreamingCall;
  /** This promise's own resolve and reject, handed to the call once it is awaited. */
  private readonly settle: ResultTarget;
  private chosen = false;

  constructor(call: StreamingCall) {
    let settle!: ResultTarget;
    super((resolve, reject) => {
      settle = { resolve: resolve as (value: unknown) => void, reject };
    });
    this.call = call;
    this.settle = settle;
  }

  override then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    if (!this.chosen) {
      this.chosen = true;
      this.call.awaitResult(this.settle);
    }
    return super.then(onFulfilled, onRejected);
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    return this.call[Symbol.asyncIterator]();
  }

  cancel(): void {
    this.call.cancel();
  }
}

/**
 * The typed openers of channels: each channel handler of `T`, declared
 * `(this: CallContext, channel: Channel<Send, Receive>) => ...` from the
 * server's side, becomes `(options?) => Channel<Receive, Send>`, the
 * client's side. Nested objects become nested groups.
 */
export type ChannelProxy<T> = {
  readonly [K in keyof T]: T[K] extends (channel: Channel<infer Send, infer Receive>) => unknown
    ? (options?: ChannelOptions) => Channel<Receive, Send>
    : T[K] extends object
      ? ChannelProxy<T[K]>
      : never;
};

/**
 * Builds a stub whose property paths name methods: `stub.calc.add(1, 2)`
 * calls `prefix.calc.add`. Stubs for each path are made once and cached.
 */
export function createProxy<T>(target: ProxyTarget, prefix: string, options: CallOptions | undefined): ServiceProxy<T> {
  return node(
    prefix,
    (path) =>
      (...args: unknown[]) =>
        new ProxyCall(target.open(path, args, options)),
  ) as ServiceProxy<T>;
}

/** Builds a stub whose property paths name channels: `chat.join(options)` opens `prefix.chat.join`. */
export function createChannelProxy<T>(open: (name: string, options?: ChannelOptions) => Channel, prefix: string): ChannelProxy<T> {
  return node(prefix, (path) => (options?: ChannelOptions) => open(path, options)) as ChannelProxy<T>;
}

function node(path: string, leaf: (path: string) => (...args: never[]) => unknown): unknown {
  const children = new Map<string, unknown>();
  return new Proxy(leaf(path), {
    get(_fn, key) {
      // `then` must stay undefined, or `await stub` would treat the stub as a promise.
      if (typeof key !== "string" || key === "then") return undefined;
      let child = children.get(key);
      if (child === undefined) {
        child = node(path === "" ? key : `${path}.${key}`, leaf);
        children.set(key, child);
      }
      return child;
    },
  });
}
