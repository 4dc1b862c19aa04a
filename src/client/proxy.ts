import type { CallOptions } from "./call-options.js";

/**
 * The typed stub of a service: every function becomes an async function with
 * the same parameters (the handler's `this: CallContext` is not one of them)
 * and a promise of its awaited result; nested objects become nested stubs.
 */
export type ServiceProxy<T> = {
  readonly [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? (...args: A) => Promise<WireValue<Awaited<R>>>
    : T[K] extends object
      ? ServiceProxy<T[K]>
      : never;
};

/**
 * What a result type becomes after MessagePack: `undefined` (and `void`, a
 * handler returning nothing) arrives as `null`.
 */
export type WireValue<T> = [T] extends [void] ? null : T extends undefined ? null : T;

/** What a proxy calls through. */
export interface ProxyTarget {
  call(method: string, args: readonly unknown[], options?: CallOptions): Promise<unknown>;
}

/**
 * Builds a stub whose property paths name methods: `stub.calc.add(1, 2)`
 * calls `prefix.calc.add`. Stubs for each path are made once and cached.
 */
export function createProxy<T>(target: ProxyTarget, prefix: string, options: CallOptions | undefined): ServiceProxy<T> {
  return node(target, prefix, options) as ServiceProxy<T>;
}

function node(target: ProxyTarget, path: string, options: CallOptions | undefined): unknown {
  const children = new Map<string, unknown>();
  const invoke = (...args: unknown[]): Promise<unknown> => target.call(path, args, options);
  return new Proxy(invoke, {
    get(_fn, key) {
      // `then` must stay undefined, or `await stub` would treat the stub as a promise.
      if (typeof key !== "string" || key === "then") return undefined;
      let child = children.get(key);
      if (child === undefined) {
        child = node(target, path === "" ? key : `${path}.${key}`, options);
        children.set(key, child);
      }
      return child;
    },
  });
}
