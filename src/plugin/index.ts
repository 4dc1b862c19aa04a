/**
 * rapt's built-in plugins. Connection middleware (see
 * `Server.useConnection`): {@link connLimit}, {@link ipMaxConn} and
 * {@link ipFilter}, each reconfigurable at run time. Processors (the
 * `processors` option of Server and Client): {@link crypto} and
 * {@link compression}. Call middleware (see `Server.useCall`):
 * {@link accessLog}, {@link rateLimit} and {@link maxConcurrentCalls}, each
 * reconfigurable at run time too.
 */
export { connLimit, type ConnLimit, type ConnLimitOptions } from "./conn-limit.js";
export { ipMaxConn, type IpMaxConn, type IpMaxConnOptions } from "./ip-max-conn.js";
export { ipFilter, type IpFilter, type IpFilterOptions } from "./ip-filter.js";
export { crypto, type CryptoProcessor, type CryptoOptions } from "./crypto.js";
export { compression, DEFLATE_RAW, type CompressionProcessor, type CompressionOptions } from "./compression.js";
export type { Processor, ProcessorKind } from "../protocol/processor.js";
export type { ConnectionMiddleware, IncomingConnection } from "../server/connection-middleware.js";
export { accessLog, type AccessLog, type AccessLogOptions, type AccessLogRecord } from "./access-log.js";
export { rateLimit, type RateLimit, type RateLimitOptions, type RateLimitSettings } from "./rate-limit.js";
export { maxConcurrentCalls, type MaxConcurrentCalls, type MaxConcurrentCallsOptions } from "./max-concurrent-calls.js";
export type { CallMiddleware, CallMiddlewareContext } from "../server/call-middleware.js";
