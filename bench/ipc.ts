/**
 * Request/response over the IPC channel of a forked benchmark process. The
 * parent drives each child with commands (`init`, `mark`, `report`, ...);
 * every command gets exactly one reply or times out. A child exits when the
 * parent goes away (its IPC channel disconnects), so no process outlives a
 * run, whatever happens to the parent.
 */
import { type ChildProcess, fork } from "node:child_process";

/** Commands a kind of child understands: argument and result of each. */
export type CommandMap = Record<string, { arg: unknown; result: unknown }>;

interface Request {
  id: number;
  cmd: string;
  arg: unknown;
}

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kills every child still running (SIGKILL); used when the parent exits or is interrupted. */
export function killAllChildren(): void {
  for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  live.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", killAllChildren);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      killAllChildren();
      process.exit(130);
    });
  }
}

/** The parent's handle on one benchmark process. */
export class Child<C extends CommandMap> {
  readonly process: ChildProcess;
  readonly exited: Promise<void>;
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  private nextId = 1;
  private stderr = "";

  /** Forks `script` with `execArgv` (node flags); stdout is inherited, stderr kept for error messages. */
  constructor(script: string, execArgv: readonly string[], label: string) {
    installExitHook();
    this.process = fork(script, [], { execArgv: [...execArgv], stdio: ["ignore", "inherit", "pipe", "ipc"], serialization: "advanced" });
    live.add(this.process);
    this.process.stderr?.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    this.process.on("message", (message: Reply) => {
      const waiter = this.pending.get(message.id);
      if (waiter === undefined) return;
      this.pending.delete(message.id);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(`${label}: ${message.error ?? "failed"}`));
    });
    this.exited = new Promise((resolve) => {
      this.process.once("exit", (code, signal) => {
        live.delete(this.process);
        const why = new Error(`${label} exited (code ${code}, signal ${signal})${this.stderr === "" ? "" : `: ${this.stderr.trim()}`}`);
        for (const waiter of this.pending.values()) waiter.reject(why);
        this.pending.clear();
        resolve();
      });
    });
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  /** Sends a command; rejects if the child fails it, exits, or does not answer within `timeoutMs`. */
  request<K extends keyof C & string>(cmd: K, arg: C[K]["arg"], timeoutMs = 60_000): Promise<C[K]["result"]> {
    const id = this.nextId++;
    return new Promise<C[K]["result"]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${cmd}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as C[K]["result"]);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      const request: Request = { id, cmd, arg };
      this.process.send(request, (error) => {
        if (error !== null && this.pending.delete(id)) {
          clearTimeout(timer);
          reject(error);
        }
      });
    });
  }

  /** Asks the child to exit (command `exit`); kills it if it has not within `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const timer = setTimeout(() => this.process.kill("SIGKILL"), graceMs);
    try {
      await this.request("exit", undefined, graceMs);
    } catch {
      // It may exit before its answer arrives; the exit is what counts.
    }
    await this.exited;
    clearTimeout(timer);
  }
}

/** Child side: answers the parent's commands with `handlers`; once `exit` is answered, the process exits. */
export function serve<C extends CommandMap>(handlers: {
  [K in keyof C]: (arg: C[K]["arg"]) => C[K]["result"] | Promise<C[K]["result"]>;
}): void {
  if (process.send === undefined) throw new Error("this script is run by the benchmark runner (bench/run.ts), not directly");
  const send = (reply: Reply, then?: () => void): void => {
    process.send?.(reply, undefined, {}, () => then?.());
  };
  process.on("disconnect", () => process.exit(0));
  process.on("message", (request: Request) => {
    const handler = (handlers as Record<string, ((arg: unknown) => unknown) | undefined>)[request.cmd];
    if (handler === undefined) {
      send({ id: request.id, ok: false, error: `unknown command ${request.cmd}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(request.arg))
      .then(
        (result) => send({ id: request.id, ok: true, result }, request.cmd === "exit" ? () => process.exit(0) : undefined),
        (error: unknown) =>
          send({ id: request.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
      );
  });
}
