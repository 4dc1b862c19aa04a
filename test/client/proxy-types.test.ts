/**
 * Compile-time checks of the typed proxy. Each `@ts-expect-error` line must
 * be a type error: if the proxy's typing regresses (to `any`, or keeps the
 * handler's `this` parameter), the directive is unused and the build fails.
 * At run time the same wrongly-typed calls are made against a server that
 * validates its arguments, which refuses them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import typia from "typia";
import { Client, type ServiceProxy } from "../../src/client/index.js";
import { type CallContext, Server } from "../../src/server/index.js";
import { rejectsWith } from "../integration/helpers.js";

const calc = {
  add: (a: number, b: number): number => a + b,
  greet(this: CallContext, name: string): string {
    return `hello ${name} from ${this.method}`;
  },
  nested: { twice: async (s: string): Promise<string> => s + s },
  version: 3,
  nothing(): void {},
  maybe: (n: number): number | undefined => (n > 0 ? n : undefined),
};

type Calc = ServiceProxy<typeof calc>;

/** true when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | undefined {
  return undefined;
}

// The `this: CallContext` parameter is not part of the proxy's signature.
expectType<Equal<Parameters<Calc["greet"]>, [name: string]>>();
expectType<Equal<ReturnType<Calc["greet"]>, Promise<string>>>();
expectType<Equal<Parameters<Calc["add"]>, [a: number, b: number]>>();
expectType<Equal<ReturnType<Calc["add"]>, Promise<number>>>();
// An async handler's promise is not nested.
expectType<Equal<ReturnType<Calc["nested"]["twice"]>, Promise<string>>>();
// undefined cannot cross MessagePack: a handler returning nothing or undefined gives null.
expectType<Equal<ReturnType<Calc["nothing"]>, Promise<null>>>();
expectType<Equal<ReturnType<Calc["maybe"]>, Promise<number | null>>>();
// Non-function properties cannot be called.
expectType<Equal<Calc["version"], never>>();

describe("typed proxy: compile-time checks", () => {
  const server = new Server();
  let client: Client;

  before(async () => {
    server.register("calc", calc, {
      validate: {
        add: typia.createAssert<Parameters<typeof calc.add>>(),
        greet: typia.createAssert<Parameters<typeof calc.greet>>(),
      },
    });
    const [address] = (await server.listen("127.0.0.1:0")) as [string];
    client = new Client(address);
  });

  after(async () => {
    await client.close();
    await server.close({ timeout: 1000 });
  });

  it("well-typed calls work", async () => {
    const c: Calc = client.proxy<typeof calc>("calc");
    const n: number = await c.add(1, 2);
    const s: string = await c.greet("ada");
    const t: string = await c.nested.twice("ab");
    assert.deepEqual([n, s, t], [3, "hello ada from calc.greet", "abab"]);
    // What the types say about undefined is what arrives.
    const none: null = await c.nothing();
    const maybe: number | null = await c.maybe(0);
    assert.deepEqual([none, maybe, await c.maybe(2)], [null, null, 2]);
  });

  it("wrongly-typed calls do not compile, and the server's validator refuses them", async () => {
    const c = client.proxy<typeof calc>("calc");
    // @ts-expect-error a string where a number is expected
    await rejectsWith(c.add("x", 2), "INVALID_ARGUMENT", /args\[0\].*number/);
    // @ts-expect-error a missing argument
    await rejectsWith(c.add(1), "INVALID_ARGUMENT");
    // @ts-expect-error the context is not passed by the caller
    await rejectsWith(c.greet({ method: "x" }, "ada"), "INVALID_ARGUMENT");
    // @ts-expect-error no such method
    await rejectsWith(c.subtract(1, 2), "NOT_FOUND", '"calc.subtract"');
    // @ts-expect-error the result is a number, not a string
    const wrong: string = await c.add(1, 2);
    assert.equal(wrong, 3);
  });
});
