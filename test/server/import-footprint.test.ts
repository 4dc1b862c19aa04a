import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const serverIndex = new URL("../../src/server/index.js", import.meta.url).href;
const protocolIndex = new URL("../../src/protocol/index.js", import.meta.url).href;

/** Runs an ES module script in a fresh Node process and parses the JSON line it prints. */
async function inFreshProcess(script: string): Promise<unknown> {
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { timeout: 20_000 });
  return JSON.parse(stdout);
}

/**
 * What importing rapt/server loads: dependencies a server may never use are
 * loaded on first use (each cost every server RSS). A fresh process shows
 * what an import loads.
 */
describe("rapt/server import footprint", () => {
  it("does not load ipaddr.js until an IP plugin parses an address, which then works", async () => {
    const result = await inFreshProcess(`
      import { createRequire } from "node:module";
      const cache = createRequire(import.meta.url).cache;
      const loaded = () => Object.keys(cache).some((path) => path.includes("ipaddr.js"));
      const { ipFilter } = await import(${JSON.stringify(serverIndex)});
      const atImport = loaded();
      const filter = ipFilter({ allow: ["10.0.0.0/8", "::1"] });
      console.log(JSON.stringify({
        atImport,
        afterUse: loaded(),
        inside: filter.allows("10.1.2.3"),
        mapped: filter.allows("::ffff:10.9.9.9"),
        outside: filter.allows("192.168.0.1"),
      }));
    `);
    assert.deepEqual(result, { atImport: false, afterUse: true, inside: true, mapped: true, outside: false });
  });

  it("loads @msgpack/msgpack's ES module build, not its CommonJS build (which Node's export lexer would scan)", async () => {
    const result = await inFreshProcess(`
      import { createRequire } from "node:module";
      const cache = createRequire(import.meta.url).cache;
      const { Server } = await import(${JSON.stringify(serverIndex)});
      const server = new Server();
      server.register("t", { now: () => new Date(0) });
      await server.listen("127.0.0.1:0");
      await server.close();
      console.log(JSON.stringify({ cjs: Object.keys(cache).filter((path) => path.includes("@msgpack")).length }));
    `);
    assert.deepEqual(result, { cjs: 0 });
  });

  it("does not load node:crypto or node:zlib for a plain, uncompressed TCP server until its first handshake", async () => {
    const result = await inFreshProcess(`
      import { connect } from "node:net";
      const { Server, crypto, compression } = await import(${JSON.stringify(serverIndex)});
      const loaded = () => ({
        crypto: process.moduleLoadList.includes("NativeModule crypto"),
        zlib: process.moduleLoadList.includes("NativeModule zlib"),
      });
      const server = new Server();
      const [address] = await server.listen("127.0.0.1:0");
      const listening = loaded();
      // A connection's id is a random UUID: node:crypto loads at its handshake.
      const { FRAME_HEADER_SIZE, FrameType, PROTOCOL_VERSION, writeFrameHeader } = await import(${JSON.stringify(protocolIndex)});
      const { encode } = await import("@msgpack/msgpack");
      const hello = encode({ version: PROTOCOL_VERSION, limits: { maxFrameSize: 65536, maxMessageSize: 65536, maxConcurrentStreams: 10 } });
      const frame = Buffer.alloc(FRAME_HEADER_SIZE + hello.length);
      writeFrameHeader(frame, 0, hello.length, FrameType.HELLO, 0, 0);
      frame.set(hello, FRAME_HEADER_SIZE);
      const socket = connect(Number(address.split(":").pop()), "127.0.0.1");
      socket.write(frame);
      await new Promise((resolve) => socket.once("data", resolve));
      socket.destroy();
      const connected = loaded();
      await server.close();
      // (The crypto and compression tests show the plugins work with their built-ins loaded on use.)
      console.log(JSON.stringify({ listening, connected, exported: typeof crypto === "function" && typeof compression === "function" }));
    `);
    assert.deepEqual(result, {
      listening: { crypto: false, zlib: false },
      connected: { crypto: true, zlib: false },
      exported: true,
    });
  });

  it("does not load node:tls for a plain TCP server", async () => {
    const result = await inFreshProcess(`
      const { Server } = await import(${JSON.stringify(serverIndex)});
      const server = new Server();
      await server.listen("127.0.0.1:0");
      await server.close();
      console.log(JSON.stringify({ tls: process.moduleLoadList.includes("NativeModule tls") }));
    `);
    assert.deepEqual(result, { tls: false });
  });
});
