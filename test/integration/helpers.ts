/**
 * Shared helpers of the loopback tests: raw-socket peers that speak (or break)
 * the frame protocol, bounded waits, and assertions on RpcErrors. No tests
 * here; the runner may load this file as one and find nothing to run.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { type Server as NetServer, type Socket, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decode, encode } from "@msgpack/msgpack";
import { FRAME_HEADER_SIZE, FrameType, writeFrameHeader } from "../../src/protocol/frame.js";
import { RpcError } from "../../src/protocol/rpc-error.js";
import { PROTOCOL_VERSION } from "../../src/protocol/wire-messages.js";

/** A fresh Unix socket path under the OS temp directory. */
export function socketPath(tag: string): string {
  return join(tmpdir(), `rapt-${tag}-${process.pid}-${randomUUID().slice(0, 8)}.sock`);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Settles like `promise`, or rejects if it takes longer than `ms` (a "did not hang" check). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 5 ms until it holds; fails after `ms`. */
export async function waitFor(condition: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  for (let i = 0; i < 10_000; i++) {
    if (condition()) return;
    if (performance.now() > end) break;
    await sleep(5);
  }
  assert.fail(`${what}: condition not met within ${ms} ms`);
}

/** Asserts that `promise` rejects with an RpcError of `code` whose message matches `message` (if given); returns it. */
export async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp | string): Promise<RpcError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught !== undefined, `expected a rejection with ${code}, but the promise resolved`);
  assert.ok(caught instanceof RpcError, `expected an RpcError, got ${String(caught)}`);
  assert.equal(caught.code, code, `wrong code; message: ${caught.message}`);
  if (typeof message === "string") assert.ok(caught.message.includes(message), `"${caught.message}" should contain "${message}"`);
  else if (message !== undefined) assert.match(caught.message, message);
  return caught;
}

/** A promise with its resolve function, for observing a handler from the test. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** One frame with its header fields. */
export interface RawFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** Builds one frame: header plus payload. */
export function frame(type: number, flags: number, streamId: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_SIZE + payload.length);
  writeFrameHeader(out, 0, payload.length, type, flags, streamId);
  out.set(payload, FRAME_HEADER_SIZE);
  return out;
}

/** Limits a raw peer announces. */
export const RAW_LIMITS = { maxFrameSize: 1024 * 1024, maxMessageSize: 16 * 1024 * 1024, maxConcurrentStreams: 100 };

/** A HELLO frame. */
export function helloFrame(version = PROTOCOL_VERSION, metadata?: Record<string, string>, limits: object = RAW_LIMITS): Buffer {
  const hello: Record<string, unknown> = { version, limits };
  if (metadata !== undefined) hello.metadata = metadata;
  return frame(FrameType.HELLO, 0, 0, encode(hello));
}

/** A CALL payload from an already-built head and args (either may be deliberately malformed). */
export function callPayload(head: unknown, args: unknown): Buffer {
  const headBytes = encode(head);
  const argsBytes = encode(args);
  const out = Buffer.alloc(4 + headBytes.length + argsBytes.length);
  out.writeUInt32BE(headBytes.length, 0);
  out.set(headBytes, 4);
  out.set(argsBytes, 4 + headBytes.length);
  return out;
}

/** A complete CALL frame for `method(...args)`. */
export function callFrame(streamId: number, method: string, args: unknown[]): Buffer {
  return frame(FrameType.CALL, 0, streamId, callPayload([method], args));
}

/**
 * A hand-driven peer over a real socket: writes whatever bytes a test gives
 * it and parses what comes back into frames.
 */
/** Where a {@link RawPeer} connects, and from which source address. */
export interface PeerRoute {
  /** Server port (ignored with `path`). */
  port: number;
  /** A Unix socket path to connect to instead of a port. */
  path?: string;
  /** Server host; default 127.0.0.1. */
  host?: string;
  /** Source address (127.0.0.2, ...; Linux routes all of 127.0.0.0/8 to loopback); default the system's choice. */
  from?: string;
}

