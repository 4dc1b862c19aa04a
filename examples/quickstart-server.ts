import { Server } from "rapt/server";

export const calc = {
  add: (a: number, b: number) => a + b,
  async divide(a: number, b: number) {
    return a / b;
  },
};

const server = new Server();
server.register("calc", calc);
const [address] = await server.listen(process.argv[2] ?? "127.0.0.1:4000");
console.log(`listening on ${address}`);
process.once("SIGTERM", () => server.close());
