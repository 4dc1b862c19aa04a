/**
 * A TCP proxy for loopback tests that sees every frame between a client and
 * a server: it records them in both directions and may rewrite those going
 * to the server (to flip a bit). It forwards whole frames only. No tests
 * here.
 */
import { type Server as NetServer, type Socket, connect, createServer } from "node:net";
import { FRAME_HEADER_SIZE } from "../../src/protocol/frame.js";
import type { RawFrame } from "./helpers.js";

/** One direction's frames, as raw bytes (header and payload) and parsed. */
export interface Recorded {
  bytes: Buffer;
  frame: RawFrame;
}

/** Options of a {@link FrameProxy}. */
export interface FrameProxyOptions {
  /**
   * Rewrites a frame going to the server (header and payload, as bytes);
   * `index` counts the frames of its connection from 0 (the HELLO).
   */
  toServer?: (bytes: Buffer, index: number) => Buffer;
}

/** Splits complete frames off the front of `buffer`; returns them and the rest. */
function splitFrames(buffer: Buffer): { frames: Buffer[]; rest: Buffer } {
  const frames: Buffer[] = [];
  let offset = 0;
  for (let i = 0; i < 100_000; i++) {
    if (buffer.length - offset < FRAME_HEADER_SIZE) break;
    const length = buffer.readUInt32BE(offset);
    if (buffer.length - offset < FRAME_HEADER_SIZE + length) break;
    frames.push(Buffer.from(buffer.subarray(offset, offset + FRAME_HEADER_SIZE + length)));
    offset += FRAME_HEADER_SIZE + length;
  }
  return { frames, rest: Buffer.from(buffer.subarray(offset)) };
}

/** Parses one frame's bytes. */
export function parseFrame(bytes: Buffer): RawFrame {
  return {
    type: bytes[4] as number,
    flags: bytes[5] as number,
    streamId: bytes.readUInt32BE(6),
    payload: bytes.subarray(FRAME_HEADER_SIZE),
  };
}

/** A recording (and optionally tampering) proxy in front of `127.0.0.1:targetPort`. */
export class FrameProxy {
  /** Frames sent by clients, in arrival order (before any rewrite). */
  readonly toServer: Recorded[] = [];
  /** Frames sent by the server. */
  readonly toClient: Recorded[] = [];
  private readonly server: NetServer;
  private readonly sockets = new Set<Socket>();
  readonly port: number;

  private constructor(server: NetServer, port: number) {
    this.server = server;
    this.port = port;
  }

  static start(targetPort: number, options: FrameProxyOptions = {}): Promise<FrameProxy> {
    return new Promise((resolve) => {
      let proxy: FrameProxy;
      const server = createServer((client) => proxy.relay(client, targetPort, options));
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        proxy = new FrameProxy(server, typeof address === "object" && address !== null ? address.port : 0);
        resolve(proxy);
      });
    });
  }

  /** The address clients connect to. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  private relay(client: Socket, targetPort: number, options: FrameProxyOptions): void {
    const upstream = connect({ host: "127.0.0.1", port: targetPort });
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    let up: Buffer = Buffer.alloc(0);
    let index = 0;
    client.on("data", (chunk: Buffer) => {
      const split = splitFrames(Buffer.concat([up, chunk]));
      up = split.rest;
      for (const bytes of split.frames) {
        this.toServer.push({ bytes, frame: parseFrame(bytes) });
        upstream.write(options.toServer === undefined ? bytes : options.toServer(Buffer.from(bytes), index));
        index++;
      }
    });
    let down: Buffer = Buffer.alloc(0);
    upstream.on("data", (chunk: Buffer) => {
      const split = splitFrames(Buffer.concat([down, chunk]));
      down = split.rest;
      for (const bytes of split.frames) {
        this.toClient.push({ bytes, frame: parseFrame(bytes) });
        client.write(bytes);
      }
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  }

  /** Stops listening and cuts every relayed connection. */
  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
