import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import { type ArgumentValidator, type CompiledValidator, compileValidator } from "./argument-validator.js";
import type { Channel } from "../protocol/channel.js";
import type { CallContext } from "./call-context.js";

/**
 * Who may call a function (`RegisterOptions.auth`): `true` requires an
 * authenticated connection (the server's `authenticate` returned something
 * other than undefined); a function also requires one and is then asked
 * whether this caller may call: it gets the connection's auth result and the
 * call's context (metadata included; arguments are not decoded yet) and
 * returns (or resolves to) true to allow. `false` or undefined: anyone.
 */
export type AuthRequirement = boolean | ((auth: unknown, ctx: CallContext) => boolean | Promise<boolean>);

/**
 * A function that can be registered. It receives the call's arguments and
 * the {@link CallContext} as `this`; it may be sync or async.
 */
export type Handler = (this: CallContext, ...args: never[]) => unknown;

/** Options of one registered function. */
export interface RegisterOptions {
  /** Checks the argument array before the handler runs; see {@link ArgumentValidator}. */
  validate?: ArgumentValidator;
  /**
   * Callable only from trusted peers (by default loopback and Unix sockets),
   * as rap's `is_private`. Others get PERMISSION_DENIED. Default false.
   */
  private?: boolean;
  /**
   * Authentication and permission required of callers; see
   * {@link AuthRequirement}. Checked before the arguments are decoded:
   * without auth the caller gets UNAUTHENTICATED "method "X" requires
   * authentication", a check returning false PERMISSION_DENIED. Default
   * false: no check.
   */
  auth?: AuthRequirement;
}

/** Options when registering a whole service object under a group. */
export interface RegisterServiceOptions {
  /** Validators by method name (relative to the group, `sub.name` for nested objects). */
  validate?: Record<string, ArgumentValidator>;
  /** Every method of the group is private. Default false. */
  private?: boolean;
  /** The {@link AuthRequirement} of every method of the group. Default false: no check. */
  auth?: AuthRequirement;
}

/**
 * A channel handler: gets the {@link CallContext} as `this` and the open
 * channel; the channel closes (normally) when it returns, or with its error
 * when it throws, unless it was closed before.
 */
export type ChannelHandler<Send = unknown, Receive = unknown> = (this: CallContext, channel: Channel<Send, Receive>) => unknown;

/** One registered method or channel. */
export interface MethodEntry {
  readonly name: string;
  /** A method (unary or streaming) or a duplex channel. */
  readonly kind: "method" | "channel";
  readonly fn: (...args: unknown[]) => unknown;
  readonly validate: CompiledValidator | undefined;
  readonly private: boolean;
  /** Undefined when anyone may call. */
  readonly auth: true | ((auth: unknown, ctx: CallContext) => boolean | Promise<boolean>) | undefined;
}

const NAME = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;

/**
 * An event listener (`server.on` / `client.on`): gets the event's arguments
 * and a {@link CallContext} as `this`. Its result is ignored; what it throws
 * is published on the `rapt:server:handler-error` diagnostics channel.
 */
export type EventListener = (this: CallContext, ...args: never[]) => unknown;

/** Method names to entries; names are checked and duplicates refused at registration. */
export class Registry {
  private readonly methods = new Map<string, MethodEntry>();
  private readonly listeners = new Map<string, EventListener[]>();

  /** Adds a listener for events named `event` from the other end. */
  addListener(event: string, listener: EventListener): void {
    if (!NAME.test(event) || event.length > 256) {
      throw new RpcError(
        ErrorCode.INVALID_ARGUMENT,
        `invalid event name "${event}": use identifiers joined by dots, at most 256 characters`,
      );
    }
    if (typeof listener !== "function") throw new RpcError(ErrorCode.INVALID_ARGUMENT, `listener for "${event}" must be a function`);
    const list = this.listeners.get(event);
    if (list === undefined) this.listeners.set(event, [listener]);
    else list.push(listener);
  }

  /** Removes a listener added with {@link addListener}. */
  removeListener(event: string, listener: EventListener): void {
    const list = this.listeners.get(event);
    if (list === undefined) return;
    const i = list.indexOf(listener);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.listeners.delete(event);
  }

  /** The listeners of `event` (empty when none). */
  listenersOf(event: string): readonly EventListener[] {
    return this.listeners.get(event) ?? [];
  }

  get(name: string): MethodEntry | undefined {
    return this.methods.get(name);
  }

  /** Registered method names, sorted. */
  names(): string[] {
    return [...this.methods.keys()].sort();
  }

  addFunction(name: string, fn: Handler, options: RegisterOptions = {}): void {
    this.methods.set(name, this.entry(name, fn, options));
  }

