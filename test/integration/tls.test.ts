import assert from "node:assert/strict";
import { X509Certificate, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Client, type ClientOptions } from "../../src/client/index.js";
import { crypto } from "../../src/plugin/index.js";
import {
  type CallContext,
  ErrorCode,
  type IncomingConnection,
  type PeerCertificate,
  RpcError,
  Server,
  type ServerOptions,
  type ServerTlsOptions,
} from "../../src/server/index.js";
import { rejectsWith, socketPath } from "./helpers.js";
import { type TestPki, makePki } from "./tls-certs.js";

let pki: TestPki;

before(() => {
  pki = makePki(["alice", "mallory"]);
});

after(() => pki.remove());

/** What a handler reports about its peer. */
interface WhoAmI {
  cn: string | null;
  fingerprint: string | null;
}

/** A server with `whoami` on one TLS listener (and a plain one with `plain`). */
async function serve(
  tls: ServerTlsOptions,
  options: ServerOptions = {},
  plain = false,
): Promise<{ server: Server; port: number; plainPort: number }> {
  const server = new Server({ keepalive: false, ...options });
  server.register("whoami", function (this: CallContext): WhoAmI {
    const certificate = this.peer.certificate;
    return { cn: (certificate?.subject.CN as string | undefined) ?? null, fingerprint: certificate?.fingerprint256 ?? null };
  });
  const endpoints = [{ host: "127.0.0.1", port: 0, tls }, ...(plain ? ["127.0.0.1:0"] : [])];
  const addresses = await server.listen(...endpoints);
  const ports = addresses.map((a) => Number(a.slice(a.lastIndexOf(":") + 1)));
  return { server, port: ports[0] as number, plainPort: ports[1] ?? 0 };
}

/**
 * Asserts a call failed because the TLS server refused the client's
 * certificate: UNAUTHENTICATED with the server's alert, or UNAVAILABLE when
 * the connection closed before the alert could be read.
 */
async function refusedInTls(call: Promise<unknown>): Promise<void> {
  let caught: unknown;
  try {
    await call;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof RpcError, `expected an RpcError, got ${String(caught)}`);
  assert.ok(caught.code === ErrorCode.UNAUTHENTICATED || caught.code === ErrorCode.UNAVAILABLE, `code ${caught.code}: ${caught.message}`);
  assert.match(caught.message, /certificate|unknown ca/);
}

function client(target: string, tls: ClientOptions["tls"], options: ClientOptions = {}): Client {
  return new Client(target, { keepalive: false, reconnect: { initialDelay: 10_000 }, ...options, ...(tls === undefined ? {} : { tls }) });
}

