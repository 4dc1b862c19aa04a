/**
 * rapt itself, used as an application would: a Server with a registered
 * service, a Client per connection calling it by name.
 */
import { connect as netConnect } from "node:net";
import { encode } from "@msgpack/msgpack";
import { Client } from "rapt/client";
import { DEFAULT_LIMITS, FRAME_HEADER_SIZE, FrameDecoder, FrameType, PROTOCOL_VERSION, writeFrameHeader } from "rapt/protocol";
import { Server } from "rapt/server";
import { type BenchConnection, type BenchServer, type IdleConnection, type Impl, splitAddress } from "./types.js";

async function startServer(): Promise<BenchServer> {
  let operations = 0;
  const server = new Server();
  server.register("bench", {
    add(a: number, b: number): number {
      operations++;
      return a + b;
    },
    echo(data: Uint8Array): Uint8Array {
      operations++;
      return data;
    },
    async *stream(count: number): AsyncGenerator<{ seq: number; value: string }> {
      for (let seq = 0; seq < count; seq++) {
        operations++;
        yield { seq, value: "item" };
      }
    },
  });
  const [address] = await server.listen("127.0.0.1:0");
  return {
    address: address as string,
    operations: () => operations,
    close: () => server.close({ timeout: 1000 }),
  };
}

async function connect(address: string): Promise<BenchConnection> {
  const client = new Client(address);
  await client.connect();
  return {
    add: (a, b) => client.call<number>("bench.add", [a, b]),
    echo: (data) => client.call<Uint8Array>("bench.echo", [data]),
    stream: async (count) => {
      let items = 0;
      for await (const _item of client.stream("bench.stream", [count])) items++;
      return items;
    },
    close: () => client.close(),
  };
}

/**
 * A bare socket that sends HELLO, waits for WELCOME and then only answers
 * PINGs (so the server's keepalive keeps it): what the server holds for an
 * idle client, without the client-side cost of 10,000 Client objects.
 */
function connectIdle(address: string): Promise<IdleConnection> {
  const { host, port } = splitAddress(address);
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
