// A chat-style channel: `node dist/examples/chat.js`. Every message a member
// sends is broadcast to all members; leaving closes the member's channel.
import { Client } from "rapt/client";
import { type CallContext, type Channel, Server } from "rapt/server";

type ToMember = { from: string; text: string };
type FromMember = { text: string };

const members = new Set<Channel<ToMember, FromMember>>();

const server = new Server();
server.channel("chat.join", async function (this: CallContext, channel: Channel<ToMember, FromMember>) {
  const name = String(this.metadata.name ?? "anonymous");
  members.add(channel);
  try {
    for await (const { text } of channel) {
      // send() waits for the member's credit: a slow member slows only its own sends.
      await Promise.all([...members].map((m) => m.send({ from: name, text }).catch(() => {})));
    }
  } finally {
    members.delete(channel);
  }
});
const [address] = await server.listen("127.0.0.1:0");

const client = new Client(address as string);
const ada = client.channel<FromMember, ToMember>("chat.join", { metadata: { name: "ada" } });

async function read(who: string, channel: Channel<FromMember, ToMember>, count: number): Promise<void> {
  let seen = 0;
  for await (const { from, text } of channel) {
    console.log(`${who} sees ${from}: ${text}`);
    if (++seen === count) return;
  }
}

await ada.send({ text: "hello" });
await read("ada", ada, 1);
// Leaving a for-await loop stops reading, not the channel: later loops go on.
const bob = client.channel<FromMember, ToMember>("chat.join", { metadata: { name: "bob" } });
await bob.send({ text: "hi ada" });
await read("ada", ada, 1);
await read("bob", bob, 1);

ada.close("ada left");
console.log(`ada's channel closed: ${(await ada.closed).reason}`);
bob.close();
await client.close();
await server.close();
