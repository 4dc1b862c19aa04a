export {
  Server,
  type ServerOptions,
  type CloseOptions,
  type ServerHook,
  type ServerHookName,
  type ServerTlsOptions,
  type ListenEndpoint,
} from "./server.js";
export type { CallContext, ConnectionInfo, PeerInfo } from "./call-context.js";
export type { PeerCertificate } from "../protocol/peer-certificate.js";
export { isLoopbackPeer } from "./call-context.js";
export type { AuthRequirement, ChannelHandler, EventListener, Handler, RegisterOptions, RegisterServiceOptions } from "./registry.js";
export type { CallMiddleware, CallMiddlewareContext } from "./call-middleware.js";
export type { Credentials } from "./server-connection.js";
export type { Session } from "./session.js";
export type { Remote } from "../client/remote.js";
export type { Channel, ChannelClose } from "../protocol/channel.js";
export type { ArgumentValidator, StandardSchemaV1 } from "./argument-validator.js";
export { serverChannels } from "./diagnostics.js";
export { RpcError, ErrorCode } from "../protocol/rpc-error.js";
export {
  type ConnectionMiddleware,
  type IncomingConnection,
  type ConnectionRefusedMessage,
  connectionRefusedChannel,
} from "./connection-middleware.js";
export {
  connLimit,
  type ConnLimit,
  type ConnLimitOptions,
  ipMaxConn,
  type IpMaxConn,
  type IpMaxConnOptions,
  ipFilter,
  type IpFilter,
  type IpFilterOptions,
  crypto,
  type CryptoProcessor,
  type CryptoOptions,
  compression,
  type CompressionProcessor,
  type CompressionOptions,
  type Processor,
  accessLog,
  type AccessLog,
  type AccessLogOptions,
  type AccessLogRecord,
  rateLimit,
  type RateLimit,
  type RateLimitOptions,
  type RateLimitSettings,
  maxConcurrentCalls,
  type MaxConcurrentCalls,
  type MaxConcurrentCallsOptions,
} from "../plugin/index.js";
