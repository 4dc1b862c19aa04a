/**
 * `npm run bench`: runs every scenario (workload x implementation) with
 * server and client in separate forked processes on 127.0.0.1, for a number
 * of rounds, then the frame micro-benchmark, and writes the results as JSON
 * and Markdown. See bench/README.md.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, platform, release, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ClientCommands, MicroCommands, ServerCommands } from "./commands.js";
import { Child } from "./ipc.js";
import { type Options, USAGE, parseOptions } from "./options.js";
import { consoleTable, markdownReport } from "./report.js";
import {
  type BenchResults,
  type MachineInfo,
  type RoundResult,
  type ScenarioResult,
  computeRatios,
  evaluateTargets,
  summarise,
} from "./results.js";
import { type Scenario, type Workload, selectScenarios, unitOf } from "./scenarios.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root: this file runs as dist/bench/run.js. */
const root = resolve(here, "..", "..");
const MB = 1e6;
/** File descriptors kept free for everything but the idle connections. */
const FD_RESERVE = 256;

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

function fileDescriptorLimit(): number | undefined {
  try {
    const out = execFileSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" }).trim();
    return out === "unlimited" ? Number.POSITIVE_INFINITY : Number(out);
  } catch {
    return undefined;
  }
}

/** The git commit of the checkout, and whether src/ differs from it; undefined outside a git checkout. */
function revision(): { commit: string | undefined; srcDirty: boolean | undefined } {
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
    const status = execFileSync("git", ["status", "--porcelain", "--", "src"], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    return { commit, srcDirty: status.trim() !== "" };
  } catch {
    return { commit: undefined, srcDirty: undefined };
  }
}

