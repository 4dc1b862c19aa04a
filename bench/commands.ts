/** The commands the runner sends to its server, client and micro-benchmark processes, and their answers. */
import type { ImplName, Workload } from "./scenarios.js";

/** CPU and memory of a process over a measurement window. */
export interface ProcessSample {
  /** User plus system CPU time in the window, µs. */
  cpuUs: number;
  /** Length of the window, ms. */
  elapsedMs: number;
  /** Peak resident set size of the process so far, bytes. */
  maxRssBytes: number;
}

export interface ServerReport extends ProcessSample {
  /** Calls served (stream items sent, channel messages echoed) in the window. */
  operations: number;
}

export interface MemoryReport {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

export interface LoadReport extends ProcessSample {
  /** Completed operations (calls, stream items, or channel echoes) in the window. */
  operations: number;
  /** Completed streams or calls whose latency was recorded. */
  samples: number;
  errors: number;
  firstError: string | undefined;
  /** Latency percentiles, ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface IdleReport extends ProcessSample {
  /** Connections opened (each completed its handshake). */
  connections: number;
  /** Handshake latency percentiles (connect to handshake answer), ms. */
  p50Ms: number;
  p99Ms: number;
}

export interface ServerConfig {
  impl: ImplName;
  /** The workload the server is started for (some need server options, such as the crypto processor). */
  workload: Workload;
}

export interface ClientConfig {
  impl: ImplName;
  workload: Workload;
  address: string;
  /** Connections this process opens (load workloads). */
  connections: number;
}

export type ServerCommands = {
  init: { arg: ServerConfig; result: { address: string } };
  mark: { arg: undefined; result: null };
  report: { arg: undefined; result: ServerReport };
  memory: { arg: undefined; result: MemoryReport };
  exit: { arg: undefined; result: null };
};

export type ClientCommands = {
  init: { arg: ClientConfig; result: null };
  start: { arg: undefined; result: null };
  mark: { arg: undefined; result: null };
  stop: { arg: undefined; result: LoadReport };
  idle: { arg: { count: number; concurrency: number }; result: IdleReport };
  exit: { arg: undefined; result: null };
};

export interface MicroResult {
  name: string;
  /** Mean time per frame, ns. */
  nsPerFrame: number;
  p50NsPerFrame: number;
  p99NsPerFrame: number;
  /** Frames per measured iteration (the mitata timings are divided by it). */
  framesPerIteration: number;
}

export type MicroCommands = {
  run: { arg: { quick: boolean }; result: MicroResult[] };
  exit: { arg: undefined; result: null };
};
