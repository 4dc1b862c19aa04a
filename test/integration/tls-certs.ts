/**
 * Throwaway certificates for the TLS tests, made with `openssl` when a test
 * runs (nothing that can expire is committed): a CA, a server certificate
 * for localhost and 127.0.0.1, client certificates with chosen common
 * names, and one client certificate from a second, untrusted CA. Written to
 * a fresh temporary directory, removed by {@link TestPki.remove}. No tests
 * here.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A key and certificate, PEM. */
export interface KeyPair {
  key: Buffer;
  cert: Buffer;
}

/** The certificates of one test run. */
export interface TestPki {
  /** The trusted CA's certificate. */
  ca: Buffer;
  server: KeyPair;
  /** Client certificates by common name, issued by the trusted CA. */
  clients: Record<string, KeyPair>;
  /** A client certificate (CN "intruder") issued by another CA. */
  untrusted: KeyPair;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  try {
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`openssl ${args[0]} failed (the TLS tests need the openssl command): ${(error as Error).message} ${stderr}`, {
      cause: error,
    });
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function makeCa(dir: string, name: string): void {
  openssl(dir, ["req", "-x509", ...EC_KEY, "-keyout", `${name}.key`, "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=${name}`]);
}

function issue(dir: string, ca: string, name: string, subject: string, extensions: string): KeyPair {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, ["req", ...EC_KEY, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.crt`,
    "-CAkey",
    `${ca}.key`,
    "-set_serial",
    String(Math.floor(Math.random() * 1e9)),
    "-out",
    `${name}.crt`,
    "-days",
    "1",
    "-extfile",
    `${name}.ext`,
  ]);
  return { key: readFileSync(join(dir, `${name}.key`)), cert: readFileSync(join(dir, `${name}.crt`)) };
}

/** Makes a CA, a server certificate and client certificates for `clientNames`. */
export function makePki(clientNames: readonly string[]): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "rapt-tls-"));
  try {
    makeCa(dir, "test-ca");
    makeCa(dir, "other-ca");
    const server = issue(
      dir,
      "test-ca",
      "server",
      "/CN=localhost",
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    const clients: Record<string, KeyPair> = {};
    for (const name of clientNames)
      clients[name] = issue(dir, "test-ca", `client-${name}`, `/CN=${name}/O=rapt tests`, "extendedKeyUsage=clientAuth\n");
    const untrusted = issue(dir, "other-ca", "intruder", "/CN=intruder", "extendedKeyUsage=clientAuth\n");
    return {
      ca: readFileSync(join(dir, "test-ca.crt")),
      server,
      clients,
      untrusted,
      remove: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}
