// A unary server: `node dist/examples/unary-server.js [endpoint]`, then Ctrl-C.
import typia from "typia";
import { Server } from "rapt/server";
import { calc } from "./calc-service.js";

const server = new Server({
  hooks: {
    afterStart: (s) => console.log(`listening on ${s.addresses.join(", ")}`),
    afterStop: () => console.log("stopped"),
  },
});
server.register("calc", calc, {
  validate: {
    add: typia.createAssert<Parameters<typeof calc.add>>(),
    divide: typia.createAssert<Parameters<typeof calc.divide>>(),
  },
});
await server.listen(process.argv[2] ?? "127.0.0.1:4000");

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    // Stop accepting, let in-flight calls finish for up to 5 s, then exit.
    void server.close({ timeout: 5000 });
  });
}
