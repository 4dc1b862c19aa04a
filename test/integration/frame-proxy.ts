/**
 * A TCP proxy for loopback tests that sees every unit relayed between a
 * client and a server, in both directions: the frames of a plaintext
 * connection, and on an encrypted one the HELLO and WELCOME frames and then
 * the records (PROTOCOL.md §13.3), which it can delimit by their length
 * but not read. It records them and may rewrite or drop those going to the
 * server (to flip a bit, replay, reorder). It forwards whole units only.
 * No tests here.
 */
import { type Server as NetServer, type Socket, connect, createServer } from "node:net";
import { decode } from "@msgpack/msgpack";
import { FRAME_HEADER_SIZE, FrameType } from "../../src/protocol/frame.js";
import type { RawFrame } from "./helpers.js";

/** One plaintext frame relayed, as raw bytes (header and payload) and parsed. */
export interface Recorded {
  bytes: Buffer;
  frame: RawFrame;
  /** Which relayed connection it belongs to, from 0. */
  connection: number;
}

/** One record relayed: its bytes, length prefix included. */
export interface RecordedRecord {
  bytes: Buffer;
  connection: number;
}

/** What a unit going to the server is, for {@link FrameProxyOptions.toServer}. */
export interface UnitInfo {
  /** Counts the units of its connection to the server from 0 (the HELLO); records count on after it. */
  index: number;
  kind: "frame" | "record";
  connection: number;
}

/** Options of a {@link FrameProxy}. */
export interface FrameProxyOptions {
  /**
   * Rewrites a unit going to the server (a frame's header and payload, or a
   * whole record): returns the bytes to forward instead (several units
   * joined, or none to drop it).
   */
  toServer?: (bytes: Buffer, unit: UnitInfo) => Buffer;
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

/**
 * One direction of a relayed connection: splits its bytes into frames until
 * the switch (if any), records after it.
 */
class Splitter {
  private buffer = Buffer.alloc(0);
  /** "frames" until the handshake frame; then "hold" while it is unknown whether records follow. */
  mode: "frames" | "hold" | "records" = "frames";
  private readonly onUnit: (bytes: Buffer, kind: "frame" | "record") => void;
  /** Called with the first frame; returns the mode that follows it. */
  private readonly afterFirst: (frame: RawFrame) => "frames" | "hold" | "records";
  private first = true;

  constructor(onUnit: (bytes: Buffer, kind: "frame" | "record") => void, afterFirst: (frame: RawFrame) => "frames" | "hold" | "records") {
    this.onUnit = onUnit;
    this.afterFirst = afterFirst;
  }

  push(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    this.drain();
  }

  /** Ends a "hold": what follows the first frame is `mode`. */
  decide(mode: "frames" | "records"): void {
    if (this.mode !== "hold") return;
    this.mode = mode;
    this.drain();
  }

  private drain(): void {
    for (let i = 0; i < 100_000 && this.mode !== "hold"; i++) {
      const header = this.mode === "frames" ? FRAME_HEADER_SIZE : 4;
      if (this.buffer.length < header) return;
      const size = header + this.buffer.readUInt32BE(0);
      if (this.buffer.length < size) return;
      const bytes = Buffer.from(this.buffer.subarray(0, size));
      this.buffer = this.buffer.subarray(size);
      const kind = this.mode === "frames" ? "frame" : "record";
      if (this.first) {
        this.first = false;
        this.mode = this.afterFirst(parseFrame(bytes));
      }
      this.onUnit(bytes, kind);
    }
  }
}

/** A recording (and optionally tampering) proxy in front of `127.0.0.1:targetPort`. */
export class FrameProxy {
  /** Plaintext frames sent by clients, in arrival order (before any rewrite). */
  readonly toServer: Recorded[] = [];
  /** Plaintext frames sent by the server. */
  readonly toClient: Recorded[] = [];
  /** Records sent by clients after an encrypted handshake (before any rewrite). */
  readonly recordsToServer: RecordedRecord[] = [];
  /** Records sent by the server after an encrypted handshake. */
  readonly recordsToClient: RecordedRecord[] = [];
  private readonly server: NetServer;
  private readonly sockets = new Set<Socket>();
  private connections = 0;
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

  /** Every byte relayed, all connections, both ways (grouped by kind and direction, not in arrival order). */
  wireBytes(): Buffer {
    return Buffer.concat([...this.toServer, ...this.recordsToServer, ...this.toClient, ...this.recordsToClient].map((r) => r.bytes));
  }

  private relay(client: Socket, targetPort: number, options: FrameProxyOptions): void {
    const connection = this.connections++;
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
    let index = 0;
    // The client's stream is records after its HELLO if the server's WELCOME
    // accepts encryption: hold it until the WELCOME (or a refusal) is seen.
    const up = new Splitter(
      (bytes, kind) => {
        if (kind === "frame") this.toServer.push({ bytes, frame: parseFrame(bytes), connection });
        else this.recordsToServer.push({ bytes, connection });
        upstream.write(options.toServer === undefined ? bytes : options.toServer(Buffer.from(bytes), { index, kind, connection }));
        index++;
      },
      () => "hold",
    );
    const down = new Splitter(
      (bytes, kind) => {
        if (kind === "frame") this.toClient.push({ bytes, frame: parseFrame(bytes), connection });
        else this.recordsToClient.push({ bytes, connection });
        client.write(bytes);
      },
      (first) => {
        const encrypted =
          first.type === FrameType.WELCOME &&
          (decode(first.payload) as { processors?: { crypto?: unknown } }).processors?.crypto !== undefined;
        up.decide(encrypted ? "records" : "frames");
        return encrypted ? "records" : "frames";
      },
    );
    client.on("data", (chunk: Buffer) => up.push(chunk));
    upstream.on("data", (chunk: Buffer) => down.push(chunk));
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  }

  /** Stops listening and cuts every relayed connection. */
  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
