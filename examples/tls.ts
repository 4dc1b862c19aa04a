// Mutual TLS: `node dist/examples/tls.js` (needs the openssl command). Makes a
// throwaway CA, a server certificate and two client certificates in a
// temporary directory, serves over TLS requiring client certificates, and
// shows who gets in. Nothing is kept: the directory is removed at the end.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, type ClientOptions, RpcError } from "rapt/client";
import { type CallContext, ErrorCode, Server } from "rapt/server";

const dir = mkdtempSync(join(tmpdir(), "rapt-tls-example-"));
const file = (name: string): Buffer => readFileSync(join(dir, name));
const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
const openssl = (...args: string[]): void => {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
};

/** A certificate for `subject` signed by the throwaway CA, valid for a day. */
function issue(name: string, subject: string, extensions: string): { key: Buffer; cert: Buffer } {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
  openssl(
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    `${name}.crt`,
    "-days",
    "1",
    "-extfile",
    `${name}.ext`,
  );
  return { key: file(`${name}.key`), cert: file(`${name}.crt`) };
}

try {
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=throwaway example CA");
  const ca = file("ca.crt");
  const serverPair = issue("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  const alice = issue("alice", "/CN=alice", "extendedKeyUsage=clientAuth\n");
  const bob = issue("bob", "/CN=bob", "extendedKeyUsage=clientAuth\n");
  console.log("made a throwaway CA, a server certificate and client certificates for alice and bob");

  const server = new Server();
  // Runs after the TLS handshake: the client's certificate has been verified against the CA.
  server.useConnection((conn, next) => {
    const name = String(conn.peer.certificate?.subject.CN);
    if (name === "bob") conn.reject(ErrorCode.PERMISSION_DENIED, "bob may not connect");
    console.log(`server: admitted ${name}`);
    return next();
  });
  server.register("hello", function (this: CallContext) {
    return `hello ${String(this.peer.certificate?.subject.CN)}`;
  });
  const [address] = await server.listen({
    host: "127.0.0.1",
    port: 0,
    tls: { key: serverPair.key, cert: serverPair.cert, ca, requestCert: true },
  });

  async function connectAs(who: string, tls: ClientOptions["tls"]): Promise<void> {
    const client = new Client(address as string, { tls });
    try {
      console.log(`${who}: ${await client.call<string>("hello")}`);
    } catch (error) {
      console.log(`${who}: refused (${(error as RpcError).code})`);
    }
    await client.close();
  }

  await connectAs("alice", { ca, key: alice.key, cert: alice.cert });
  await connectAs("bob", { ca, key: bob.key, cert: bob.cert });
  await connectAs("anonymous", { ca });
  await server.close();
  console.log("done: server closed");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
