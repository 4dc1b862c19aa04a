import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runExample } from "./run-example.js";

describe("processor and TLS examples", () => {
  it("encrypted: a client with the key is served; a plaintext client and one with another key are refused", async () => {
    const r = runExample("encrypted");
    assert.equal(await r.exited, 0, r.output());
    assert.equal(
      r.output(),
      [
        "server: listening, encryption required",
        "client: vault.whoami() -> token s3cr3t, received sealed",
        "client: vault.store(15000 characters) -> stored 15000 characters",
        "plaintext client: UNAUTHENTICATED: this server accepts only encrypted connections: the HELLO offers no crypto proof (configure the client with the crypto processor and a key the server has)",
        `client with another key: UNAUTHENTICATED: the HELLO's crypto proof failed authentication: it (or its frame header) was altered, or the sender's key "2026-01" is not the same as this side's`,
        "done: client and server closed",
        "",
      ].join("\n"),
    );
  });

  it("tls: mutual TLS admits alice, middleware refuses bob, and a client without a certificate is refused", async () => {
    const r = runExample("tls");
    assert.equal(await r.exited, 0, r.output());
    const lines = r.output().split("\n");
    assert.deepEqual(lines.slice(0, 4), [
      "made a throwaway CA, a server certificate and client certificates for alice and bob",
      "server: admitted alice",
      "alice: hello alice",
      "bob: refused (PERMISSION_DENIED)",
    ]);
    // Refused in the TLS handshake: by the server's alert or by its close, whichever the client reads first.
    assert.match(lines[4] ?? "", /^anonymous: refused \((UNAUTHENTICATED|UNAVAILABLE)\)$/);
    assert.deepEqual(lines.slice(5), ["done: server closed", ""]);
  });
});
