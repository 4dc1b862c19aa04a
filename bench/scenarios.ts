/**
 * The benchmark matrix: workloads (what the client does) times
 * implementations (rapt and the baselines). Adding a workload, or an
 * implementation to one, is one entry here; an entry whose implementation
 * cannot run it yet carries `pending` and is listed in the results without
 * numbers.
 */

/** rapt and the baselines measured next to it. */
export type ImplName = "rapt" | "minimal" | "grpc" | "http";

/** Every implementation, in table order. */
export const IMPLS: readonly ImplName[] = ["rapt", "minimal", "grpc", "http"];

/** The baselines, the columns of the ratio table. */
export const BASELINES: readonly ImplName[] = ["minimal", "grpc", "http"];

/** Human names of the implementations. */
export const IMPL_TITLES: Record<ImplName, string> = {
  rapt: "rapt",
  minimal: "minimal msgpack/net",
  grpc: "@grpc/grpc-js",
  http: "node:http + undici (JSON)",
};

/**
 * What the client does, over `connections` connections with `inFlight` operations outstanding on each:
 * unary calls, server streams, or (`channel`) one duplex channel per in-flight slot, each loop sending a
 * message and awaiting its echo; `idle` opens connections and holds them.
 */
export type WorkloadKind = "unary" | "server-stream" | "channel" | "idle";

/** One workload: a row group of the results table. */
export interface Workload {
  /** Stable id, used by `--only` and in the JSON (`unary-100`). */
  readonly id: string;
  /** One line for the table and the README. */
  readonly title: string;
  readonly kind: WorkloadKind;
  /** Unary method: `add` (two numbers in, one out) or `echo` (a binary payload in and out). */
  readonly method?: "add" | "echo";
  /** Size of the echoed payload, bytes. */
  readonly payloadBytes?: number;
  /** Connections (one client object each); idle: how many idle connections to open. */
  readonly connections: number;
  /** Operations outstanding per connection (closed loop: a new one starts when one completes). */
  readonly inFlight: number;
  /** Server stream: items per stream. */
  readonly items?: number;
  /** Both ends seal every payload with rapt's crypto processor (only rapt has one). */
  readonly crypto?: boolean;
  /** The client calls through rapt's typed proxy instead of `client.call` (only rapt has one). */
  readonly proxy?: boolean;
  /** Implementations to measure, in table order; the value is `true` or why the entry is pending. */
  readonly impls: Partial<Record<ImplName, true | string>>;
  /** Size used by `--quick` instead of `connections` (idle workloads). */
  readonly quickConnections?: number;
  /**
   * Id of a workload whose rounds this one's alternate with (round 1 of
   * both, then round 2, ...), so that a ratio between the two comes from
   * rounds measured side by side, as a baseline's does.
   */
  readonly pairedWith?: string;
}

const ALL: Partial<Record<ImplName, true | string>> = { rapt: true, minimal: true, grpc: true, http: true };
const KiB = 1024;
const MiB = 1024 * KiB;

