import type { TLSSocket } from "node:tls";

/**
 * The certificate a TLS peer presented, as connection middleware and
 * handlers see it on `peer.certificate`. Fields of the subject and issuer
 * are keyed by their short names (`CN`, `O`, `OU`, `C`, ...); a field that
 * occurs several times has an array of values.
 */
export interface PeerCertificate {
  /** The subject's fields; `subject.CN` is the common name. */
  readonly subject: Readonly<Record<string, string | readonly string[]>>;
  /** The issuer's fields. */
  readonly issuer: Readonly<Record<string, string | readonly string[]>>;
  /** The subject alternative names as OpenSSL prints them (`DNS:a.example, IP Address:10.0.0.1`), if any. */
  readonly subjectAltName: string | undefined;
  /** SHA-256 fingerprint of the DER encoding, as colon-separated hex pairs (`AB:12:...`). */
  readonly fingerprint256: string;
  /** Serial number, in hex. */
  readonly serialNumber: string;
  /** Start of validity, as OpenSSL prints it (`Jan  1 00:00:00 2030 GMT`). */
  readonly validFrom: string;
  /** End of validity. */
  readonly validTo: string;
  /**
   * Whether the certificate verified against the listener's trusted CAs.
   * Always true when the listener has `requestCert` and `rejectUnauthorized`
   * (the default) set: unverified peers never get that far.
   */
  readonly authorized: boolean;
  /** Why it did not verify, when `authorized` is false. */
  readonly authorizationError: string | undefined;
  /** The DER encoding. */
  readonly raw: Uint8Array;
}

function fields(value: unknown): Readonly<Record<string, string | readonly string[]>> {
  const out: Record<string, string | readonly string[]> = {};
  if (typeof value !== "object" || value === null) return Object.freeze(out);
  for (const [key, field] of Object.entries(value as Record<string, unknown>)) {
    if (typeof field === "string") out[key] = field;
    else if (Array.isArray(field)) out[key] = Object.freeze(field.map(String));
  }
  return Object.freeze(out);
}

/** The certificate the peer of an established TLS socket presented, or undefined when it presented none. */
export function peerCertificate(socket: TLSSocket): PeerCertificate | undefined {
  const cert = socket.getPeerCertificate();
  if (cert === null || typeof cert !== "object" || cert.raw === undefined) return undefined;
  const error = socket.authorizationError as Error | string | null | undefined;
  return Object.freeze({
    subject: fields(cert.subject),
    issuer: fields(cert.issuer),
    subjectAltName: cert.subjectaltname,
    fingerprint256: cert.fingerprint256,
    serialNumber: cert.serialNumber,
    validFrom: cert.valid_from,
    validTo: cert.valid_to,
    authorized: socket.authorized,
    authorizationError:
      error === null || error === undefined
        ? undefined
        : error instanceof Error
          ? ((error as NodeJS.ErrnoException).code ?? error.message)
          : String(error),
    raw: new Uint8Array(cert.raw),
  });
}
