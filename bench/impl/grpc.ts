/**
 * Baseline (b): @grpc/grpc-js, the usual RPC framework of Node. No .proto and
 * no generated code: a service definition object whose serializers are
 * MessagePack (numbers, stream items) or raw bytes (echo), so the payload
 * encoding matches rapt's and what differs is the framework. The channel is
 * a bidirectional streaming call whose handler writes back each message.
 */
import * as grpc from "@grpc/grpc-js";
import { decode, encode } from "@msgpack/msgpack";
import type { BenchChannel, BenchConnection, BenchItem, BenchServer, Impl } from "./types.js";

const packed = (value: unknown): Buffer => {
  const bytes = encode(value);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};
const raw = (data: Uint8Array): Buffer => (Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
const identity = (bytes: Buffer): Buffer => bytes;

const definition = {
  add: {
    path: "/bench.Bench/Add",
    requestStream: false,
    responseStream: false,
    requestSerialize: (args: [number, number]) => packed(args),
    requestDeserialize: (bytes: Buffer) => decode(bytes) as [number, number],
    responseSerialize: (sum: number) => packed(sum),
    responseDeserialize: (bytes: Buffer) => decode(bytes) as number,
  },
  echo: {
    path: "/bench.Bench/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: identity,
    responseSerialize: raw,
    responseDeserialize: identity,
  },
  stream: {
    path: "/bench.Bench/Stream",
    requestStream: false,
    responseStream: true,
    requestSerialize: (count: number) => packed(count),
    requestDeserialize: (bytes: Buffer) => decode(bytes) as number,
    responseSerialize: (item: BenchItem) => packed(item),
    responseDeserialize: (bytes: Buffer) => decode(bytes) as BenchItem,
  },
  channel: {
    path: "/bench.Bench/Channel",
    requestStream: true,
    responseStream: true,
    requestSerialize: (message: BenchItem) => packed(message),
    requestDeserialize: (bytes: Buffer) => decode(bytes) as BenchItem,
    responseSerialize: (message: BenchItem) => packed(message),
    responseDeserialize: (bytes: Buffer) => decode(bytes) as BenchItem,
  },
} satisfies grpc.ServiceDefinition;

/** Messages up to the 4 MiB echo plus headroom (grpc-js refuses more than 4 MiB by default). */
const OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
};

async function startServer(): Promise<BenchServer> {
  let operations = 0;
  const server = new grpc.Server(OPTIONS);
  const implementation: grpc.UntypedServiceImplementation = {
    add(call: grpc.ServerUnaryCall<[number, number], number>, callback: grpc.sendUnaryData<number>) {
      operations++;
      callback(null, call.request[0] + call.request[1]);
    },
    echo(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      operations++;
      callback(null, call.request);
    },
    stream(call: grpc.ServerWritableStream<number, BenchItem>) {
      for (let i = 0; i < call.request; i++) {
        operations++;
        call.write({ seq: i, value: "item" });
      }
      call.end();
    },
    channel(call: grpc.ServerDuplexStream<BenchItem, BenchItem>) {
      call.on("data", (message: BenchItem) => {
        operations++;
        call.write(message);
      });
      call.on("end", () => call.end());
      // A client that goes away cancels the call; nothing to clean up.
      call.on("error", () => undefined);
    },
  };
  server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return {
    address: `127.0.0.1:${port}`,
    operations: () => operations,
    close: () => {
      server.forceShutdown();
      return Promise.resolve();
    },
  };
}

/** The methods makeGenericClientConstructor adds for `definition`. */
interface BenchStub extends grpc.Client {
  add(args: [number, number], callback: grpc.requestCallback<number>): grpc.ClientUnaryCall;
  echo(data: Uint8Array, callback: grpc.requestCallback<Buffer>): grpc.ClientUnaryCall;
  stream(count: number): grpc.ClientReadableStream<BenchItem>;
  channel(): grpc.ClientDuplexStream<BenchItem, BenchItem>;
}

/** A bidirectional call as a channel: each message written is answered by the next one read. */
function openChannel(stub: BenchStub): BenchChannel {
  const call = stub.channel();
  const waiting: { resolve(message: BenchItem): void; reject(error: Error): void }[] = [];
  call.on("data", (message: BenchItem) => waiting.shift()?.resolve(message));
  call.on("error", (error: Error) => {
    for (const w of waiting.splice(0)) w.reject(error);
  });
  return {
    echo: (message) =>
      new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        call.write(message);
      }),
    close: () => {
      call.cancel();
      return Promise.resolve();
    },
  };
}

const BenchClient = grpc.makeGenericClientConstructor(definition, "Bench");

async function connect(address: string): Promise<BenchConnection> {
  // A local subchannel pool gives each client its own TCP connection, as
  // rapt's Clients have (grpc-js otherwise shares one between them).
  const stub = new BenchClient(address, grpc.credentials.createInsecure(), {
    ...OPTIONS,
    "grpc.use_local_subchannel_pool": 1,
  }) as unknown as BenchStub;
  await new Promise<void>((resolve, reject) =>
    stub.waitForReady(Date.now() + 10_000, (error) => (error === undefined ? resolve() : reject(error))),
  );
  return {
    add: (a, b) =>
      new Promise((resolve, reject) => {
        stub.add([a, b], (error, sum) => (error === null ? resolve(sum as number) : reject(error)));
      }),
    echo: (data) =>
      new Promise((resolve, reject) => {
        stub.echo(data, (error, echoed) => (error === null ? resolve(echoed as Buffer) : reject(error)));
      }),
    stream: (count, onItem) =>
      new Promise((resolve, reject) => {
        let items = 0;
        const call = stub.stream(count);
        call.on("data", () => {
          items++;
          onItem?.();
        });
        call.on("end", () => resolve(items));
        call.on("error", reject);
      }),
    openChannel: () => Promise.resolve(openChannel(stub)),
    close: () => {
      stub.close();
      return Promise.resolve();
    },
  };
}

export const grpcImpl: Impl = { startServer, connect };
