/**
 * Keeps the benchmark suite from rotting: runs `bench/run.ts --quick` on a
 * rapt scenario, the minimal baseline of the same workload, rapt on the
 * channel workload and with the crypto processor (the paths other workloads
 * do not take), a small idle workload and the micro-benchmark, and checks
 * the JSON it writes. It says nothing about speed; the numbers only have to
 * be sane.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { BenchResults } from "../../bench/results.js";

const runner = fileURLToPath(new URL("../../bench/run.js", import.meta.url));
const ROUNDS = 2;

/** Whether `pid` is still one of the benchmark's processes (a reused pid is not). */
function benchProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const cmdline = `/proc/${pid}/cmdline`;
  if (!existsSync(cmdline)) return true;
  return /bench[/\\](server-main|client-main|micro)\.js/.test(readFileSync(cmdline, "utf8"));
}

describe("benchmark suite (smoke)", () => {
  const dir = mkdtempSync(join(tmpdir(), "rapt-bench-smoke-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("runs a quick subset and writes sane results", async () => {
    const json = join(dir, "results.json");
    const markdown = join(dir, "RESULTS.md");
    const child = spawn(
      process.execPath,
      [
        runner,
        "--quick",
        "--only",
        "unary-1/rapt,unary-1/minimal,channel-echo/rapt,unary-100/rapt,unary-100-crypto/rapt,idle-10k/rapt,micro",
        "--rounds",
        String(ROUNDS),
        "--warmup",
        "50",
        "--duration",
        "200",
        "--idle-connections",
        "50",
        "--json",
        json,
        "--markdown",
        markdown,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    // The runner kills its own children when it exits, however it exits.
    const guard = setTimeout(() => child.kill("SIGTERM"), 45_000);
    const [code] = (await once(child, "exit")) as [number | null];
    clearTimeout(guard);
    assert.equal(code, 0, output);

    const results = JSON.parse(readFileSync(json, "utf8")) as BenchResults;
    assert.equal(results.options.rounds, ROUNDS);
    assert.deepEqual(results.options.nodeFlags, ["--single-threaded-gc"], "the default node flags");
    assert.match(readFileSync(markdown, "utf8"), /^- Node flags of every server and client process: `--single-threaded-gc`$/m);
    assert.ok(results.machine.cores > 0 && results.machine.node.startsWith("v"));
    assert.deepEqual(results.scenarios.map((s) => s.id).sort(), [
      "channel-echo/rapt",
      "idle-10k/rapt",
      "unary-1/minimal",
      "unary-1/rapt",
      "unary-100-crypto/rapt",
      "unary-100/rapt",
    ]);
    for (const s of results.scenarios) {
      assert.equal(s.error, undefined, `${s.id}: ${s.error}`);
      assert.equal(s.rounds.length, ROUNDS, `${s.id}: rounds`);
      assert.deepEqual(
        s.rounds.map((r) => r.round),
        [1, 2],
      );
      for (const r of s.rounds) {
        const where = `${s.id} round ${r.round}`;
        assert.ok(r.throughput > 0, `${where}: throughput ${r.throughput}`);
        assert.ok(r.operations > 0, `${where}: operations`);
        assert.ok(r.p50Ms > 0, `${where}: p50 ${r.p50Ms}`);
        assert.ok(r.p99Ms >= r.p50Ms, `${where}: p99 ${r.p99Ms} < p50 ${r.p50Ms}`);
        assert.ok(r.serverCpuUsPerOp > 0 && r.clientCpuUsPerOp > 0, `${where}: CPU per op`);
        assert.ok(r.serverPeakRssMb > 10 && r.clientPeakRssMb > 10, `${where}: peak RSS`);
        assert.equal(r.errors, 0, `${where}: ${r.firstError}`);
        for (const pid of [r.pids.server, ...r.pids.clients]) assert.ok(!benchProcessAlive(pid), `${where}: process ${pid} still running`);
      }
      assert.ok((s.median.throughput ?? 0) > 0, `${s.id}: median throughput`);
      assert.ok((s.median.p99Ms ?? 0) >= (s.median.p50Ms ?? Infinity), `${s.id}: median p99 < p50`);
    }

    const rapt = results.scenarios.find((s) => s.id === "unary-1/rapt");
    assert.ok((rapt?.ratios.minimal?.throughput ?? 0) > 0, "rapt's ratio to the minimal baseline");
    const idle = results.scenarios.find((s) => s.id === "idle-10k/rapt");
    assert.equal(idle?.median.connections, 50);
    assert.ok((idle?.median.serverRssMb ?? 0) > 0);
    assert.ok((idle?.median.serverRssAfterOpenMb ?? 0) > 0, "the reading 1 s after opening is kept too");
    assert.equal(idle?.note, undefined);

    assert.ok(results.micro.length > 0, "micro-benchmark results");
    for (const m of results.micro) assert.ok(m.nsPerFrame > 0, `${m.name}: ${m.nsPerFrame} ns`);

    // The crypto workload's rounds alternate with the plain one's, and its target is a ratio of paired rounds.
    const order = [...output.matchAll(/^ {2}(unary-100(?:-crypto)?\/rapt) +round (\d)/gm)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(order, ["unary-100/rapt 1", "unary-100-crypto/rapt 1", "unary-100/rapt 2", "unary-100-crypto/rapt 2"]);
    const crypto = results.targets.find((t) => t.name.includes("crypto processor"));
    assert.ok(crypto?.value !== undefined && crypto.value > 0, "crypto target evaluated");
    assert.match(crypto.note ?? "", /side by side/);

    const target = results.targets.find((t) => t.name.startsWith("unary, 1 in flight"));
    assert.ok(target?.value !== undefined && target.met !== undefined, "p50 target evaluated");

    const report = readFileSync(markdown, "utf8");
    assert.match(report, /\| unary-1 \| rapt \|/);
    assert.match(report, /\| channel-echo \| rapt \| [\d,]+ echoes\/s \|/);
    assert.match(report, /## Targets/);
  });
});
