import { Client } from "rapt/client";
import type { calc } from "./quickstart-server.js";

const client = new Client(process.argv[2] ?? "127.0.0.1:4000");
const stub = client.proxy<typeof calc>("calc");
console.log(await stub.add(1, 2)); // 3, typed as number
// stub.add("1", 2) would not compile
await client.close();
