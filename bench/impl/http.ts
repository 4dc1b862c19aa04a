/**
 * Baseline (c): what many services do instead of an RPC framework, a
 * node:http server taking and returning JSON, called with undici. Each
 * benchmark connection is one undici Pool of one keep-alive connection with
 * HTTP/1.1 pipelining up to the workload's in-flight count (requests are
 * marked idempotent and non-blocking so undici pipelines POSTs), so calls
 * share one connection as they do in rapt. Binary payloads travel as base64
 * strings, as they must in JSON.
 */
import { type IncomingMessage, type ServerResponse, createServer } from "node:http";
import { Pool } from "undici";
import type { BenchConnection, BenchServer, ConnectOptions, Impl } from "./types.js";

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => resolve(chunks.length === 1 ? (chunks[0] as Buffer).toString("utf8") : Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

async function startServer(): Promise<BenchServer> {
  let operations = 0;
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    readBody(req).then(
      (text) => {
        const body = JSON.parse(text) as { a?: number; b?: number; data?: string };
        if (req.url === "/add") {
          operations++;
          reply(res, 200, JSON.stringify({ result: (body.a as number) + (body.b as number) }));
        } else if (req.url === "/echo") {
          operations++;
          reply(res, 200, JSON.stringify({ data: body.data }));
        } else reply(res, 404, JSON.stringify({ error: `no route ${req.url}` }));
      },
      () => reply(res, 400, JSON.stringify({ error: "bad request" })),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const bound = server.address();
  if (bound === null || typeof bound === "string") throw new Error("no TCP address");
  return {
    address: `127.0.0.1:${bound.port}`,
    operations: () => operations,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function connect(address: string, options: ConnectOptions): Promise<BenchConnection> {
  const pool = new Pool(`http://${address}`, {
    connections: 1,
    pipelining: options.inFlight,
    keepAliveTimeout: 60_000,
    bodyTimeout: 60_000,
    headersTimeout: 60_000,
  });
  const post = async (path: string, payload: unknown): Promise<unknown> => {
    const { statusCode, body } = await pool.request({
      path,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
      idempotent: true,
      blocking: false,
    });
    const parsed = (await body.json()) as unknown;
    if (statusCode !== 200) throw new Error(`HTTP ${statusCode}: ${JSON.stringify(parsed)}`);
    return parsed;
  };
  return {
    add: async (a, b) => ((await post("/add", { a, b })) as { result: number }).result,
    echo: async (data) => {
      const base64 = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64");
      const answer = (await post("/echo", { data: base64 })) as { data: string };
      return Buffer.from(answer.data, "base64");
    },
    stream: () => Promise.reject(new Error("the HTTP baseline has no stream workload")),
    close: () => pool.close(),
  };
}

export const http: Impl = { startServer, connect };
