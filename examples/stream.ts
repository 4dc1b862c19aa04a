// Streams: `node dist/examples/stream.js`. A server stream read with for await,
// a client stream summed by the server, and a bidirectional stream.
import { Client } from "rapt/client";
import { type CallContext, Server } from "rapt/server";

const ticker = {
  /** A server stream: an async generator. Pass the signal to what you await. */
  async *count(this: CallContext, to: number, everyMs: number): AsyncGenerator<number> {
    for (let n = 1; n <= to; n++) {
      await new Promise((resolve) => setTimeout(resolve, everyMs));
      yield n;
    }
  },
  /** A client stream: the argument arrives as an AsyncIterable. */
  async sum(values: AsyncIterable<number>): Promise<number> {
    let total = 0;
    for await (const v of values) total += v;
    return total;
  },
  /** Both ways at once. */
  async *shout(words: AsyncIterable<string>): AsyncGenerator<string> {
    for await (const w of words) yield `${w.toUpperCase()}!`;
  },
};

async function* upTo(n: number): AsyncGenerator<number> {
  for (let i = 1; i <= n; i++) yield i;
}

async function* words(): AsyncGenerator<string> {
  yield "hello";
  yield "streams";
}

const server = new Server();
server.register("ticker", ticker);
const [address] = await server.listen("127.0.0.1:0");
const client = new Client(address as string);
const t = client.proxy<typeof ticker>("ticker");

for await (const n of t.count(3, 10)) console.log(`tick ${n}`);

// Leaving the loop early cancels the call; the server's generator is closed.
for await (const n of t.count(1000, 1)) {
  if (n === 2) {
    console.log("stopped reading after 2");
    break;
  }
}

console.log(`sum of 1..100 streamed to the server = ${await t.sum(upTo(100))}`);
for await (const s of t.shout(words())) console.log(s);

await client.close();
await server.close();
