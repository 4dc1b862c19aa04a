import { ErrorCode, RpcError } from "./rpc-error.js";

/**
 * OpenSSL's certificate verification results (as Node reports them in
 * `error.code`) and TLS alerts about certificates: the peer's certificate
 * was missing, not trusted, expired, or for another name.
 */
const CERTIFICATE_PROBLEM =
  /CERT|UNKNOWN_CA|INVALID_CA|ALTNAME|HOSTNAME|ACCESS_DENIED|UNABLE_TO_VERIFY|SELF_SIGNED|CHAIN_TOO_LONG|SIGNATURE_FAILURE/;

/** The reason in an OpenSSL error string: `…:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:…`. */
const OPENSSL_REASON = /SSL routines:[^:]*:([^:]+):/;

/**
 * Why a connection closed on a socket error. A TLS handshake that failed
 * over a certificate (the server's is not trusted, the client sent none or
 * one the server does not trust) is UNAUTHENTICATED, `TLS handshake failed:
 * …`: retrying will not help. Other TLS failures are UNAVAILABLE `TLS
 * error: …`, and anything else UNAVAILABLE `connection error: …`.
 */
export function socketErrorReason(error: Error): RpcError {
  const code = (error as NodeJS.ErrnoException).code;
  if (typeof code !== "string" || !(code.startsWith("ERR_SSL_") || CERTIFICATE_PROBLEM.test(code))) {
    return new RpcError(ErrorCode.UNAVAILABLE, `connection error: ${error.message}`, undefined, { cause: error });
  }
  const reason = OPENSSL_REASON.exec(error.message)?.[1] ?? error.message.trim();
  if (CERTIFICATE_PROBLEM.test(code)) {
    return new RpcError(ErrorCode.UNAUTHENTICATED, `TLS handshake failed: ${reason} (${code})`, { tlsCode: code }, { cause: error });
  }
  return new RpcError(ErrorCode.UNAVAILABLE, `TLS error: ${reason} (${code})`, { tlsCode: code }, { cause: error });
}
