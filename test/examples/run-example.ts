/** Runs a compiled example as a child process and collects its output. No tests here. */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

/** A running example. */
export interface ExampleRun {
  child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output: () => string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

function example(name: string): string {
  return fileURLToPath(new URL(`../../examples/${name}.js`, import.meta.url));
}

/** Starts `examples/<name>.js`; a hung example is killed after 20 s so it fails its test, not the run. */
export function runExample(name: string, args: string[] = []): ExampleRun {
  const child = spawn(process.execPath, [example(name), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = once(child, "exit").then(([code]) => code as number | null);
  const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
  void exited.finally(() => clearTimeout(guard));
  return { child, output: () => output, exited };
}

/** Waits (bounded) until the example's output matches `pattern`. */
export async function outputMatching(r: ExampleRun, pattern: RegExp): Promise<RegExpExecArray> {
  for (let i = 0; i < 200; i++) {
    const match = pattern.exec(r.output());
    if (match !== null) return match;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`no ${pattern} in output:\n${r.output()}`);
}