describe("TLS listeners and clients", () => {
  it("serve calls over TLS, the client verifying the server's certificate (by IP or by name)", async () => {
    const { server, port } = await serve({ key: pki.server.key, cert: pki.server.cert });
    const byIp = client(`127.0.0.1:${port}`, { ca: pki.ca });
    const byName = client(`localhost:${port}`, { ca: pki.ca });
    try {
      assert.deepEqual(await byIp.call("whoami"), { cn: null, fingerprint: null }, "no client certificate was asked for");
      assert.deepEqual(await byName.call("whoami"), { cn: null, fingerprint: null });
    } finally {
      await Promise.all([byIp.close(), byName.close()]);
      await server.close();
    }
  });

  it("a client refuses a server certificate it does not trust, or one for another name: UNAUTHENTICATED", async () => {
    const { server, port } = await serve({ key: pki.server.key, cert: pki.server.cert });
    const untrusting = client(`127.0.0.1:${port}`, {});
    const wrongName = client(`127.0.0.1:${port}`, { ca: pki.ca, servername: "rapt.example" });
    try {
      const error = await rejectsWith(untrusting.call("whoami"), ErrorCode.UNAUTHENTICATED, /TLS handshake failed: .*certificate/);
      assert.deepEqual(error.data, { tlsCode: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
      await rejectsWith(wrongName.call("whoami"), ErrorCode.UNAUTHENTICATED, /TLS handshake failed: .*ERR_TLS_CERT_ALTNAME_INVALID/);
    } finally {
      await Promise.all([untrusting.close(), wrongName.close()]);
      await server.close();
    }
  });

  it("mutual TLS: without a certificate or with an untrusted one the client is refused; middleware and handlers see a trusted one", async () => {
    const seen: Array<PeerCertificate | undefined> = [];
    const middleware = (conn: IncomingConnection, next: () => Promise<void>): Promise<void> => {
      seen.push(conn.peer.certificate);
      if (conn.peer.certificate?.subject.CN === "mallory") conn.reject(ErrorCode.PERMISSION_DENIED, "mallory is not welcome");
      return next();
    };
    const { server, port } = await serve(
      { key: pki.server.key, cert: pki.server.cert, ca: pki.ca, requestCert: true },
      { connectionMiddleware: [middleware] },
    );
    const anonymous = client(`127.0.0.1:${port}`, { ca: pki.ca });
    const intruder = client(`127.0.0.1:${port}`, { ca: pki.ca, ...pki.untrusted });
    const alice = client(`127.0.0.1:${port}`, { ca: pki.ca, ...(pki.clients.alice as { key: Buffer; cert: Buffer }) });
    const mallory = client(`127.0.0.1:${port}`, { ca: pki.ca, ...(pki.clients.mallory as { key: Buffer; cert: Buffer }) });
    try {
      // Refused in the TLS handshake. The client sees the server's alert
      // (UNAUTHENTICATED) if it arrives before the server's close, else the
      // close (UNAVAILABLE, with a hint): the TLS layer does not promise which.
      for (const refused of [anonymous, intruder]) await refusedInTls(refused.call("whoami"));
      assert.equal(seen.length, 0, "refused in the TLS handshake, before any middleware");
      const fingerprint = new X509Certificate((pki.clients.alice as { cert: Buffer }).cert).fingerprint256;
      assert.deepEqual(await alice.call("whoami"), { cn: "alice", fingerprint });
      const [certificate] = seen as [PeerCertificate];
      assert.equal(certificate.subject.CN, "alice");
      assert.equal(certificate.subject.O, "rapt tests");
      assert.equal(certificate.issuer.CN, "test-ca");
      assert.equal(certificate.fingerprint256, fingerprint);
      assert.equal(certificate.authorized, true);
      assert.equal(certificate.authorizationError, undefined);
      assert.ok(certificate.raw.length > 100);
      await rejectsWith(mallory.call("whoami"), ErrorCode.PERMISSION_DENIED, "mallory is not welcome");
      assert.equal(seen.length, 2);
    } finally {
      await Promise.all([anonymous.close(), intruder.close(), alice.close(), mallory.close()]);
      await server.close();
    }
  });

  it("requestCert without rejectUnauthorized leaves the decision to middleware, which sees why a certificate failed", async () => {
    const reasons: string[] = [];
    const { server, port } = await serve(
      { key: pki.server.key, cert: pki.server.cert, ca: pki.ca, requestCert: true, rejectUnauthorized: false },
      {
        connectionMiddleware: [
          (conn, next) => {
            const certificate = conn.peer.certificate;
            if (certificate === undefined) return conn.reject(ErrorCode.UNAUTHENTICATED, "a client certificate is required");
            if (!certificate.authorized) {
              reasons.push(certificate.authorizationError ?? "");
              conn.reject(ErrorCode.UNAUTHENTICATED, `certificate of ${String(certificate.subject.CN)} not trusted`);
            }
            return next();
          },
        ],
      },
    );
    const anonymous = client(`127.0.0.1:${port}`, { ca: pki.ca });
    const intruder = client(`127.0.0.1:${port}`, { ca: pki.ca, ...pki.untrusted });
    const alice = client(`127.0.0.1:${port}`, { ca: pki.ca, ...(pki.clients.alice as { key: Buffer; cert: Buffer }) });
    try {
      await rejectsWith(anonymous.call("whoami"), ErrorCode.UNAUTHENTICATED, "a client certificate is required");
      await rejectsWith(intruder.call("whoami"), ErrorCode.UNAUTHENTICATED, "certificate of intruder not trusted");
      assert.deepEqual(reasons, ["UNABLE_TO_VERIFY_LEAF_SIGNATURE"]);
      assert.equal(((await alice.call("whoami")) as WhoAmI).cn, "alice");
    } finally {
      await Promise.all([anonymous.close(), intruder.close(), alice.close()]);
      await server.close();
    }
  });

  it("TLS and plaintext listeners side by side; a plaintext client cannot talk to the TLS one", async () => {
    const { server, port, plainPort } = await serve({ key: pki.server.key, cert: pki.server.cert }, {}, true);
    const overTls = client(`127.0.0.1:${port}`, { ca: pki.ca });
    const plain = client(`127.0.0.1:${plainPort}`, undefined);
    const confused = client(`127.0.0.1:${port}`, undefined, { connectTimeout: 2000 });
    try {
      assert.deepEqual(await overTls.call("whoami"), { cn: null, fingerprint: null });
      assert.deepEqual(await plain.call("whoami"), { cn: null, fingerprint: null });
      await rejectsWith(confused.call("whoami"), ErrorCode.UNAVAILABLE);
    } finally {
      await Promise.all([overTls.close(), plain.close(), confused.close()]);
      await server.close();
    }
  });

  it("works over a Unix socket too", async () => {
    const path = socketPath("tls");
    const server = new Server({ keepalive: false });
    server.register("whoami", function (this: CallContext) {
      return [this.peer.family, this.peer.certificate?.subject.CN ?? null];
    });
    const [address] = (await server.listen({
      path,
      tls: { key: pki.server.key, cert: pki.server.cert, ca: pki.ca, requestCert: true },
    })) as [string];
    const c = client(address, { ca: pki.ca, servername: "localhost", ...(pki.clients.alice as { key: Buffer; cert: Buffer }) });
    try {
      assert.deepEqual(await c.call("whoami"), ["unix", "alice"]);
    } finally {
      await c.close();
      await server.close();
    }
  });

  it("combines with the crypto processor", async () => {
    const key = randomBytes(32);
    const { server, port } = await serve(
      { key: pki.server.key, cert: pki.server.cert, ca: pki.ca, requestCert: true },
      { processors: [crypto({ keys: { k: key } })] },
    );
    const both = client(
      `127.0.0.1:${port}`,
      { ca: pki.ca, ...(pki.clients.alice as { key: Buffer; cert: Buffer }) },
      {
        processors: [crypto({ keys: { k: key } })],
      },
    );
    try {
      assert.equal(((await both.call("whoami")) as WhoAmI).cn, "alice");
    } finally {
      await both.close();
      await server.close();
    }
  });

  it("checks the tls options", async () => {
    const server = new Server();
    try {
      await assert.rejects(
        server.listen({ host: "127.0.0.1", port: 0, tls: "yes" as unknown as ServerTlsOptions }),
        (error: unknown) =>
          error instanceof RpcError && error.code === ErrorCode.INVALID_ARGUMENT && /tls for 127\.0\.0\.1:0/.test(error.message),
      );
      assert.throws(
        () => new Client("127.0.0.1:1", { tls: 5 as unknown as ClientOptions["tls"] }),
        (error: unknown) => error instanceof RpcError && error.code === ErrorCode.INVALID_ARGUMENT,
      );
    } finally {
      await server.close();
    }
  });
});
