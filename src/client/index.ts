export { Client, type ClientOptions } from "./client.js";
export type { CallOptions } from "./call-options.js";
export type { ServiceProxy, WireValue } from "./proxy.js";
export type { ServerStream } from "./streaming-call.js";
export type { BackoffOptions } from "./backoff.js";
export { RpcError, ErrorCode } from "../protocol/rpc-error.js";
export type { ChannelOptions } from "./channel-call.js";
export type { Channel, ChannelClose } from "../protocol/channel.js";
