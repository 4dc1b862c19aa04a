import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * ipaddr.js is loaded when an IP plugin first needs it: importing it from
 * ESM made every server pay for Node's CommonJS export lexer over it (several
 * MB of RSS). A fresh process shows what an import loads.
 */
describe("ipaddr.js loading", () => {
  it("is not loaded by importing rapt/server, and is loaded (and works) once an IP plugin parses an address", async () => {
    const serverIndex = new URL("../../src/server/index.js", import.meta.url).href;
    const script = `
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
    `;
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { timeout: 20_000 });
    assert.deepEqual(JSON.parse(stdout), { atImport: false, afterUse: true, inside: true, mapped: true, outside: false });
  });
});