/** The suite, in the order it runs. */
export const WORKLOADS: readonly Workload[] = [
  {
    id: "unary-1",
    title: "unary add(a, b), 1 call in flight on one connection (latency)",
    kind: "unary",
    method: "add",
    connections: 1,
    inFlight: 1,
    impls: ALL,
  },
  {
    id: "unary-100",
    title: "unary add(a, b), 100 calls in flight on one connection",
    kind: "unary",
    method: "add",
    connections: 1,
    inFlight: 100,
    impls: ALL,
  },
  {
    id: "unary-100-crypto",
    title: "unary add(a, b), 100 calls in flight on one connection, AES-256-GCM crypto processor on both ends",
    kind: "unary",
    method: "add",
    crypto: true,
    connections: 1,
    inFlight: 100,
    impls: { rapt: true },
    pairedWith: "unary-100",
  },
  {
    id: "unary-100-proxy",
    title: "unary add(a, b), 100 calls in flight on one connection, called through the typed proxy",
    kind: "unary",
    method: "add",
    proxy: true,
    connections: 1,
    inFlight: 100,
    impls: { rapt: true },
  },
  {
    id: "unary-1000",
    title: "unary add(a, b), 1,000 calls in flight on one connection",
    kind: "unary",
    method: "add",
    connections: 1,
    inFlight: 1000,
    impls: ALL,
  },
  {
    id: "unary-8conn",
    title: "unary add(a, b) over 8 connections (8 clients), 16 in flight on each",
    kind: "unary",
    method: "add",
    connections: 8,
    inFlight: 16,
    impls: ALL,
  },
  {
    id: "echo-64k",
    title: "echo of a 64 KiB binary payload, 8 in flight on one connection",
    kind: "unary",
    method: "echo",
    payloadBytes: 64 * KiB,
    connections: 1,
    inFlight: 8,
    impls: ALL,
  },
  {
    id: "echo-4m",
    title: "echo of a 4 MiB binary payload, 2 in flight on one connection",
    kind: "unary",
    method: "echo",
    payloadBytes: 4 * MiB,
    connections: 1,
    inFlight: 2,
    impls: ALL,
  },
  {
    id: "stream-1000",
    title: "server stream of 1,000 small items, 4 streams in flight on one connection (items/s)",
    kind: "server-stream",
    items: 1000,
    connections: 1,
    inFlight: 4,
    impls: { rapt: true, minimal: true, grpc: true },
  },
  {
    id: "stream-1",
    title: "one server stream of 10,000 small items at a time on one connection, flow control on (items/s)",
    kind: "server-stream",
    items: 10_000,
    connections: 1,
    inFlight: 1,
    impls: { rapt: true, minimal: true, grpc: true },
  },
  {
    id: "channel-echo",
    title: "16 duplex channels on one connection, each sending a small message and awaiting its echo",
    kind: "channel",
    connections: 1,
    inFlight: 16,
    impls: { rapt: true, minimal: true, grpc: true },
  },
  {
    id: "idle-10k",
    title: "10,000 idle connections that completed the handshake (server memory)",
    kind: "idle",
    connections: 10_000,
    quickConnections: 200,
    inFlight: 100,
    impls: { rapt: true, minimal: true },
  },
];

/** One cell of the matrix. */
export interface Scenario {
  /** `workload/impl`, e.g. `unary-100/rapt`. */
  readonly id: string;
  readonly workload: Workload;
  readonly impl: ImplName;
  /** Why it is not measured yet, if it is not. */
  readonly pending: string | undefined;
}

/** Every scenario of the suite, in run order. */
export function allScenarios(): Scenario[] {
  const out: Scenario[] = [];
  for (const workload of WORKLOADS) {
    for (const impl of IMPLS) {
      const entry = workload.impls[impl];
      if (entry === undefined) continue;
      // The baselines have no crypto processor or typed proxy and would silently measure the plain workload.
      if (impl !== "rapt" && entry === true && (workload.crypto === true || workload.proxy === true)) {
        throw new Error(`workload ${workload.id}: ${impl} cannot run it (crypto and proxy are rapt's own)`);
      }
      out.push({ id: `${workload.id}/${impl}`, workload, impl, pending: entry === true ? undefined : entry });
    }
  }
  return out;
}

/**
 * Scenarios selected by `--only`: each token is a scenario id
 * (`unary-1/rapt`), a workload id (`unary-1`, every implementation) or an
 * implementation (`grpc`, every workload). `micro` selects the frame
 * micro-benchmark, which is not a scenario. Unknown tokens throw.
 */
export function selectScenarios(only: readonly string[] | undefined): Scenario[] {
  const all = allScenarios();
  if (only === undefined) return all;
  const known = new Set<string>(["micro", ...IMPLS]);
  for (const s of all) {
    known.add(s.id);
    known.add(s.workload.id);
  }
  const unknown = only.filter((token) => !known.has(token));
  if (unknown.length > 0) {
    throw new Error(`--only: unknown scenario ${unknown.join(", ")}; known: ${[...known].join(", ")}`);
  }
  return all.filter((s) => only.includes(s.id) || only.includes(s.workload.id) || only.includes(s.impl));
}

/** How the throughput of a workload is counted. */
export function unitOf(workload: Workload): string {
  if (workload.kind === "server-stream") return "items/s";
  if (workload.kind === "idle") return "conn/s";
  if (workload.kind === "channel") return "echoes/s";
  return "calls/s";
}