/**
 * Frames a raw test peer has received and not yet taken, and a bounded wait
 * for the next one (of a type, skipping PINGs), which fails when the socket
 * closes, the peer records a failure, or time runs out.
 */
export class FrameInbox {
  readonly frames: RawFrame[] = [];
  closed = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  push(frame: RawFrame): void {
    this.frames.push(frame);
    this.wake?.();
  }

  /** The socket closed: waits end. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  /** Reading failed: every later wait throws `error`. */
  fail(error: Error): void {
    this.failure = error;
    this.wake?.();
  }

  async next(type?: number, ms = 2000): Promise<RawFrame> {
    const end = performance.now() + ms;
    for (let i = 0; i < 10_000; i++) {
      if (this.failure !== undefined) throw this.failure;
      while (this.frames.length > 0) {
        const f = this.frames.shift() as RawFrame;
        if (f.type === FrameType.PING && type !== FrameType.PING) continue;
        if (type === undefined || f.type === type) return f;
      }
      if (this.closed) assert.fail(`socket closed while waiting for a frame${type === undefined ? "" : ` of type ${type}`}`);
      const left = end - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return assert.fail(`no frame${type === undefined ? "" : ` of type ${type}`} within ${ms} ms`);
  }
}

/** Hands each whole frame at the start of `buffer` to `onFrame` (payloads copied); returns the bytes left over. */
export function takeFrames(buffer: Buffer, onFrame: (frame: RawFrame) => void): Buffer {
  while (buffer.length >= FRAME_HEADER_SIZE && buffer.length >= FRAME_HEADER_SIZE + buffer.readUInt32BE(0)) {
    const length = buffer.readUInt32BE(0);
    onFrame({
      type: buffer[4] as number,
      flags: buffer[5] as number,
      streamId: buffer.readUInt32BE(6),
      payload: Buffer.from(buffer.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + length)),
    });
    buffer = buffer.subarray(FRAME_HEADER_SIZE + length);
  }
  return buffer;
}

/**
 * A server that answers every HELLO with a WELCOME announcing `limits` and
 * then answers nothing: what clients send lands in {@link inbox}, and a test
 * writes whatever it wants a client to receive on {@link sockets}.
 */
export class FakeServer {
  readonly inbox = new FrameInbox();
  readonly sockets: Socket[] = [];
  private readonly server: NetServer;

  private constructor(limits: object) {
    this.server = createServer((socket) => this.serve(socket, limits));
  }

  static async start(limits: object = RAW_LIMITS): Promise<FakeServer> {
    const fake = new FakeServer(limits);
    await new Promise<void>((resolve) => fake.server.listen(0, "127.0.0.1", resolve));
    return fake;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** Cuts every connection and stops listening. */
  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket, limits: object): void {
    this.sockets.push(socket);
    let buffer: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buffer = takeFrames(Buffer.concat([buffer, chunk]), (f) => {
        if (f.type === FrameType.HELLO) {
          socket.write(frame(FrameType.WELCOME, 0, 0, encode({ version: PROTOCOL_VERSION, connectionId: "fake", limits })));
        } else this.inbox.push(f);
      });
    });
    socket.on("error", () => {});
  }
}

/** What a server answered a HELLO with. */
export type HandshakeOutcome = { admitted: true } | { admitted: false; code: string; message: string; data: unknown };

