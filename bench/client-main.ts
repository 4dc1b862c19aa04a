/**
 * A benchmark client process, forked by the runner: opens the workload's
 * connections to one implementation's server, checks each answers
 * correctly (channel workloads: opens the channels and checks an echo on
 * each), then runs the closed loop (or opens idle connections) and
 * reports throughput, latency, CPU time and memory.
 */
import { randomBytes } from "node:crypto";
import { createHistogram } from "node:perf_hooks";
import type { ClientCommands, ClientConfig } from "./commands.js";
import { loadImpl } from "./impl/index.js";
import type { BenchChannel, BenchConnection, ConnectOptions, IdleConnection, Impl } from "./impl/types.js";
import { serve } from "./ipc.js";
import { ClosedLoop, type Operation } from "./load.js";

let config: ClientConfig | undefined;
let impl: Impl | undefined;
const connections: BenchConnection[] = [];
/** Channel workloads: the open channels of each connection, one per in-flight slot. */
const channels = new Map<BenchConnection, BenchChannel[]>();
const idle: IdleConnection[] = [];
const loop = new ClosedLoop();
let payload: Uint8Array = new Uint8Array(0);

function configured(): { config: ClientConfig; impl: Impl } {
  if (config === undefined || impl === undefined) throw new Error("client not initialised");
  return { config, impl };
}

/** One call of each kind the workload uses, checked, so a broken implementation fails loudly instead of measuring errors. */
async function check(connection: BenchConnection, { workload }: ClientConfig): Promise<void> {
  if (workload.kind === "unary" && workload.method === "add") {
    const sum = await connection.add(2, 3);
    if (sum !== 5) throw new Error(`add(2, 3) returned ${String(sum)}`);
  } else if (workload.kind === "unary" && workload.method === "echo") {
    const echoed = await connection.echo(payload);
    if (echoed.length !== payload.length || !Buffer.from(echoed).equals(Buffer.from(payload))) {
      throw new Error(`echo returned ${echoed.length} bytes, sent ${payload.length}`);
    }
  } else if (workload.kind === "server-stream") {
    const items = workload.items ?? 1;
    const got = await connection.stream(items);
    if (got !== items) throw new Error(`stream(${items}) delivered ${got} items`);
  } else if (workload.kind === "channel") {
    for (const [i, channel] of (channels.get(connection) ?? []).entries()) {
      const echoed = await channel.echo({ seq: i, value: "item" });
      if (echoed.seq !== i || echoed.value !== "item") throw new Error(`channel ${i} echoed ${JSON.stringify(echoed)}`);
    }
  }
}

/** Opens the channels of a channel workload on `connection`: one per in-flight slot, so each loop awaits its own echo. */
async function openChannels(connection: BenchConnection, { impl, workload }: ClientConfig): Promise<void> {
  const open = connection.openChannel?.bind(connection);
  if (open === undefined) throw new Error(`${impl} has no channels`);
  const opened: BenchChannel[] = [];
  channels.set(connection, opened);
  for (let i = 0; i < workload.inFlight; i++) opened.push(await open());
}

function operation(connection: BenchConnection, { workload }: ClientConfig, worker: number, slot: number): Operation {
  if (workload.kind === "server-stream") {
    const items = workload.items ?? 1;
    // Items count as they arrive: a stream under way when the window opens or closes counts for its part in it.
    return (progress) => connection.stream(items, () => progress(1)).then(() => 0);
  }
  if (workload.kind === "channel") {
    const channel = channels.get(connection)?.[slot];
    if (channel === undefined) throw new Error(`no channel for slot ${slot}`);
    let seq = worker;
    return () => channel.echo({ seq: seq++, value: "item" }).then(() => 1);
  }
  if (workload.method === "echo") return () => connection.echo(payload).then(() => 1);
  let i = worker;
  return () => connection.add(i++, 1).then(() => 1);
}

serve<ClientCommands>({
  async init(arg) {
    config = arg;
    impl = await loadImpl(arg.impl);
    payload = randomBytes(arg.workload.payloadBytes ?? 0);
    if (arg.workload.kind === "idle") return null;
    const options: ConnectOptions = {
      inFlight: arg.workload.inFlight,
      payloadBytes: arg.workload.payloadBytes ?? 0,
      crypto: arg.workload.crypto ?? false,
      proxy: arg.workload.proxy ?? false,
    };
    for (let i = 0; i < arg.connections; i++) connections.push(await impl.connect(arg.address, options));
    if (arg.workload.kind === "channel") for (const connection of connections) await openChannels(connection, arg);
    for (const connection of connections) await check(connection, arg);
    return null;
  },
  start() {
    const { config } = configured();
    const operations: Operation[] = [];
    for (const connection of connections) {
      for (let w = 0; w < config.workload.inFlight; w++) operations.push(operation(connection, config, w * 1_000_000, w));
    }
    loop.start(operations);
    return null;
  },
  mark() {
    loop.mark();
    return null;
  },
  stop() {
    // The calls still in flight are not waited for: the report is taken, and
    // the process is about to exit (1,000 pipelined HTTP calls take seconds).
    return loop.stop();
  },
  async idle({ count, concurrency }) {
    const { config, impl } = configured();
    const connectIdle = impl.connectIdle;
    if (connectIdle === undefined) throw new Error(`${config.impl} has no idle-connection workload`);
    const histogram = createHistogram();
    const cpuAtStart = process.cpuUsage();
    const started = performance.now();
    let next = 0;
    const opener = async (): Promise<void> => {
      while (next < count) {
        next++;
        const t0 = performance.now();
        idle.push(await connectIdle(config.address));
        histogram.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, opener));
    const cpu = process.cpuUsage(cpuAtStart);
    return {
      connections: idle.length,
      elapsedMs: performance.now() - started,
      cpuUs: cpu.user + cpu.system,
      maxRssBytes: process.resourceUsage().maxRSS * 1024,
      p50Ms: histogram.percentile(50) / 1e6,
      p99Ms: histogram.percentile(99) / 1e6,
    };
  },
  async exit() {
    for (const connection of idle) connection.close();
    // Channels first: a connection closing gracefully may wait for the channels on it.
    const open = [...channels.values()].flat();
    const closing = Promise.all(open.map((c) => c.close().catch(() => undefined))).then(() =>
      Promise.all(connections.map((c) => c.close().catch(() => undefined))),
    );
    await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 1000))]);
    return null;
  },
});
