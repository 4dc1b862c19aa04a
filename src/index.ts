/**
 * rapt: multiplexed, typed RPC for Node.js. The server lives in
 * `rapt/server`, the client in `rapt/client`, the wire in `rapt/protocol`;
 * this entry point re-exports the everyday API of all three.
 */
export * from "./server/index.js";
export * from "./client/index.js";
export type { Metadata, Limits } from "./protocol/wire-messages.js";
export type { Endpoint } from "./protocol/endpoint.js";
export type { KeepaliveOptions } from "./protocol/keepalive.js";
export type { CodecLimits } from "./protocol/msgpack-codec.js";
