/**
 * rapt's built-in plugins. Connection middleware (see
 * `Server.useConnection`): {@link connLimit}, {@link ipMaxConn} and
 * {@link ipFilter}, each reconfigurable at run time.
 */
export { connLimit, type ConnLimit, type ConnLimitOptions } from "./conn-limit.js";
export { ipMaxConn, type IpMaxConn, type IpMaxConnOptions } from "./ip-max-conn.js";
export { ipFilter, type IpFilter, type IpFilterOptions } from "./ip-filter.js";
export type { ConnectionMiddleware, IncomingConnection } from "../server/connection-middleware.js";