function machineInfo(fdLimit: number | undefined): MachineInfo {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model ?? "unknown",
    cores: cpu.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${platform()} ${release()}`,
    loadAverage: loadavg()[0] ?? 0,
    fileDescriptorLimit: fdLimit === Number.POSITIVE_INFINITY ? undefined : fdLimit,
    ...revision(),
  };
}

/** Node flags of a forked process: GC access for memory readings, the run's node flags, a CPU profile when asked. */
function execArgv(options: Options, scenario: Scenario, role: string, round: number): string[] {
  const flags = ["--expose-gc", ...options.nodeFlags];
  if (options.cpuProfDir !== undefined) {
    const name = `${scenario.id.replace("/", "-")}-${role}-r${round}.cpuprofile`;
    flags.push("--cpu-prof", `--cpu-prof-dir=${resolve(options.cpuProfDir)}`, `--cpu-prof-name=${name}`);
  }
  return flags;
}

function spawnServer(options: Options, scenario: Scenario, round: number): Child<ServerCommands> {
  return new Child<ServerCommands>(join(here, "server-main.js"), execArgv(options, scenario, "server", round), `${scenario.id} server`);
}

function spawnClient(options: Options, scenario: Scenario, round: number): Child<ClientCommands> {
  return new Child<ClientCommands>(join(here, "client-main.js"), execArgv(options, scenario, "client", round), `${scenario.id} client`);
}

/** The workloads in run order, grouped: each group's rounds alternate (see {@link Workload.pairedWith}). */
function schedule(scenarios: readonly Scenario[]): Workload[][] {
  const groups: Workload[][] = [];
  for (const workload of new Set(scenarios.map((s) => s.workload))) {
    const partner = groups.find((group) => group.some((w) => w.id === workload.pairedWith || w.pairedWith === workload.id));
    if (partner === undefined) groups.push([workload]);
    else partner.push(workload);
  }
  return groups;
}

/** One round of a load workload: start, warm up, measure, report, tear down. */
async function loadRound(options: Options, scenario: Scenario, round: number): Promise<RoundResult> {
  const { workload, impl } = scenario;
  // Both start at once (node's start-up is most of a round's overhead); the client connects once the server listens.
  const server = spawnServer(options, scenario, round);
  const client = spawnClient(options, scenario, round);
  try {
    const { address } = await server.request("init", { impl, workload });
    await client.request("init", { impl, workload, address, connections: workload.connections });
    await client.request("start", undefined);
    await sleep(options.warmupMs);
    await Promise.all([server.request("mark", undefined), client.request("mark", undefined)]);
    await sleep(options.durationMs);
    const [s, c] = await Promise.all([server.request("report", undefined), client.request("stop", undefined)]);
    return {
      round,
      throughput: c.operations / (c.elapsedMs / 1000),
      p50Ms: c.p50Ms,
      p99Ms: c.p99Ms,
      serverCpuUsPerOp: s.cpuUs / Math.max(1, s.operations),
      clientCpuUsPerOp: c.cpuUs / Math.max(1, c.operations),
      serverPeakRssMb: s.maxRssBytes / MB,
      clientPeakRssMb: c.maxRssBytes / MB,
      operations: c.operations,
      elapsedMs: c.elapsedMs,
      errors: c.errors,
      ...(c.firstError === undefined ? {} : { firstError: c.firstError }),
      pids: { server: server.pid, clients: [client.pid] },
    };
  } finally {
    await client.stop();
    await server.stop();
  }
}

/** How long an idle workload holds its connections before the memory reading that counts (not with --quick). */
const IDLE_SETTLE_MS = 12_000;

/** One round of an idle workload: memory before, open the connections, memory 1 s later and once they have been idle. */
async function idleRound(options: Options, scenario: Scenario, round: number, count: number): Promise<RoundResult> {
  const { workload, impl } = scenario;
  const server = spawnServer(options, scenario, round);
  const client = spawnClient(options, scenario, round);
  try {
    const { address } = await server.request("init", { impl, workload });
    await client.request("init", { impl, workload, address, connections: 0 });
    const before = await server.request("memory", undefined);
    await server.request("mark", undefined);
    const idle = await client.request("idle", { count, concurrency: workload.inFlight }, 180_000);
    const s = await server.request("report", undefined);
    // Let per-connection buffers of the handshake be released before reading memory.
    await sleep(Math.min(1000, options.durationMs));
    const afterOpen = await server.request("memory", undefined);
    // Then let the connections be idle: V8 sizes its young generation for the
    // burst of handshakes (about 30 MB in every implementation) and gives it
    // back only once its memory reducer sees the process idle, some 10 s later.
    await sleep(options.quick ? 0 : IDLE_SETTLE_MS - Math.min(1000, options.durationMs));
    const after = await server.request("memory", undefined);
    const peak = await server.request("report", undefined);
    const connections = idle.connections;
    return {
      round,
      throughput: connections / (idle.elapsedMs / 1000),
      p50Ms: idle.p50Ms,
      p99Ms: idle.p99Ms,
      serverCpuUsPerOp: s.cpuUs / Math.max(1, connections),
      clientCpuUsPerOp: idle.cpuUs / Math.max(1, connections),
      serverPeakRssMb: peak.maxRssBytes / MB,
      clientPeakRssMb: idle.maxRssBytes / MB,
      operations: connections,
      elapsedMs: idle.elapsedMs,
      errors: connections === count ? 0 : count - connections,
      serverRssMb: after.rss / MB,
      serverRssAfterOpenMb: afterOpen.rss / MB,
      serverRssBeforeMb: before.rss / MB,
      rssPerConnectionKb: (after.rss - before.rss) / connections / 1e3,
      heapPerConnectionBytes: (after.heapUsed + after.external - before.heapUsed - before.external) / connections,
      connections,
      pids: { server: server.pid, clients: [client.pid] },
    };
  } finally {
    await client.stop(10_000);
    await server.stop(10_000);
  }
}

/** Connections of an idle workload: the option, the quick size, or the workload's, within the descriptor limit. */
function idleCount(options: Options, workload: Workload, fdLimit: number | undefined): { count: number; note?: string } {
  const wanted = options.idleConnections ?? (options.quick ? (workload.quickConnections ?? workload.connections) : workload.connections);
  if (fdLimit === undefined || wanted + FD_RESERVE <= fdLimit) return { count: wanted };
  const count = Math.max(1, fdLimit - FD_RESERVE);
  return {
    count,
    note: `lowered from ${wanted} to ${count} connections: ulimit -n is ${fdLimit} (server and client each hold one descriptor per connection); raise it with ulimit -n to measure ${wanted}`,
  };
}

async function runMicro(quick: boolean): Promise<BenchResults["micro"]> {
  const child = new Child<MicroCommands>(join(here, "micro.js"), [], "micro");
  try {
    return await child.request("run", { quick }, 300_000);
  } finally {
    await child.stop();
  }
}

/** `--render`: recomputes medians, ratios and targets of a results JSON (as this version computes them) and reports them. */
function render(jsonPath: string, markdownPath: string | undefined): number {
  const report = JSON.parse(readFileSync(resolve(jsonPath), "utf8")) as BenchResults;
  for (const result of report.scenarios) {
    result.median = {};
    result.spread = {};
    result.ratios = {};
    summarise(result);
  }
  computeRatios(report.scenarios);
  report.targets = evaluateTargets(report.scenarios);
  if (markdownPath !== undefined) {
    writeFileSync(resolve(markdownPath), markdownReport(report));
    log(`report:  ${resolve(markdownPath)}`);
  }
  console.log(consoleTable(report));
  return 0;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2), { jsonPath: join(root, "bench", "results", "latest.json") });
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  if (options.render !== undefined) return render(options.render, options.markdownPath);
  const scenarios = selectScenarios(options.only);
  const withMicro = options.only === undefined || options.only.includes("micro");
  const fdLimit = fileDescriptorLimit();
  const startedAt = new Date().toISOString();
  const machine = machineInfo(fdLimit);
  if (options.cpuProfDir !== undefined) mkdirSync(resolve(options.cpuProfDir), { recursive: true });
  log(
    `rapt bench: ${scenarios.length} scenarios${withMicro ? " + micro" : ""}, ${options.rounds} rounds, ` +
      `warmup ${options.warmupMs} ms, duration ${options.durationMs} ms; ${machine.cpuModel}, ${machine.cores} cores, node ${machine.node}`,
  );

  const results: ScenarioResult[] = scenarios.map((s) => ({
    id: s.id,
    workload: s.workload.id,
    impl: s.impl,
    kind: s.workload.kind,
    title: s.workload.title,
    unit: unitOf(s.workload),
    ...(s.pending === undefined ? {} : { pending: s.pending }),
    rounds: [],
    median: {},
    spread: {},
    ratios: {},
  }));

  // Round-robin within a workload: round 1 of every implementation, then
  // round 2, ..., so a noisy stretch of time hits them all alike. A workload
  // paired with another (crypto with the plain one) joins its round-robin.
  for (const workloads of schedule(scenarios)) {
    const group = scenarios.filter((s) => workloads.includes(s.workload) && s.pending === undefined);
    for (let round = 1; round <= options.rounds; round++) {
      for (const scenario of group) {
        const workload = scenario.workload;
        const idle = workload.kind === "idle" ? idleCount(options, workload, fdLimit) : undefined;
        const result = results.find((r) => r.id === scenario.id) as ScenarioResult;
        if (idle?.note !== undefined) result.note = idle.note;
        const started = performance.now();
        try {
          const r = idle === undefined ? await loadRound(options, scenario, round) : await idleRound(options, scenario, round, idle.count);
          result.rounds.push(r);
          const errors = r.errors > 0 ? `, ${r.errors} errors (${r.firstError ?? "?"})` : "";
          log(
            `  ${scenario.id.padEnd(22)} round ${round}: ${r.throughput.toFixed(0).padStart(8)} ${result.unit}, ` +
              `p50 ${r.p50Ms.toFixed(3)} ms, p99 ${r.p99Ms.toFixed(3)} ms (${((performance.now() - started) / 1000).toFixed(1)} s)${errors}`,
          );
          if (r.errors > 0) result.error ??= `round ${round}: ${r.errors} errors, first: ${r.firstError ?? "?"}`;
          // Such a round has no numbers (see usable() in results.ts): a failure, not a silent gap in the table.
          else if (r.operations === 0) result.error ??= `round ${round}: no operation completed in the ${options.durationMs} ms window`;
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          result.error ??= `round ${round}: ${message}`;
          log(`  ${scenario.id.padEnd(22)} round ${round}: FAILED: ${message}`);
        }
      }
    }
  }
  for (const result of results) summarise(result);
  computeRatios(results);

  let micro: BenchResults["micro"] = [];
  if (withMicro) {
    log("  micro-benchmark (mitata) ...");
    micro = await runMicro(options.quick);
  }

  const report: BenchResults = {
    schema: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    machine,
    options: {
      durationMs: options.durationMs,
      warmupMs: options.warmupMs,
      rounds: options.rounds,
      quick: options.quick,
      nodeFlags: options.nodeFlags,
      only: options.only ?? null,
    },
    scenarios: results,
    micro,
    targets: evaluateTargets(results),
  };
  mkdirSync(dirname(resolve(options.jsonPath)), { recursive: true });
  writeFileSync(resolve(options.jsonPath), `${JSON.stringify(report, null, 2)}\n`);
  log(`results: ${resolve(options.jsonPath)}`);
  // A partial or quick run must not overwrite the committed report of a full one.
  const markdownPath =
    options.markdownPath ?? (options.only === undefined && !options.quick ? join(root, "bench", "RESULTS.md") : undefined);
  if (markdownPath !== undefined) {
    writeFileSync(resolve(markdownPath), markdownReport(report));
    log(`report:  ${resolve(markdownPath)}`);
  }
  console.log(consoleTable(report));
  return results.some((r) => r.error !== undefined) ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  },
);
