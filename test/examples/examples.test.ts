import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { outputMatching, runExample } from "./run-example.js";
import { fileURLToPath } from "node:url";

function source(relative: string): string {
  return readFileSync(fileURLToPath(new URL(`../../../${relative}`, import.meta.url)), "utf8");
}

describe("examples", () => {
  it("README quickstart is exactly the quickstart example files", () => {
    const readme = source("README.md");
    for (const file of ["examples/quickstart-server.ts", "examples/quickstart-client.ts"]) {
      assert.ok(readme.includes("```ts\n// " + file + "\n" + source(file) + "```"), `${file} differs from its README block`);
    }
  });

  it("quickstart client calls quickstart server", async () => {
    const server = runExample("quickstart-server", ["127.0.0.1:0"]);
    try {
      const [, address] = await outputMatching(server, /listening on (\S+)/);
      const client = runExample("quickstart-client", [address as string]);
      assert.equal(await client.exited, 0, client.output());
      assert.equal(client.output(), "3\n");
      server.child.kill("SIGTERM");
      assert.equal(await server.exited, 0, server.output());
    } finally {
      server.child.kill("SIGKILL");
    }
  });

  it("demo runs a server and a client in one process and exits cleanly", async () => {
    const demo = runExample("demo");
    assert.equal(await demo.exited, 0, demo.output());
    const out = demo.output();
    assert.match(out, /calc\.add\(40, 2\) -> 42/);
    assert.match(out, /1000 concurrent calls on one connection/);
    assert.match(out, /calc\.divide\(1, 0\) -> INVALID_ARGUMENT: division by zero/);
    assert.match(out, /cancelled after 50 ms/);
    assert.match(out, /done: client and server closed/);
  });

  it("stream example shows a server stream, early exit, a client stream and both ways", async () => {
    const r = runExample("stream");
    assert.equal(await r.exited, 0, r.output());
    assert.equal(
      r.output(),
      [
        "tick 1",
        "tick 2",
        "tick 3",
        "stopped reading after 2",
        "sum of 1..100 streamed to the server = 5050",
        "HELLO!",
        "STREAMS!",
        "",
      ].join("\n"),
    );
  });

  it("chat example broadcasts over channels and closes them", async () => {
    const r = runExample("chat");
    assert.equal(await r.exited, 0, r.output());
    assert.equal(
      r.output(),
      ["ada sees ada: hello", "ada sees bob: hi ada", "bob sees bob: hi ada", "ada's channel closed: ada left", ""].join("\n"),
    );
  });

  it("session example pins calls to one connection and releases the state at the end", async () => {
    const r = runExample("session");
    assert.equal(await r.exited, 0, r.output());
    // The server's line comes when the session's end reaches it: its place varies.
    const lines = r.output().trim().split("\n");
    assert.equal(lines.length, 3, r.output());
    assert.ok(
      lines.some((l) => /^client: 2 items on connection [0-9a-f]{8}, session on [0-9a-f]{8}: true$/.test(l)),
      r.output(),
    );
    assert.ok(
      lines.some((l) => /^server: session [0-9a-f]{8} ended, cart released$/.test(l)),
      r.output(),
    );
    assert.ok(lines.includes('client: session returned "2 items"'), r.output());
  });

  it("unary client talks to unary server, which stops on SIGTERM", async () => {
    const server = runExample("unary-server", ["127.0.0.1:0"]);
    try {
      const [, address] = await outputMatching(server, /listening on (\S+)/);
      const client = runExample("unary-client", [address as string]);
      assert.equal(await client.exited, 0, client.output());
      const out = client.output();
      assert.match(out, /add\(2, 3\) = 5/);
      assert.match(out, /divide\(1, 4\) = 0\.25/);
      assert.match(out, /whoami\(\) = 127\.0\.0\.1 on connection [0-9a-f-]{36}/);
      assert.match(out, /bad argument: calc\.add: args\[1\] should be number/);
      assert.match(out, /slow call: DEADLINE_EXCEEDED/);
      server.child.kill("SIGTERM");
      assert.equal(await server.exited, 0, server.output());
      assert.match(server.output(), /stopped/);
    } finally {
      server.child.kill("SIGKILL");
    }
  });
});
