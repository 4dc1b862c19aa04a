/**
 * The shape of bench/results/latest.json and the arithmetic on it: medians,
 * spreads, ratios, targets. Memory is in decimal units: MB = 10^6 bytes,
 * KB = 10^3 bytes.
 */
import type { MicroResult } from "./commands.js";
import { BASELINES, type ImplName, type WorkloadKind } from "./scenarios.js";

/** The numbers of one round of one scenario. */
export interface RoundResult {
  round: number;
  /** Operations per second: calls, stream items, or (idle) handshakes completed. */
  throughput: number;
  /** Latency of a call (stream: of a whole stream; idle: of a handshake), ms. */
  p50Ms: number;
  p99Ms: number;
  /** Server CPU time (user + system) per operation, µs. */
  serverCpuUsPerOp: number;
  /** Client CPU time per operation, µs (all client processes). */
  clientCpuUsPerOp: number;
  serverPeakRssMb: number;
  clientPeakRssMb: number;
  /** Operations in the measured window, and its length. */
  operations: number;
  elapsedMs: number;
  errors: number;
  firstError?: string;
  /**
   * Idle workloads: server memory (after GC) with the connections open and
   * idle for 12 s, 1 s after the last one opened, before any, and per
   * connection (idle).
   */
  serverRssMb?: number;
  serverRssAfterOpenMb?: number;
  serverRssBeforeMb?: number;
  rssPerConnectionKb?: number;
  heapPerConnectionBytes?: number;
  connections?: number;
  /** Process ids, so a test can check none outlived the run. */
  pids: { server: number; clients: number[] };
}

/** The fields of a round that are summarised as medians. */
export const NUMERIC_FIELDS = [
  "throughput",
  "p50Ms",
  "p99Ms",
  "serverCpuUsPerOp",
  "clientCpuUsPerOp",
  "serverPeakRssMb",
  "clientPeakRssMb",
  "serverRssMb",
  "serverRssAfterOpenMb",
  "serverRssBeforeMb",
  "rssPerConnectionKb",
  "heapPerConnectionBytes",
  "connections",
] as const;
export type NumericField = (typeof NUMERIC_FIELDS)[number];
export type Summary = Partial<Record<NumericField, number>>;

/**
 * rapt (or a baseline) divided by each baseline, same workload, same run.
 * Each is the median of per-round ratios: round n of one implementation runs
 * right after round n of the others, so pairing them cancels slow drifts in
 * the machine's load.
 */
export interface Ratios {
  /** Throughput ratio: above 1 is faster than the baseline. */
  throughput: number;
  /** p50 latency ratio: below 1 is quicker than the baseline. */
  p50: number;
  /** Server plus client CPU time per operation, ratio: below 1 is cheaper. Less sensitive to other load than throughput. */
  cpu: number;
  /** Idle workloads: server RSS with the connections open, ratio. */
  serverRss?: number;
}

export interface ScenarioResult {
  id: string;
  workload: string;
  impl: ImplName;
  kind: WorkloadKind;
  title: string;
  unit: string;
  /** Why the scenario has no numbers yet (the implementation cannot run it). */
  pending?: string;
  /** Set when a round failed; the scenario's numbers are then from the rounds that did not. */
  error?: string;
  note?: string;
  rounds: RoundResult[];
  median: Summary;
  /** (max - min) / median of each field across rounds, as a fraction. */
  spread: Summary;
  ratios: Partial<Record<ImplName, Ratios>>;
}

export interface Target {
  name: string;
  /** The measured value, or undefined when the scenarios it needs did not run. */
  value: number | undefined;
  comparison: "≥" | "≤" | "<";
  threshold: number;
  unit: string;
  met: boolean | undefined;
  note?: string;
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  /** 1-minute load average when the run started: other work on the machine. */
  loadAverage: number;
  fileDescriptorLimit: number | undefined;
  /** The rapt revision measured: git commit, and whether src/ had uncommitted changes. */
  commit: string | undefined;
  srcDirty: boolean | undefined;
}

