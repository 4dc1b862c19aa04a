/**
 * A benchmark server process, forked by the runner: starts one
 * implementation's server on 127.0.0.1 and reports its CPU time, operations
 * and memory over the windows the runner marks.
 */
import type { ServerCommands } from "./commands.js";
import { loadImpl } from "./impl/index.js";
import type { BenchServer } from "./impl/types.js";
import { serve } from "./ipc.js";

let server: BenchServer | undefined;
let cpuAtMark = process.cpuUsage();
let timeAtMark = performance.now();
let operationsAtMark = 0;

const collectGarbage = (globalThis as { gc?: () => void }).gc;

function running(): BenchServer {
  if (server === undefined) throw new Error("server not started");
  return server;
}

serve<ServerCommands>({
  async init(config) {
    server = await (await loadImpl(config.impl)).startServer({ crypto: config.workload.crypto ?? false });
    return { address: server.address };
  },
  mark() {
    cpuAtMark = process.cpuUsage();
    timeAtMark = performance.now();
    operationsAtMark = running().operations();
    return null;
  },
  report() {
    const cpu = process.cpuUsage(cpuAtMark);
    return {
      cpuUs: cpu.user + cpu.system,
      elapsedMs: performance.now() - timeAtMark,
      operations: running().operations() - operationsAtMark,
      maxRssBytes: process.resourceUsage().maxRSS * 1024,
    };
  },
  memory() {
    // Twice: the first collection frees what finalizers of the second released.
    collectGarbage?.();
    collectGarbage?.();
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
  },
  async exit() {
    await Promise.race([server?.close(), new Promise((resolve) => setTimeout(resolve, 2000))]);
    return null;
  },
});
