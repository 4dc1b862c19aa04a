import { ErrorCode, RpcError } from "./rpc-error.js";

/** Where to listen or connect: TCP host and port, or a Unix socket path. */
export type Endpoint = { host: string; port: number } | { path: string };

/**
 * Parses `host:port`, `[v6]:port`, `:port` (all interfaces), `unix:/path` or a
 * path starting with `/` or `.`. Throws INVALID_ARGUMENT naming the input.
 */
export function parseEndpoint(input: string | Endpoint): Endpoint {
  if (typeof input !== "string") {
    if ("path" in input && typeof input.path === "string" && input.path.length > 0) return { path: input.path };
    if ("port" in input && Number.isInteger(input.port) && input.port >= 0 && input.port <= 65535) {
      return { host: input.host ?? "127.0.0.1", port: input.port };
    }
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `invalid endpoint ${JSON.stringify(input)}: expected { host, port } or { path }`);
  }
  if (input.startsWith("unix:") && input.length > 5) return { path: input.slice(5) };
  if (input.startsWith("/") || input.startsWith(".")) return { path: input };
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(input);
  const port = match === null ? Number.NaN : Number(match[3]);
  if (match === null || port > 65535) {
    throw new RpcError(
      ErrorCode.INVALID_ARGUMENT,
      `invalid endpoint "${input}": expected host:port, [ipv6]:port, unix:/path or an absolute path`,
    );
  }
  const host = match[1] ?? match[2] ?? "";
  return { host: host === "" ? "::" : host, port };
}

/** The string form of an endpoint, accepted back by {@link parseEndpoint}. */
export function formatEndpoint(endpoint: Endpoint): string {
  if ("path" in endpoint) return `unix:${endpoint.path}`;
  return endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`;
}
