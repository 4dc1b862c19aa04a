/** Renders results as bench/RESULTS.md and as the table printed at the end of a run. */
import type { BenchResults, ScenarioResult, Target } from "./results.js";
import { BASELINES, IMPL_TITLES, WORKLOADS } from "./scenarios.js";

type Table = { header: string[]; rows: string[][]; align: ("l" | "r")[] };

function num(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Three significant digits, for latencies and CPU times that span orders of magnitude. */
function sig(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  if (value === 0) return "0";
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(value))));
  return num(value, Math.min(digits, 4));
}

/** 1234 -> "1.2k", 1234567 -> "1.23M": the per-round throughputs. */
function compact(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value.toFixed(0);
}

function ratio(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return `${value >= 10 ? value.toFixed(1) : value.toFixed(2)}x`;
}

function pct(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? "–" : `${(value * 100).toFixed(0)}%`;
}

function mainTable(results: BenchResults): Table {
  const header = [
    "scenario",
    "implementation",
    "throughput",
    "spread",
    "rounds",
    "p50 ms",
    "p99 ms",
    "server CPU µs/op",
    "client CPU µs/op",
    "server peak RSS MB",
    "client peak RSS MB",
    ...BASELINES.map((b) => `vs ${b}`),
    "p50 vs minimal",
    "CPU/op vs minimal",
  ];
  const rows = results.scenarios.map((s) => {
    const m = s.median;
    if (s.pending !== undefined || m.throughput === undefined) {
      const why = s.pending !== undefined ? `pending: ${s.pending}` : `failed: ${s.error ?? "no result"}`;
      return [s.workload, s.impl, why, ...header.slice(3).map(() => "")];
    }
    return [
      s.workload,
      s.impl,
      `${num(m.throughput)} ${s.unit}`,
      pct(s.spread.throughput),
      s.rounds.map((r) => compact(r.throughput)).join(" / "),
      sig(m.p50Ms),
      sig(m.p99Ms),
      sig(m.serverCpuUsPerOp),
      sig(m.clientCpuUsPerOp),
      num(m.serverPeakRssMb, 1),
      num(m.clientPeakRssMb, 1),
      ...BASELINES.map((b) => ratio(s.ratios[b]?.throughput)),
      ratio(s.ratios.minimal?.p50),
      ratio(s.ratios.minimal?.cpu),
    ];
  });
  return { header, rows, align: header.map((_, i) => (i < 2 ? "l" : "r")) };
}

function idleTable(results: BenchResults): Table | undefined {
  const idle = results.scenarios.filter((s) => s.kind === "idle" && s.pending === undefined);
  if (idle.length === 0) return undefined;
  return {
    header: [
      "implementation",
      "connections",
      "server RSS before MB",
      "server RSS 1 s after opening MB",
      "server RSS idle MB",
      "RSS per connection KB",
      "heap + external per connection B",
      "server peak RSS MB",
      "handshakes/s",
      "handshake p50 ms",
      "RSS vs minimal",
    ],
    rows: idle.map((s) => [
      s.impl,
      num(s.median.connections),
      num(s.median.serverRssBeforeMb, 1),
      num(s.median.serverRssAfterOpenMb, 1),
      num(s.median.serverRssMb, 1),
      num(s.median.rssPerConnectionKb, 2),
      num(s.median.heapPerConnectionBytes),
      num(s.median.serverPeakRssMb, 1),
      num(s.median.throughput),
      sig(s.median.p50Ms),
      ratio(s.ratios.minimal?.serverRss),
    ]),
    align: ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
  };
}

function microTable(results: BenchResults): Table | undefined {
  if (results.micro.length === 0) return undefined;
  return {
    header: ["operation", "ns/frame (mean)", "p50", "p99"],
    rows: results.micro.map((m) => [m.name, sig(m.nsPerFrame), sig(m.p50NsPerFrame), sig(m.p99NsPerFrame)]),
    align: ["l", "r", "r", "r"],
  };
}

/** A target's number: a ratio, or a quantity with one decimal below 1,000 (MB) and none above (items/s). */
function targetNumber(value: number, unit: string): string {
  return unit === "x" ? ratio(value) : `${num(value, Math.abs(value) >= 1000 ? 0 : 1)} ${unit}`;
}

function targetValue(t: Target): string {
  return t.value === undefined ? "not measured" : targetNumber(t.value, t.unit);
}

function targetsTable(results: BenchResults): Table {
  return {
    header: ["target", "measured", "wanted", "status"],
    rows: results.targets.map((t) => [
      t.note === undefined ? t.name : `${t.name} (${t.note})`,
      targetValue(t),
      `${t.comparison} ${t.unit === "x" ? `${t.threshold}x` : `${num(t.threshold)} ${t.unit}`}`,
      t.met === undefined ? "not measured" : t.met ? "met" : "**not met**",
    ]),
    align: ["l", "r", "r", "l"],
  };
}

