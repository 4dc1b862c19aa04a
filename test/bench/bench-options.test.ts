import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_NODE_FLAGS, parseOptions } from "../../bench/options.js";

describe("benchmark options", () => {
  const defaults = { jsonPath: "results.json" };

  it("runs every process with --single-threaded-gc unless --node-flags says otherwise", () => {
    assert.deepEqual(DEFAULT_NODE_FLAGS, ["--single-threaded-gc"]);
    assert.deepEqual(parseOptions([], defaults).nodeFlags, ["--single-threaded-gc"]);
    assert.deepEqual(parseOptions(["--node-flags="], defaults).nodeFlags, [], "none");
    assert.deepEqual(parseOptions(["--node-flags=--max-semi-space-size=16   --single-threaded-gc "], defaults).nodeFlags, [
      "--max-semi-space-size=16",
      "--single-threaded-gc",
    ]);
  });

  it("refuses node flags that are not flags, naming the one", () => {
    assert.throws(
      () => parseOptions(["--node-flags=--ok script.js"], defaults),
      /--node-flags takes node flags starting with "--", got "script.js"/,
    );
  });
});
