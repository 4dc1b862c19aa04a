// A unary client: `node dist/examples/unary-client.js [endpoint]` against unary-server.
import { Client, ErrorCode, RpcError } from "rapt/client";
import type { calc as Calc } from "./calc-service.js";

const client = new Client(process.argv[2] ?? "127.0.0.1:4000", { timeout: 5000 });
// Typed end to end, no code generation: the proxy's type comes from the service's.
const calc = client.proxy<typeof Calc>("calc");

console.log("add(2, 3) =", await calc.add(2, 3));
console.log("divide(1, 4) =", await calc.divide(1, 4));
console.log("whoami() =", await calc.whoami());

try {
  await client.call("calc.add", [2, "three"]);
} catch (error) {
  if (error instanceof RpcError && error.code === ErrorCode.INVALID_ARGUMENT) console.log("bad argument:", error.message);
  else throw error;
}

try {
  await client.call("calc.slow", [10_000], { timeout: 100 });
} catch (error) {
  if (error instanceof RpcError) console.log("slow call:", error.code);
  else throw error;
}

await client.close();