function markdown(table: Table): string {
  const esc = (cell: string): string => cell.replaceAll("|", "\\|");
  const lines = [
    `| ${table.header.map(esc).join(" | ")} |`,
    `| ${table.align.map((a) => (a === "r" ? "---:" : "---")).join(" | ")} |`,
    ...table.rows.map((row) => `| ${row.map(esc).join(" | ")} |`),
  ];
  return lines.join("\n");
}

function plain(table: Table): string {
  const strip = (cell: string): string => cell.replaceAll("**", "");
  const widths = table.header.map((h, i) => Math.max(h.length, ...table.rows.map((r) => strip(r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (table.align[i] === "r" ? strip(c).padStart(widths[i] ?? 0) : strip(c).padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(table.header), widths.map((w) => "-".repeat(w)).join("  "), ...table.rows.map(line)].join("\n");
}

function notes(results: BenchResults): string[] {
  return results.scenarios
    .filter((s: ScenarioResult) => s.note !== undefined || (s.error !== undefined && s.pending === undefined))
    .map(
      (s) => `- ${s.id}: ${[s.note, s.error === undefined ? undefined : `error: ${s.error}`].filter((x) => x !== undefined).join("; ")}`,
    );
}

/** The table printed at the end of a run. */
export function consoleTable(results: BenchResults): string {
  const parts = [plain(mainTable(results))];
  const idle = idleTable(results);
  if (idle !== undefined) parts.push(plain(idle));
  const micro = microTable(results);
  if (micro !== undefined) parts.push(plain(micro));
  parts.push(plain(targetsTable(results)));
  const n = notes(results);
  if (n.length > 0) parts.push(n.join("\n"));
  return `\n${parts.join("\n\n")}\n`;
}

function nodeFlagsText(flags: string[] | undefined): string {
  return flags === undefined || flags.length === 0 ? "none" : flags.map((flag) => `\`${flag}\``).join(" ");
}

/** bench/RESULTS.md. */
export function markdownReport(results: BenchResults): string {
  const { machine, options } = results;
  const selected = new Set(results.scenarios.map((s) => s.workload));
  const out: string[] = [
    "# rapt benchmark results",
    "",
    "Generated by `npm run bench` (see [README.md](README.md) for what each scenario measures and how to read this).",
    "Ratios compare implementations measured in this same run, on this machine; absolute numbers are only",
    "comparable within one run.",
    "",
    `- rapt revision: ${machine.commit ?? "unknown"}${machine.srcDirty === true ? " with uncommitted changes in src/" : ""}`,
    `- Date: ${results.startedAt.replace("T", " ").replace(/\.\d+Z$/, " UTC")}`,
    `- CPU: ${machine.cpuModel}, ${machine.cores} cores`,
    `- Memory: ${machine.memoryGiB} GiB`,
    `- Node.js: ${machine.node} on ${machine.platform}`,
    `- Load average (1 min) at start: ${machine.loadAverage.toFixed(2)}` +
      (machine.loadAverage > machine.cores / 4 ? " (other work was running on the machine: compare ratios, not absolute numbers)" : ""),
    `- Settings: ${options.rounds} rounds per scenario, ${options.warmupMs} ms warm-up, ${options.durationMs} ms measured per round;` +
      ` medians of the rounds are shown, spread = (max - min) / median of the throughput, "rounds" = each round's throughput`,
    `- Node flags of every server and client process: ${nodeFlagsText(options.nodeFlags)}`,
    "",
    "## Targets",
    "",
    markdown(targetsTable(results)),
    "",
    "## Scenarios",
    "",
    ...WORKLOADS.filter((w) => selected.has(w.id)).map((w) => `- \`${w.id}\`: ${w.title}`),
    "",
    `Implementations: ${Object.entries(IMPL_TITLES)
      .map(([k, v]) => `\`${k}\` = ${v}`)
      .join(", ")}. "vs X" columns: throughput divided by X's in the same workload`,
    '(above 1 is faster); "p50 vs minimal": median latency divided by the minimal baseline\'s (below 1 is quicker);',
    '"CPU/op vs minimal": server + client CPU time per operation divided by the minimal baseline\'s (below 1 is cheaper).',
    "Ratios are medians of per-round ratios (round n of every implementation runs back to back).",
    "CPU µs/op: user + system CPU time of that process per operation (call, stream item, or handshake).",
    "",
    markdown(mainTable(results)),
    "",
  ];
  const idle = idleTable(results);
  if (idle !== undefined) {
    out.push(
      "## Idle connections",
      "",
      'Server memory after GC, before any connection, 1 s after the last connection opened, and once the connections have been idle for 12 s ("idle": what the target and the per-connection figures use). The 1 s figure still holds the young generation V8 grew for the burst of handshakes, about 30 MB in every implementation; V8 gives it back once the process is idle.',
      "",
      markdown(idle),
      "",
    );
  }
  const micro = microTable(results);
  if (micro !== undefined) {
    out.push("## Frame layer micro-benchmark (mitata)", "", markdown(micro), "");
  }
  const n = notes(results);
  if (n.length > 0) out.push("## Notes", "", ...n, "");
  return out.join("\n");
}
