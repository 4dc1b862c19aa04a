import type { ImplName } from "../scenarios.js";
import type { Impl } from "./types.js";

/**
 * Loads one implementation. Imports are dynamic so a process loads only the
 * one it runs: a rapt server's memory does not include grpc-js or undici.
 */
export async function loadImpl(name: ImplName): Promise<Impl> {
  switch (name) {
    case "rapt":
      return (await import("./rapt.js")).rapt;
    case "minimal":
      return (await import("./minimal.js")).minimal;
    case "grpc":
      return (await import("./grpc.js")).grpcImpl;
    case "http":
      return (await import("./http.js")).http;
  }
}