export interface BenchResults {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  machine: MachineInfo;
  /** `nodeFlags`: absent in results written before the option existed (their processes ran with none). */
  options: { durationMs: number; warmupMs: number; rounds: number; quick: boolean; only: string[] | null; nodeFlags?: string[] };
  scenarios: ScenarioResult[];
  micro: MicroResult[];
  targets: Target[];
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Fills `median` and `spread` from the rounds. */
export function summarise(result: ScenarioResult): void {
  const ok = result.rounds.filter(usable);
  for (const field of NUMERIC_FIELDS) {
    const values = ok.map((r) => r[field]).filter((v): v is number => typeof v === "number" && Number.isFinite(v));
    if (values.length === 0) continue;
    const m = median(values);
    result.median[field] = m;
    result.spread[field] = m === 0 ? 0 : (Math.max(...values) - Math.min(...values)) / m;
  }
}

const usable = (r: RoundResult): boolean => r.errors === 0 && r.operations > 0;

/** Median over the rounds both sides completed of `value(a) / value(b)`; undefined without such a round. */
function pairedRatio(
  a: readonly RoundResult[],
  b: readonly RoundResult[],
  value: (r: RoundResult) => number | undefined,
): number | undefined {
  const ratios: number[] = [];
  for (const ra of a) {
    const rb = b.find((r) => r.round === ra.round);
    if (rb === undefined || !usable(ra) || !usable(rb)) continue;
    const va = value(ra);
    const vb = value(rb);
    if (va === undefined || vb === undefined || !(vb > 0)) continue;
    ratios.push(va / vb);
  }
  return ratios.length === 0 ? undefined : median(ratios);
}

/** Fills each scenario's ratios to the baselines of its workload. */
export function computeRatios(results: readonly ScenarioResult[]): void {
  for (const result of results) {
    for (const baseline of BASELINES) {
      const base = results.find((r) => r.workload === result.workload && r.impl === baseline);
      if (base === undefined) continue;
      const throughput = pairedRatio(result.rounds, base.rounds, (r) => r.throughput);
      const p50 = pairedRatio(result.rounds, base.rounds, (r) => r.p50Ms);
      const cpu = pairedRatio(result.rounds, base.rounds, (r) => r.serverCpuUsPerOp + r.clientCpuUsPerOp);
      if (throughput === undefined || p50 === undefined || cpu === undefined) continue;
      const ratios: Ratios = { throughput, p50, cpu };
      const serverRss = pairedRatio(result.rounds, base.rounds, (r) => r.serverRssMb);
      if (serverRss !== undefined) ratios.serverRss = serverRss;
      result.ratios[baseline] = ratios;
    }
  }
}

/** The targets rapt is measured against; reported, never asserted. */
export function evaluateTargets(results: readonly ScenarioResult[]): Target[] {
  const find = (id: string): ScenarioResult | undefined => results.find((r) => r.id === id);
  const unary100 = find("unary-100/rapt");
  const unary100Crypto = find("unary-100-crypto/rapt");
  const unary1 = find("unary-1/rapt");
  const stream1 = find("stream-1/rapt");
  const idle = find("idle-10k/rapt");
  const target = (t: Omit<Target, "met">): Target => {
    let met: boolean | undefined;
    if (t.value !== undefined) {
      met = t.comparison === "≥" ? t.value >= t.threshold : t.comparison === "≤" ? t.value <= t.threshold : t.value < t.threshold;
    }
    return { ...t, met };
  };
  const targets = [
    target({
      name: "unary, 100 in flight: rapt throughput vs the minimal msgpack baseline",
      value: unary100?.ratios.minimal?.throughput,
      comparison: "≥",
      threshold: 0.7,
      unit: "x",
    }),
    target({
      name: "unary, 100 in flight: rapt throughput vs @grpc/grpc-js",
      value: unary100?.ratios.grpc?.throughput,
      comparison: "≥",
      threshold: 30,
      unit: "x",
    }),
    target({
      name: "unary, 1 in flight: rapt p50 latency vs the minimal msgpack baseline",
      value: unary1?.ratios.minimal?.p50,
      comparison: "≤",
      threshold: 1.5,
      unit: "x",
    }),
    target({
      name: "server stream, one in flight, flow control on: rapt items/s (aim: 2,000,000)",
      value: stream1?.median.throughput,
      comparison: "≥",
      threshold: 1_000_000,
      unit: "items/s",
    }),
    target({
      name: "server stream, one in flight: rapt items/s vs @grpc/grpc-js",
      value: stream1?.ratios.grpc?.throughput,
      comparison: "≥",
      threshold: 15,
      unit: "x",
    }),
  ];
  // The two workloads' rounds alternate (Workload.pairedWith): the ratio is taken round by round, as a
  // baseline's is. A run without the plain workload's rounds falls back to the ratio of the medians.
  const paired =
    unary100 === undefined || unary100Crypto === undefined
      ? undefined
      : pairedRatio(unary100Crypto.rounds, unary100.rounds, (r) => r.throughput);
  const plain = unary100?.median.throughput;
  const sealed = unary100Crypto?.median.throughput;
  targets.push(
    target({
      name: "unary, 100 in flight: rapt throughput with the crypto processor vs without",
      value: paired ?? (plain === undefined || sealed === undefined || !(plain > 0) ? undefined : sealed / plain),
      comparison: "≥",
      threshold: 0.6,
      unit: "x",
      note:
        paired === undefined
          ? "ratio of the two workloads' median throughputs, measured at different times"
          : "median of the ratios of rounds measured side by side",
    }),
  );
  const connections = idle?.median.connections;
  const rss = idle?.median.serverRssMb;
  const lowered = connections !== undefined && connections < 10_000;
  const afterOpen = idle?.median.serverRssAfterOpenMb;
  const idleNote = [
    lowered ? `measured with ${connections} connections and extrapolated to 10,000` : "",
    afterOpen === undefined ? "" : `${afterOpen.toFixed(1)} MB 1 s after the last one opened`,
  ]
    .filter((part) => part !== "")
    .join("; ");
  targets.push(
    target({
      name: "10,000 idle connections: rapt server RSS, after 12 s idle",
      // A run with fewer connections is scaled to 10,000 from its per-connection cost.
      value:
        rss === undefined || connections === undefined
          ? undefined
          : lowered
            ? (idle?.median.serverRssBeforeMb ?? 0) + ((idle?.median.rssPerConnectionKb ?? 0) * 10_000) / 1000
            : rss,
      comparison: "<",
      threshold: 100,
      unit: "MB",
      ...(idleNote === "" ? {} : { note: idleNote }),
    }),
  );
  return targets;
}
