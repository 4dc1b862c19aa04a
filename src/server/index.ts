export { Server, type ServerOptions, type CloseOptions, type ServerHook, type ServerHookName } from "./server.js";
export type { CallContext, PeerInfo } from "./call-context.js";
export { isLoopbackPeer } from "./call-context.js";
export type { Handler, RegisterOptions, RegisterServiceOptions } from "./registry.js";
export type { ArgumentValidator, StandardSchemaV1 } from "./argument-validator.js";
export { serverChannels } from "./diagnostics.js";
export { RpcError, ErrorCode } from "../protocol/rpc-error.js";
