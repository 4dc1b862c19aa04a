/**
 * Baseline (a): the least an RPC of this design can do. Over node:net, each
 * message is `length:u32be` + one MessagePack value (the same
 * @msgpack/msgpack rapt uses), writes are batched into one socket write per
 * event-loop turn as rapt's are, and there is nothing else: no handshake,
 * limits, validation, deadlines, cancellation, fragmentation or keepalive.
 * The ceiling for rapt's throughput and floor for its latency.
 *
 * Requests are `[id, method, args]`; answers `[id, kind, value]` with kind
 * 0 result, 1 stream item, 2 end of stream, 3 error. A channel is an id the
 * client picks and keeps: each `[id, "channel", [message]]` is answered with
 * `[id, 1, message]`, with no open, close or flow control.
 */
import { type Socket, connect as netConnect, createServer } from "node:net";
import { Decoder, Encoder } from "@msgpack/msgpack";
import {
  type BenchChannel,
  type BenchConnection,
  type BenchItem,
  type BenchServer,
  type IdleConnection,
  type Impl,
  splitAddress,
} from "./types.js";

const RESULT = 0;
const ITEM = 1;
const END = 2;
const ERROR = 3;

// Encoding and decoding are synchronous, so one pair serves every connection
// of the process (and an idle connection costs no codec).
const encoder = new Encoder();
const decoder = new Decoder();

/** A socket carrying length-prefixed MessagePack values in both directions. */
class FramedSocket {
  private readonly socket: Socket;
  private readonly onMessage: (value: unknown) => void;
  private queue: Buffer[] = [];
  private scheduled = false;
  /** Chunks of an incomplete message, and their total size. */
  private parts: Buffer[] = [];
  private buffered = 0;
  /** Size of the message being waited for (header included), or 0 while its header is incomplete. */
  private need = 0;
  private readonly flushBound = (): void => this.flush();

  constructor(socket: Socket, onMessage: (value: unknown) => void) {
    this.socket = socket;
    this.onMessage = onMessage;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => socket.destroy());
  }

  send(value: unknown): void {
    const body = encoder.encodeSharedRef(value);
    const frame = Buffer.allocUnsafe(4 + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.set(body, 4);
    this.queue.push(frame);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushBound);
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private flush(): void {
    this.scheduled = false;
    const queue = this.queue;
    this.queue = [];
    if (this.socket.destroyed) return;
    this.socket.write(queue.length === 1 ? (queue[0] as Buffer) : Buffer.concat(queue));
  }

  private onData(chunk: Buffer): void {
    if (this.buffered > 0) {
      this.parts.push(chunk);
      this.buffered += chunk.length;
      if (this.need === 0 && this.buffered >= 4) this.need = 4 + readLength(this.parts);
      if (this.need === 0 || this.buffered < this.need) return;
      chunk = Buffer.concat(this.parts, this.buffered);
      this.parts = [];
      this.buffered = 0;
      this.need = 0;
    }
    let offset = 0;
    while (chunk.length - offset >= 4) {
      const end = offset + 4 + chunk.readUInt32BE(offset);
      if (end > chunk.length) break;
      this.onMessage(decoder.decode(chunk.subarray(offset + 4, end)));
      offset = end;
    }
    if (offset < chunk.length) {
      const rest = chunk.subarray(offset);
      this.parts.push(rest);
      this.buffered = rest.length;
      this.need = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 0;
    }
  }
}

/** The u32be at the start of a list of chunks. */
function readLength(parts: readonly Buffer[]): number {
  const head = Buffer.concat(parts).subarray(0, 4);
  return head.readUInt32BE(0);
}

type Request = [id: number, method: string, args: unknown[]];

