/**
 * Summarises V8 CPU profiles (from `npm run bench -- --cpu-prof <dir>`):
 * self time per function and per source file, as a share of the samples.
 *
 *     node dist/bench/profile-summary.js <file.cpuprofile> [--top 25] [--callers writev]
 *
 * `--callers NAME` adds, for functions named NAME, their self time broken
 * down by the chain of callers (`--depth` levels, default 4), to see where a hot spot is
 * reached from.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

/** Self time in µs per node id (from the sample time deltas; hit counts when they are missing). */
function selfTimes(profile: Profile): Map<number, number> {
  const times = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length > 0 && deltas.length === samples.length) {
    // Each delta is the time before its sample; attribute it to the next sample's node.
    for (let i = 0; i < samples.length; i++) {
      const next = deltas[i + 1] ?? 0;
      const id = samples[i] as number;
      times.set(id, (times.get(id) ?? 0) + next);
    }
    return times;
  }
  const interval =
    (profile.endTime - profile.startTime) /
    Math.max(
      1,
      profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0),
    );
  for (const node of profile.nodes) times.set(node.id, (node.hitCount ?? 0) * interval);
  return times;
}

function shortUrl(url: string): string {
  if (url === "") return "(native or V8)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + "node_modules/".length);
  const dist = url.indexOf("/dist/");
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, "");
}

/** Rows of `[name, µs]` sorted by time, with the total. */
function aggregate(profile: Profile, key: (frame: CallFrame) => string): { rows: [string, number][]; total: number } {
  const times = selfTimes(profile);
  const byKey = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const t = times.get(node.id) ?? 0;
    total += t;
    const k = key(node.callFrame);
    byKey.set(k, (byKey.get(k) ?? 0) + t);
  }
  return { rows: [...byKey.entries()].sort((a, b) => b[1] - a[1]), total };
}

function print(title: string, { rows, total }: { rows: [string, number][]; total: number }, top: number): void {
  console.log(`\n${title} (total ${(total / 1000).toFixed(0)} ms sampled)`);
  for (const [name, t] of rows.slice(0, top)) {
    console.log(`${((t / total) * 100).toFixed(1).padStart(6)}%  ${(t / 1000).toFixed(1).padStart(8)} ms  ${name}`);
  }
}

/** Self time of functions named `name`, by their nearest callers (--depth, default 4). */
function callers(profile: Profile, name: string, depth: number): { rows: [string, number][]; total: number } {
  const times = selfTimes(profile);
  const parent = new Map<number, ProfileNode>();
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node);
  }
  let total = 0;
  for (const t of times.values()) total += t;
  const byChain = new Map<string, number>();
  for (const node of profile.nodes) {
    if (node.callFrame.functionName !== name) continue;
    const chain: string[] = [];
    for (let p = parent.get(node.id); p !== undefined && chain.length < depth; p = parent.get(p.id)) {
      chain.push(`${p.callFrame.functionName || "(anonymous)"} ${shortUrl(p.callFrame.url)}:${p.callFrame.lineNumber + 1}`);
    }
    const key = chain.join(" < ");
    byChain.set(key, (byChain.get(key) ?? 0) + (times.get(node.id) ?? 0));
  }
  return { rows: [...byChain.entries()].sort((a, b) => b[1] - a[1]), total };
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "25" }, callers: { type: "string" }, depth: { type: "string", default: "4" } },
});
if (positionals.length === 0) {
  console.error("usage: node dist/bench/profile-summary.js <file.cpuprofile>... [--top N]");
  process.exit(2);
}
const top = Number(values.top);
for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  console.log(`\n=== ${file}`);
  print(
    "self time by function",
    aggregate(profile, (f) => `${f.functionName === "" ? "(anonymous)" : f.functionName}  ${shortUrl(f.url)}:${f.lineNumber + 1}`),
    top,
  );
  print(
    "self time by file",
    aggregate(profile, (f) => shortUrl(f.url)),
    Math.min(top, 15),
  );
  if (values.callers !== undefined) print(`callers of ${values.callers}`, callers(profile, values.callers, Number(values.depth)), top);
}