  /** One function under `name`, or every function of a plain object under the group `name`. */
  add(name: string, target: Handler | object, options?: RegisterOptions | RegisterServiceOptions): void {
    if (typeof target === "function") this.addFunction(name, target as Handler, options as RegisterOptions);
    else this.addService(name, target, options as RegisterServiceOptions);
  }

  /** Registers a duplex channel handler under `name` (the same namespace as methods). */
  addChannel(name: string, handler: ChannelHandler, options: Pick<RegisterOptions, "private" | "auth"> = {}): void {
    const entry = this.entry(name, handler as unknown as Handler, {
      private: options.private === true,
      ...(options.auth === undefined ? {} : { auth: options.auth }),
    });
    this.methods.set(name, { ...entry, kind: "channel" });
  }

  /** Checks one registration and builds its entry; throws without changing the registry. */
  private entry(name: string, fn: Handler, options: RegisterOptions): MethodEntry {
    if (!NAME.test(name) || name.length > 256) {
      throw new RpcError(
        ErrorCode.INVALID_ARGUMENT,
        `invalid method name "${name}": use identifiers joined by dots, at most 256 characters`,
      );
    }
    if (typeof fn !== "function") throw new RpcError(ErrorCode.INVALID_ARGUMENT, `"${name}" must be registered with a function`);
    if (this.methods.has(name)) throw new RpcError(ErrorCode.ALREADY_EXISTS, `method "${name}" is already registered`);
    const auth = options.auth;
    if (auth !== undefined && typeof auth !== "boolean" && typeof auth !== "function") {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `auth of "${name}" must be a boolean or a function (auth, ctx) => boolean`);
    }
    return {
      name,
      kind: "method",
      fn: fn as unknown as (...args: unknown[]) => unknown,
      validate: options.validate === undefined ? undefined : compileValidator(options.validate),
      private: options.private === true,
      auth: auth === true ? true : typeof auth === "function" ? auth : undefined,
    };
  }

  /**
   * Registers every function of the plain object `service` (nested plain
   * objects as sub-groups) as `group.name`. All names are checked
   * before any is added, so a duplicate leaves the registry unchanged.
   */
  addService(group: string, service: object, options: RegisterServiceOptions = {}): string[] {
    const found: Array<[string, Handler]> = [];
    collect(service, "", found, new Set());
    if (found.length === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, `service "${group}" has no functions to register`);
    for (const key of Object.keys(options.validate ?? {})) {
      if (!found.some(([relative]) => relative === key)) {
        throw new RpcError(ErrorCode.INVALID_ARGUMENT, `validator given for "${group}.${key}", which the service does not have`);
      }
    }
    // Every entry is built (name, duplicate and validator checked) before any
    // is added: one bad key or validator used to leave the methods before it
    // registered. A key containing a dot can also collide with a nested
    // object's method ({ "a.b": f, a: { b: g } }), so names are checked
    // against each other too.
    const entries = new Map<string, MethodEntry>();
    for (const [relative, fn] of found) {
      const name = `${group}.${relative}`;
      if (entries.has(name)) throw new RpcError(ErrorCode.ALREADY_EXISTS, `method "${name}" appears twice in the service`);
      const validate = options.validate?.[relative];
      entries.set(
        name,
        this.entry(name, fn, {
          ...(validate === undefined ? {} : { validate }),
          ...(options.auth === undefined ? {} : { auth: options.auth }),
          private: options.private === true,
        }),
      );
    }
    const names: string[] = [];
    for (const [name, entry] of entries) {
      this.methods.set(name, entry);
      names.push(name);
    }
    return names;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Only plain objects are services: a class instance's methods would be called
 * with `this` set to the CallContext and lose their instance, so it is refused.
 */
function collect(target: object, prefix: string, out: Array<[string, Handler]>, ancestors: Set<object>): void {
  if (!isPlainObject(target)) {
    throw new RpcError(
      ErrorCode.INVALID_ARGUMENT,
      `service${prefix === "" ? "" : ` "${prefix.slice(0, -1)}"`} must be a plain object of functions (handlers get the CallContext as \`this\`, so class instances would lose theirs)`,
    );
  }
  // `ancestors` holds the objects on the current path only: it stops a cycle,
  // while a sub-object used twice ({ v1: api, v2: api }) is registered under
  // both names instead of silently only under the first.
  if (ancestors.has(target)) return;
  ancestors.add(target);
  for (const [key, value] of Object.entries(target)) {
    if (typeof value === "function") out.push([prefix + key, value as Handler]);
    else if (isPlainObject(value)) collect(value, `${prefix}${key}.`, out, ancestors);
  }
  ancestors.delete(target);
}