export class RawPeer {
  readonly socket: Socket;
  /** Resolves once the socket has closed. */
  readonly closed: Promise<void>;
  private readonly inbox = new FrameInbox();
  private buffer: Buffer = Buffer.alloc(0);

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.buffer = takeFrames(Buffer.concat([this.buffer, chunk]), (f) => this.inbox.push(f));
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.inbox.close();
        resolve();
      });
    });
  }

  /** Connects to `127.0.0.1:port` or a Unix path. */
  static connect(target: number | string | PeerRoute): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const route: PeerRoute =
        typeof target === "number" ? { port: target } : typeof target === "string" ? { port: 0, path: target } : target;
      const socket =
        route.path !== undefined
          ? connect(route.path)
          : connect({
              host: route.host ?? "127.0.0.1",
              port: route.port,
              ...(route.from === undefined ? {} : { localAddress: route.from }),
            });
      socket.once("connect", () => resolve(new RawPeer(socket)));
      socket.once("error", reject);
    });
  }

  /** Reads the server's first frame: WELCOME (admitted) or ERROR on stream 0 (refused). */
  async answer(ms = 3000): Promise<HandshakeOutcome> {
    const first = await this.next(undefined, ms);
    if (first.type === FrameType.WELCOME) return { admitted: true };
    assert.equal(first.type, FrameType.ERROR, `expected WELCOME or ERROR, got frame type ${first.type}`);
    assert.equal(first.streamId, 0);
    const [code, message, data] = decode(first.payload) as [string, string, unknown];
    return { admitted: false, code, message, data };
  }

  /** Connects and completes the handshake (announcing `limits`); resolves once WELCOME is in. */
  static async open(target: number | string, limits: object = RAW_LIMITS): Promise<RawPeer> {
    const peer = await RawPeer.connect(target);
    peer.write(helloFrame(PROTOCOL_VERSION, undefined, limits));
    const welcome = await peer.next();
    assert.equal(welcome.type, FrameType.WELCOME);
    return peer;
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Frames received and not yet taken by {@link next}. */
  get frames(): readonly RawFrame[] {
    return this.inbox.frames;
  }

  /** Whether the socket has closed. */
  get isClosed(): boolean {
    return this.inbox.closed;
  }

  /** The next frame (of `type`, if given, skipping PINGs); fails after `ms` or if the socket closes first. */
  next(type?: number, ms = 2000): Promise<RawFrame> {
    return this.inbox.next(type, ms);
  }

  /** Waits for the next ERROR frame and decodes it as `[code, message, data?]`. */
  async nextError(ms = 2000): Promise<{ streamId: number; code: string; message: string; data: unknown }> {
    const f = await this.next(FrameType.ERROR, ms);
    const [code, message, data] = decode(f.payload) as [string, string, unknown];
    return { streamId: f.streamId, code, message, data };
  }

  /** Waits for the next RESULT frame and decodes it. */
  async nextResult(ms = 2000): Promise<{ streamId: number; value: unknown }> {
    const f = await this.next(FrameType.RESULT, ms);
    return { streamId: f.streamId, value: decode(f.payload) };
  }

  /** Asserts that the server closes the socket within `ms`. */
  async expectClosed(ms = 2000): Promise<void> {
    await within(this.closed, ms, "server closing the raw connection");
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Both ends of real TCP connections on 127.0.0.1, for tests that drive a Connection directly; {@link close} destroys them all. */
export class SocketPairs {
  private readonly listener: NetServer;
  private readonly accepted: Socket[] = [];
  private readonly opened: Socket[] = [];

  private constructor() {
    this.listener = createServer((socket) => this.accepted.push(socket));
  }

  static async start(): Promise<SocketPairs> {
    const pairs = new SocketPairs();
    await new Promise<void>((resolve) => pairs.listener.listen(0, "127.0.0.1", resolve));
    return pairs;
  }

  /** A new connection: `near` connected, `far` the listener's end of it. */
  async pair(): Promise<{ near: Socket; far: Socket }> {
    const before = this.accepted.length;
    const near = connect({ host: "127.0.0.1", port: (this.listener.address() as { port: number }).port });
    this.opened.push(near);
    await new Promise<void>((resolve, reject) => {
      near.once("connect", resolve);
      near.once("error", reject);
    });
    await waitFor(() => this.accepted.length > before, 2000, "the listener accepting the socket");
    return { near, far: this.accepted[this.accepted.length - 1] as Socket };
  }

  close(): Promise<void> {
    for (const socket of [...this.opened, ...this.accepted]) socket.destroy();
    return new Promise((resolve) => this.listener.close(() => resolve()));
  }
}
