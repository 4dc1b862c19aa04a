/**
 * Closed-loop load: `workers` loops each keep one operation outstanding,
 * starting the next as soon as one completes, so the number in flight is
 * constant. Latencies go into an HDR histogram (node:perf_hooks, 3
 * significant digits), which costs the same for every implementation.
 */
import { type RecordableHistogram, createHistogram } from "node:perf_hooks";
import type { LoadReport } from "./commands.js";

/**
 * One operation; resolves with the units it completed (1 per call). One
 * that completes units as it goes (a stream's items) reports them through
 * `progress` instead and resolves with 0, so the window counts the units
 * that arrived in it, however long the operation is.
 */
export type Operation = (progress: (units: number) => void) => Promise<number>;

const MAX_ERRORS = 1000;

export class ClosedLoop {
  private readonly histogram: RecordableHistogram = createHistogram();
  private running = false;
  private operations = 0;
  private samples = 0;
  private errors = 0;
  private firstError: string | undefined;
  private cpuAtMark = process.cpuUsage();
  private timeAtMark = performance.now();
  private readonly progress = (units: number): void => {
    this.operations += units;
  };

  /** Starts one loop per entry of `operations` (each loop calls its own operation). */
  start(operations: readonly Operation[]): void {
    this.running = true;
    this.mark();
    for (const op of operations) void this.loop(op);
  }

  /** Starts the measurement window: counters, histogram and CPU time restart from here. */
  mark(): void {
    this.histogram.reset();
    this.operations = 0;
    this.samples = 0;
    this.errors = 0;
    this.firstError = undefined;
    this.cpuAtMark = process.cpuUsage();
    this.timeAtMark = performance.now();
  }

  /** Ends the window and reports it; no new operation starts, those in flight are not waited for. */
  stop(): LoadReport {
    const elapsedMs = performance.now() - this.timeAtMark;
    const cpu = process.cpuUsage(this.cpuAtMark);
    this.running = false;
    const h = this.histogram;
    const empty = this.samples === 0;
    return {
      cpuUs: cpu.user + cpu.system,
      elapsedMs,
      maxRssBytes: process.resourceUsage().maxRSS * 1024,
      operations: this.operations,
      samples: this.samples,
      errors: this.errors,
      firstError: this.firstError,
      p50Ms: empty ? 0 : h.percentile(50) / 1e6,
      p99Ms: empty ? 0 : h.percentile(99) / 1e6,
      maxMs: empty ? 0 : h.max / 1e6,
    };
  }

  private async loop(op: Operation): Promise<void> {
    while (this.running) {
      const started = performance.now();
      try {
        const units = await op(this.progress);
        const ns = Math.round((performance.now() - started) * 1e6);
        this.histogram.record(ns > 0 ? ns : 1);
        this.operations += units;
        this.samples++;
      } catch (error) {
        this.errors++;
        this.firstError ??= error instanceof Error ? error.message : String(error);
        // A broken connection would otherwise spin here.
        if (this.errors >= MAX_ERRORS) return;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
  }
}
