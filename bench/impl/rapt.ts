/**
 * rapt itself, used as an application would: a Server with a registered
 * service and an echoing channel, a Client per connection calling it by name
 * (or through the typed proxy), the crypto processor on both ends when the
 * workload asks for it.
 */
import { connect as netConnect } from "node:net";
import { encode } from "@msgpack/msgpack";
import type { Client } from "rapt/client";
import type { Processor } from "rapt/protocol";
import {
  type BenchChannel,
  type BenchConnection,
  type BenchItem,
  type BenchServer,
  type ConnectOptions,
  type IdleConnection,
  type Impl,
  type ServerOptions,
  splitAddress,
} from "./types.js";

/** The channel `openChannel` opens (a name of its own: `bench.echo` is the unary method). */
const CHANNEL = "bench.channel";

/**
 * One fixed AES-256 key under one key id, the same in server and client
 * processes (32 bytes: a SHA-256). Made only for crypto workloads, so a
 * plaintext server process loads no node:crypto before rapt itself does
 * (at its first handshake), as a plaintext rapt application would.
 */
async function benchKeys(): Promise<Record<string, Buffer>> {
  const { createHash } = await import("node:crypto");
  return { "bench-1": createHash("sha256").update("rapt bench key").digest() };
}

/** The benchmark service; `count` is called once per operation served. */
function benchService(count: () => void) {
  return {
    add(a: number, b: number): number {
      count();
      return a + b;
    },
    echo(data: Uint8Array): Uint8Array {
      count();
      return data;
    },
    async *stream(n: number): AsyncGenerator<BenchItem> {
      for (let seq = 0; seq < n; seq++) {
        count();
        yield { seq, value: "item" };
      }
    },
  };
}

/** The crypto processor when the workload asks for it (rapt/plugin is loaded only then). */
async function processors(crypto: boolean | undefined): Promise<Processor[]> {
  if (crypto !== true) return [];
  const plugin = await import("rapt/plugin");
  return [plugin.crypto({ keys: await benchKeys() })];
}

/** The service's type, for the typed proxy. */
type BenchService = ReturnType<typeof benchService>;

async function startServer(options: ServerOptions): Promise<BenchServer> {
  let operations = 0;
  // Imported here, not at the top: a server process loads what a rapt server
  // application loads (rapt/server), not the client too, which would add to
  // the RSS the idle workload measures.
  const { Server } = await import("rapt/server");
  const server = new Server({ processors: await processors(options.crypto) });
  server.register(
    "bench",
    benchService(() => operations++),
  );
  server.channel<BenchItem, BenchItem>(CHANNEL, async function (channel) {
    for await (const message of channel) {
      operations++;
      await channel.send(message);
    }
  });
  const [address] = await server.listen("127.0.0.1:0");
  return {
    address: address as string,
    operations: () => operations,
    close: () => server.close({ timeout: 1000 }),
  };
}

async function connect(address: string, options: ConnectOptions): Promise<BenchConnection> {
  // A processor instance per client, as separate applications would have.
  const { Client } = await import("rapt/client");
  const client = new Client(address, { processors: await processors(options.crypto) });
  await client.connect();
  const stub = client.proxy<BenchService>("bench");
  return {
    add: options.proxy ? (a, b) => stub.add(a, b) : (a, b) => client.call<number>("bench.add", [a, b]),
    echo: options.proxy ? (data) => stub.echo(data) : (data) => client.call<Uint8Array>("bench.echo", [data]),
    stream: async (count, onItem) => {
      let items = 0;
      for await (const _item of client.stream("bench.stream", [count])) {
        items++;
        onItem?.();
      }
      return items;
    },
    openChannel: () => Promise.resolve(openChannel(client)),
    close: () => client.close(),
  };
}

/** A channel to the echoing handler; its one reader is the closed loop that owns it. */
function openChannel(client: Client): BenchChannel {
  const channel = client.channel<BenchItem, BenchItem>(CHANNEL);
  const messages = channel[Symbol.asyncIterator]();
  return {
    echo: async (message) => {
      await channel.send(message);
      const next = await messages.next();
      if (next.done === true) throw new Error("channel ended by the server");
      return next.value;
    },
    close: () => {
      channel.close();
      return Promise.resolve();
    },
  };
}

/**
 * A bare socket that sends HELLO, waits for WELCOME and then only answers
 * PINGs (so the server's keepalive keeps it): what the server holds for an
 * idle client, without the client-side cost of 10,000 Client objects.
 */
async function connectIdle(address: string): Promise<IdleConnection> {
  const { host, port } = splitAddress(address);
  const { DEFAULT_LIMITS, FRAME_HEADER_SIZE, FrameDecoder, FrameType, PROTOCOL_VERSION, writeFrameHeader } = await import("rapt/protocol");
  const hello = encode({ version: PROTOCOL_VERSION, limits: DEFAULT_LIMITS });
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + hello.length);
  writeFrameHeader(frame, 0, hello.length, FrameType.HELLO, 0, 0);
  frame.set(hello, FRAME_HEADER_SIZE);
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port, noDelay: true });
    let welcomed = false;
    const decoder = new FrameDecoder(
      {
        onFrame(type, _flags, _streamId, payload) {
          if (type === FrameType.WELCOME && !welcomed) {
            welcomed = true;
            resolve({ close: () => socket.destroy() });
          } else if (type === FrameType.PING) {
            const pong = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload.length);
            writeFrameHeader(pong, 0, payload.length, FrameType.PONG, 0, 0);
            pong.set(payload, FRAME_HEADER_SIZE);
            socket.write(pong);
          } else if (type === FrameType.ERROR && !welcomed) {
            socket.destroy();
            reject(new Error("server answered HELLO with ERROR"));
          }
        },
      },
      { maxFrameSize: DEFAULT_LIMITS.maxFrameSize },
    );
    socket.on("data", (chunk: Buffer) => decoder.push(chunk));
    socket.once("error", (error) => {
      if (!welcomed) reject(error);
    });
    socket.write(frame);
  });
}

export const rapt: Impl = { startServer, connect, connectIdle };
