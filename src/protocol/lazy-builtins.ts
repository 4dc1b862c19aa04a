import { createRequire } from "node:module";
import type * as Crypto from "node:crypto";
import type * as Zlib from "node:zlib";

/**
 * Node built-ins that only some servers use, loaded on first use instead of
 * when rapt is imported: rapt/server re-exports the crypto and compression
 * plugins, and their static imports made every server, plaintext and
 * uncompressed ones too, load node:crypto (with its WebCrypto and X.509
 * parts) and node:zlib at startup, about 1 MB of RSS. require(), because
 * their callers are synchronous.
 */
const require = createRequire(import.meta.url);
let cryptoModule: typeof Crypto | undefined;
let zlibModule: typeof Zlib | undefined;

/** node:crypto, loaded on the first call. */
export function nodeCrypto(): typeof Crypto {
  return (cryptoModule ??= require("node:crypto") as typeof Crypto);
}

/** node:zlib, loaded on the first call. */
export function nodeZlib(): typeof Zlib {
  return (zlibModule ??= require("node:zlib") as typeof Zlib);
}
