/** Command-line options of `npm run bench` (bench/run.ts). */
import { parseArgs } from "node:util";

export interface Options {
  /** Measured time per round, ms. */
  durationMs: number;
  /** Load before each measurement starts, ms. */
  warmupMs: number;
  rounds: number;
  /** Scenario, workload or implementation names (see selectScenarios); undefined for all. */
  only: string[] | undefined;
  quick: boolean;
  /** Override of the idle workloads' connection count. */
  idleConnections: number | undefined;
  /** Where the JSON goes. */
  jsonPath: string;
  /** Where the Markdown report goes; undefined: only for a full run (see README). */
  markdownPath: string | undefined;
  /** Directory for V8 CPU profiles of every server and client process, or undefined. */
  cpuProfDir: string | undefined;
  /** Node flags of every server and client process (see {@link DEFAULT_NODE_FLAGS}). */
  nodeFlags: string[];
  /** Measure nothing: re-render the report of this results JSON. */
  render: string | undefined;
  help: boolean;
}

/**
 * Node flags every benchmark process runs with unless `--node-flags` says
 * otherwise. `--single-threaded-gc`: a scenario's server and client share
 * the machine's cores, and V8's parallel scavenger then waits on helper
 * threads that the other process keeps off the CPU. Measured on the 2-core
 * machine of bench/RESULTS.md, 4 alternating pairs: CPU per operation
 * 10-15% lower for every implementation (rapt's stream server 0.88 -> 0.78
 * µs per item, the minimal baseline's 1.42 -> 1.22; unary-100 servers
 * 4.67 -> 4.10 and 4.41 -> 3.84 µs per call); the same young-generation
 * collections took 2.0-3.4 ms on average with helpers (0.3-7.8 ms each)
 * against 0.5-0.9 ms without.
 */
export const DEFAULT_NODE_FLAGS: readonly string[] = ["--single-threaded-gc"];

export const USAGE = `Usage: npm run bench -- [options]   (or: node dist/bench/run.js [options] after npm run build)

  --duration <ms>          measured time per round (default 2000; --quick 300)
  --warmup <ms>            load before measuring, per round (default 500; --quick 150)
  --rounds <n>             rounds per scenario; the median is reported (default 3; --quick 2)
  --only <a,b,...>         scenarios (unary-1/rapt), workloads (unary-1), implementations (grpc), or micro
  --quick                  tiny durations and 200 idle connections: checks that everything runs
  --idle-connections <n>   connections of the idle workload (default 10000, lowered to fit ulimit -n)
  --json <path>            results JSON (default bench/results/latest.json)
  --markdown <path>        Markdown report (default bench/RESULTS.md, written only by a full run)
  --cpu-prof <dir>         write a V8 CPU profile of every server and client process into <dir>
  --node-flags=<flags>     node flags of every server and client process, space-separated, after "="
                           (default --node-flags=--single-threaded-gc; --node-flags= for none: see bench/README.md)
  --render <json>          measure nothing: print (and with --markdown, write) the report of a results JSON
  --help                   this text`;

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

function nodeFlags(value: string | undefined): string[] {
  if (value === undefined) return [...DEFAULT_NODE_FLAGS];
  const flags = value.split(/\s+/).filter((flag) => flag !== "");
  const odd = flags.find((flag) => !flag.startsWith("--"));
  if (odd !== undefined) throw new Error(`--node-flags takes node flags starting with "--", got "${odd}"`);
  return flags;
}

export function parseOptions(argv: readonly string[], defaults: { jsonPath: string }): Options {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      duration: { type: "string" },
      warmup: { type: "string" },
      rounds: { type: "string" },
      only: { type: "string" },
      quick: { type: "boolean", default: false },
      "idle-connections": { type: "string" },
      json: { type: "string" },
      markdown: { type: "string" },
      "cpu-prof": { type: "string" },
      "node-flags": { type: "string" },
      render: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  const quick = values.quick === true;
  const only = values.only
    ?.split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  return {
    quick,
    durationMs: positiveInt("duration", values.duration, quick ? 300 : 2000),
    warmupMs: values.warmup === "0" ? 0 : positiveInt("warmup", values.warmup, quick ? 150 : 500),
    rounds: positiveInt("rounds", values.rounds, quick ? 2 : 3),
    only: only === undefined || only.length === 0 ? undefined : only,
    idleConnections: values["idle-connections"] === undefined ? undefined : positiveInt("idle-connections", values["idle-connections"], 1),
    jsonPath: values.json ?? defaults.jsonPath,
    markdownPath: values.markdown,
    cpuProfDir: values["cpu-prof"],
    nodeFlags: nodeFlags(values["node-flags"]),
    render: values.render,
    help: values.help === true,
  };
}
