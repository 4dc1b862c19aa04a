/**
 * What each implementation (rapt or a baseline) provides to the benchmark
 * processes. Every implementation serves the same three operations:
 * `add(a, b)`, `echo(bytes)` and a server stream of `count` small items;
 * most also a duplex channel that echoes each message.
 */

/** A stream item, and a channel message: small, so the per-message cost dominates. */
export interface BenchItem {
  seq: number;
  value: string;
}

/** What server processes are told about the workload. */
export interface ServerOptions {
  /** Seal every payload with the crypto processor (rapt only: see `allScenarios`). */
  readonly crypto: boolean;
}

/** A running server in the server process. */
export interface BenchServer {
  /** Where clients connect, as `host:port`. */
  readonly address: string;
  /** Operations served so far: unary calls, stream items sent, or channel messages echoed. */
  operations(): number;
  close(): Promise<void>;
}

/** One connection (one client object) in a client process. */
export interface BenchConnection {
  add(a: number, b: number): Promise<number>;
  echo(data: Uint8Array): Promise<Uint8Array>;
  /** Opens a server stream of `count` items, calling `onItem` as each arrives; resolves with the number of items received. */
  stream(count: number, onItem?: () => void): Promise<number>;
  /** Opens a duplex channel whose server end echoes every message. Absent if the implementation has none. */
  openChannel?(): Promise<BenchChannel>;
  close(): Promise<void>;
}

/** One open duplex channel, used by one closed loop at a time. */
export interface BenchChannel {
  /** Sends `message` and resolves with the next message the server sends back. */
  echo(message: BenchItem): Promise<BenchItem>;
  close(): Promise<void>;
}

/** An idle connection that has completed the implementation's handshake. */
export interface IdleConnection {
  close(): void;
}

/** What client processes are told about the workload. */
export interface ConnectOptions {
  /** Operations the load generator keeps outstanding on this connection. */
  readonly inFlight: number;
  /** Largest payload that will be sent, bytes (0 for none). */
  readonly payloadBytes: number;
  /** Seal every payload with the crypto processor (rapt only). */
  readonly crypto: boolean;
  /** Make unary calls through the typed proxy instead of `client.call` (rapt only). */
  readonly proxy: boolean;
}

/** One implementation: its server and its client side. */
export interface Impl {
  startServer(options: ServerOptions): Promise<BenchServer>;
  connect(address: string, options: ConnectOptions): Promise<BenchConnection>;
  /** Opens a connection that completes the handshake and then stays idle. Absent if the implementation has no idle workload. */
  connectIdle?(address: string): Promise<IdleConnection>;
}

/** Splits `host:port` (IPv4 or a name). */
export function splitAddress(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}
