import { ErrorCode, RpcError } from "../protocol/rpc-error.js";

/** The Standard Schema v1 interface (https://standardschema.dev), as far as rapt uses it. */
export interface StandardSchemaV1<Output = unknown> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>;
  };
}
type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | {
      readonly issues: ReadonlyArray<{
        readonly message: string;
        readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>;
      }>;
    };

/**
 * Checks a call's argument array before the handler runs. Accepted forms:
 * a typia `createAssert<Parameters<typeof fn>>()` (throws), a typia
 * `createValidate<...>()` (returns `{ success, errors }`), a typia
 * `createIs<...>()` (returns a boolean), or a Standard Schema object.
 */
export type ArgumentValidator = ((args: unknown) => unknown) | StandardSchemaV1;

/** A validator normalised to one shape: returns the (possibly transformed) args or throws INVALID_ARGUMENT. */
export type CompiledValidator = (method: string, args: unknown[]) => unknown[] | Promise<unknown[]>;

interface TypiaLikeError {
  path?: unknown;
  expected?: unknown;
}

function argPath(path: unknown): string {
  return typeof path === "string" ? path.replace(/^\$input/, "args") : "args";
}

function invalid(method: string, path: string, expected: string): RpcError {
  return new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: ${path} should be ${expected}`, { path, expected });
}

function fromStandard<T>(method: string, result: StandardResult<T>): unknown[] {
  if (result.issues === undefined) {
    if (!Array.isArray(result.value)) throw invalid(method, "args", "an array after validation");
    return result.value;
  }
  const issue = result.issues[0];
  const path = (issue?.path ?? []).map((p) => (typeof p === "object" && p !== null && "key" in p ? p.key : p));
  const where = `args${path.map((p) => `[${JSON.stringify(typeof p === "symbol" ? String(p) : p)}]`).join("")}`;
  throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: ${where}: ${issue?.message ?? "invalid"}`, {
    path: where,
    issues: result.issues.slice(0, 5).map((i) => i.message),
  });
}

/** Normalises any accepted validator form; see {@link ArgumentValidator}. */
export function compileValidator(validator: ArgumentValidator): CompiledValidator {
  if (typeof validator === "object" && validator !== null && "~standard" in validator) {
    const standard = validator["~standard"];
    return (method, args) => {
      const result = standard.validate(args);
      return result instanceof Promise ? result.then((r) => fromStandard(method, r)) : fromStandard(method, result);
    };
  }
  if (typeof validator !== "function") {
    throw new TypeError("validate must be a function (typia assert/validate/is) or a Standard Schema object");
  }
  return (method, args) => {
    let result: unknown;
    try {
      result = validator(args);
    } catch (error) {
      if (error instanceof RpcError) throw error;
      const e = error as TypiaLikeError;
      if (typeof e === "object" && e !== null && typeof e.expected === "string") {
        throw invalid(method, argPath(e.path), e.expected);
      }
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: ${(error as Error)?.message ?? String(error)}`);
    }
    if (result === false) throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${method}: arguments do not match the method's signature`);
    if (typeof result === "object" && result !== null && "success" in result && typeof result.success === "boolean") {
      if (result.success) return args;
      const errors = (result as { errors?: TypiaLikeError[] }).errors ?? [];
      const first = errors[0];
      throw invalid(method, argPath(first?.path), typeof first?.expected === "string" ? first.expected : "valid");
    }
    return Array.isArray(result) ? result : args;
  };
}
