/**
 * Raw peers for the connection middleware tests: they connect from a chosen
 * loopback source address (127.0.0.2, ...; Linux routes all of 127.0.0.0/8
 * to loopback), send a real HELLO and report what the server answered. No
 * tests here.
 */
import assert from "node:assert/strict";
import { type Socket, connect } from "node:net";
import { decode } from "@msgpack/msgpack";
import { FRAME_HEADER_SIZE, FrameType } from "../../src/protocol/frame.js";
import { type RawFrame, helloFrame, within } from "../integration/helpers.js";

/** What the server answered a HELLO with. */
export type Outcome = { admitted: true } | { admitted: false; code: string; message: string; data: unknown };

/** Where to connect and from where. */
export interface Route {
  /** Server port (ignored with `path`). */
  port: number;
  /** A Unix socket path to connect to instead of a port. */
  path?: string;
  /** Server host; default 127.0.0.1. */
  host?: string;
  /** Source address; default the system's choice. */
  from?: string;
}

/** A socket speaking raw frames, from a chosen source address. */
export class LoopbackPeer {
  readonly socket: Socket;
  readonly frames: RawFrame[] = [];
  readonly closed: Promise<void>;
  isClosed = false;
  private buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= FRAME_HEADER_SIZE) {
        const length = this.buffer.readUInt32BE(0);
        if (this.buffer.length < FRAME_HEADER_SIZE + length) break;
        this.frames.push({
          type: this.buffer[4] as number,
          flags: this.buffer[5] as number,
          streamId: this.buffer.readUInt32BE(6),
          payload: Buffer.from(this.buffer.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + length)),
        });
        this.buffer = this.buffer.subarray(FRAME_HEADER_SIZE + length);
      }
      this.wake?.();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.isClosed = true;
        this.wake?.();
        resolve();
      });
    });
  }

  /** Connects (without sending anything). */
  static connect(route: Route): Promise<LoopbackPeer> {
    return new Promise((resolve, reject) => {
      const socket =
        route.path !== undefined
          ? connect(route.path)
          : connect({
              host: route.host ?? "127.0.0.1",
              port: route.port,
              ...(route.from === undefined ? {} : { localAddress: route.from }),
            });
      socket.once("connect", () => resolve(new LoopbackPeer(socket)));
      socket.once("error", reject);
    });
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** The next frame (of `type`, if given; PINGs skipped); fails after `ms` or if the socket closes first. */
  async next(type?: number, ms = 3000): Promise<RawFrame> {
    const end = performance.now() + ms;
    for (let i = 0; i < 10_000; i++) {
      while (this.frames.length > 0) {
        const f = this.frames.shift() as RawFrame;
        if (f.type === FrameType.PING && type !== FrameType.PING) continue;
        if (type === undefined || f.type === type) return f;
      }
      if (this.isClosed) assert.fail("socket closed while waiting for a frame");
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
    return assert.fail(`no frame within ${ms} ms`);
  }

  /** Reads the server's first frame: WELCOME (admitted) or ERROR on stream 0 (refused). */
  async answer(ms = 3000): Promise<Outcome> {
    const first = await this.next(undefined, ms);
    if (first.type === FrameType.WELCOME) return { admitted: true };
    assert.equal(first.type, FrameType.ERROR, `expected WELCOME or ERROR, got frame type ${first.type}`);
    assert.equal(first.streamId, 0);
    const [code, message, data] = decode(first.payload) as [string, string, unknown];
    return { admitted: false, code, message, data };
  }

  /** Asserts that the server closes the socket within `ms`. */
  async expectClosed(ms = 3000): Promise<void> {
    await within(this.closed, ms, "server closing the connection");
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Every peer a test opened, destroyed together at its end. */
export class Peers {
  private readonly all: LoopbackPeer[] = [];

  /** Connects, sends HELLO and returns the peer with the server's answer. */
  async hello(route: Route): Promise<{ peer: LoopbackPeer; outcome: Outcome }> {
    const peer = await this.connect(route);
    peer.write(helloFrame());
    const outcome = await peer.answer();
    return { peer, outcome };
  }

  /** Connects, sends HELLO, asserts WELCOME; returns the open peer. */
  async admitted(route: Route): Promise<LoopbackPeer> {
    const { peer, outcome } = await this.hello(route);
    assert.deepEqual(outcome, { admitted: true }, `expected ${route.from ?? "the peer"} to be admitted`);
    return peer;
  }

  /** Connects, sends HELLO, asserts ERROR `code` with a message matching `message`, and that the server closes. */
  async refused(route: Route, code: string, message?: RegExp): Promise<{ message: string; data: unknown }> {
    const { peer, outcome } = await this.hello(route);
    assert.equal(outcome.admitted, false, `expected ${route.from ?? "the peer"} to be refused`);
    if (outcome.admitted) throw new Error("unreachable");
    assert.equal(outcome.code, code, `wrong code; message: ${outcome.message}`);
    if (message !== undefined) assert.match(outcome.message, message);
    await peer.expectClosed();
    return { message: outcome.message, data: outcome.data };
  }

  /** Connects without sending anything. */
  async connect(route: Route): Promise<LoopbackPeer> {
    const peer = await LoopbackPeer.connect(route);
    this.all.push(peer);
    return peer;
  }

  destroyAll(): void {
    for (const peer of this.all) peer.destroy();
  }
}

/** The port of a `host:port` or `[v6]:port` address. */
export function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}
