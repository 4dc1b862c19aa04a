import diagnostics from "node:diagnostics_channel";

/**
 * `diagnostics_channel` channels the server publishes on; subscribing costs
 * nothing when nobody listens. Messages are plain objects.
 */
export const serverChannels = {
  /** `{ method, connectionId, error }`: a handler threw something that was not an RpcError (sent to the caller as INTERNAL). */
  handlerError: diagnostics.channel("rapt:server:handler-error"),
  /** `{ connectionId, peer }`: a connection completed its handshake. */
  connectionOpen: diagnostics.channel("rapt:server:connection-open"),
  /** `{ connectionId, peer, reason }`: a connection closed. */
  connectionClose: diagnostics.channel("rapt:server:connection-close"),
  /** `{ peer, listener, code, message, error }`: connection middleware refused a connection. */
  connectionRefused: diagnostics.channel("rapt:server:connection-refused"),
} as const;
