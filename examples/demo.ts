// `npm run demo`: a server and a client in one process, saying what they do.
import { Client, ErrorCode, RpcError } from "rapt/client";
import { Server } from "rapt/server";
import { calc } from "./calc-service.js";

const server = new Server();
server.register("calc", calc);
const [address] = await server.listen("127.0.0.1:0");
console.log(`server: listening on ${address}, methods ${server.methods.join(", ")}`);

const client = new Client(address as string);
const stub = client.proxy<typeof calc>("calc");

console.log(`client: calc.add(40, 2) -> ${await stub.add(40, 2)}`);
console.log(`client: calc.whoami() -> ${await stub.whoami()}`);

const started = performance.now();
const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => stub.add(i, i)));
const ms = (performance.now() - started).toFixed(1);
console.log(`client: 1000 concurrent calls on one connection in ${ms} ms (last = ${results[999]})`);

try {
  await stub.divide(1, 0);
} catch (error) {
  console.log(`client: calc.divide(1, 0) -> ${(error as RpcError).code}: ${(error as RpcError).message}`);
}

const controller = new AbortController();
setTimeout(() => controller.abort(), 50);
try {
  await client.call("calc.slow", [5000], { signal: controller.signal });
} catch (error) {
  if (error instanceof RpcError && error.code === ErrorCode.CANCELLED) console.log("client: calc.slow(5000) cancelled after 50 ms");
}

await client.close();
await server.close();
console.log("done: client and server closed");
