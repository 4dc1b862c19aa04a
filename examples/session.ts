// Sessions: `node dist/examples/session.js`. Calls inside client.session() go to
// one connection and share server-side state, released when the session ends.
import { Client } from "rapt/client";
import { type CallContext, Server } from "rapt/server";

const cart = {
  add(this: CallContext, item: string): string[] {
    const session = this.session;
    if (session === undefined) throw new Error("cart.add needs a session");
    const items = (session.state.get("items") as string[] | undefined) ?? [];
    if (items.length === 0) session.onClose(() => console.log(`server: session ${session.id.slice(0, 8)} ended, cart released`));
    items.push(item);
    session.state.set("items", items);
    return items;
  },
  checkout(this: CallContext): string {
    const items = (this.session?.state.get("items") as string[] | undefined) ?? [];
    return `${items.length} items on connection ${this.connectionId.slice(0, 8)}`;
  },
};

const server = new Server();
server.register("cart", cart);
const [address] = await server.listen("127.0.0.1:0");
// A pool of four connections: outside a session, calls spread over them.
const client = new Client(address as string, { pool: { min: 4 } });
const stub = client.proxy<typeof cart>("cart");

const summary = await client.session(async (s) => {
  await s.call("cart.add", ["apples"]); // through the session object
  await stub.add("pears"); // or implicitly: everything inside is pinned
  const receipt = await stub.checkout();
  console.log(`client: ${receipt}, session on ${s.connectionId.slice(0, 8)}: ${receipt.endsWith(s.connectionId.slice(0, 8))}`);
  return receipt;
});
console.log(`client: session returned "${summary.split(" on ")[0]}"`);

await client.close();
await server.close();