async function startServer(): Promise<BenchServer> {
  let operations = 0;
  const server = createServer({ noDelay: true }, (socket) => {
    const framed: FramedSocket = new FramedSocket(socket, (value) => {
      const [id, method, args] = value as Request;
      if (method === "add") {
        operations++;
        framed.send([id, RESULT, (args[0] as number) + (args[1] as number)]);
      } else if (method === "echo") {
        operations++;
        framed.send([id, RESULT, args[0]]);
      } else if (method === "stream") {
        const count = args[0] as number;
        for (let i = 0; i < count; i++) {
          operations++;
          framed.send([id, ITEM, { seq: i, value: "item" }]);
        }
        framed.send([id, END, null]);
      } else if (method === "channel") {
        operations++;
        framed.send([id, ITEM, args[0]]);
      } else if (method === "hello") {
        framed.send([id, RESULT, "welcome"]);
      } else framed.send([id, ERROR, `no method ${method}`]);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const bound = server.address();
  if (bound === null || typeof bound === "string") throw new Error("no TCP address");
  return {
    address: `127.0.0.1:${bound.port}`,
    operations: () => operations,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  /** Items received, for streams. */
  items: number;
  /** Called as each stream item arrives. */
  onItem?: (() => void) | undefined;
}

class MinimalClient implements BenchConnection {
  private readonly framed: FramedSocket;
  private readonly pending = new Map<number, Pending>();
  /** Open channels by id: the echoes each awaits, in order. */
  private readonly channels = new Map<number, Pending[]>();
  private nextId = 1;

  constructor(socket: Socket) {
    this.framed = new FramedSocket(socket, (value) => this.onAnswer(value as [number, number, unknown]));
    socket.on("close", () => {
      for (const p of this.pending.values()) p.reject(new Error("connection closed"));
      for (const waiting of this.channels.values()) for (const p of waiting) p.reject(new Error("connection closed"));
      this.pending.clear();
      this.channels.clear();
    });
  }

  request(method: string, args: unknown[], onItem?: () => void): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, items: 0, onItem });
      this.framed.send([id, method, args]);
    });
  }

  add(a: number, b: number): Promise<number> {
    return this.request("add", [a, b]) as Promise<number>;
  }

  echo(data: Uint8Array): Promise<Uint8Array> {
    return this.request("echo", [data]) as Promise<Uint8Array>;
  }

  stream(count: number, onItem?: () => void): Promise<number> {
    return this.request("stream", [count], onItem) as Promise<number>;
  }

  openChannel(): Promise<BenchChannel> {
    const id = this.nextId++;
    const waiting: Pending[] = [];
    this.channels.set(id, waiting);
    return Promise.resolve({
      echo: (message) =>
        new Promise<BenchItem>((resolve, reject) => {
          waiting.push({ resolve: resolve as (value: unknown) => void, reject, items: 0 });
          this.framed.send([id, "channel", [message]]);
        }),
      close: () => {
        this.channels.delete(id);
        return Promise.resolve();
      },
    });
  }

  close(): Promise<void> {
    this.framed.close();
    return Promise.resolve();
  }

  private onAnswer([id, kind, value]: [number, number, unknown]): void {
    const pending = this.pending.get(id);
    if (pending === undefined) {
      if (kind === ITEM) this.channels.get(id)?.shift()?.resolve(value);
      return;
    }
    if (kind === ITEM) {
      pending.items++;
      pending.onItem?.();
      return;
    }
    this.pending.delete(id);
    if (kind === RESULT) pending.resolve(value);
    else if (kind === END) pending.resolve(pending.items);
    else pending.reject(new Error(String(value)));
  }
}

function openSocket(address: string): Promise<Socket> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port, noDelay: true });
    socket.once("connect", () => {
      socket.removeListener("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

async function connect(address: string): Promise<BenchConnection> {
  return new MinimalClient(await openSocket(address));
}

/** The minimal protocol has no handshake; one answered request stands for it. */
async function connectIdle(address: string): Promise<IdleConnection> {
  const client = new MinimalClient(await openSocket(address));
  await client.request("hello", []);
  return { close: () => void client.close() };
}

export const minimal: Impl = { startServer, connect, connectIdle };
