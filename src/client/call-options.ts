import type { Metadata } from "../protocol/wire-messages.js";

/** Per-call options; each overrides the client's default of the same name. */
export interface CallOptions {
  /** Milliseconds the call may take, waiting for a connection included; sent to the server as its deadline. Default: the client's `timeout` (none). */
  timeout?: number;
  /** Aborting it rejects the call with CANCELLED and tells the server. */
  signal?: AbortSignal;
  /** Sent with the call; the handler sees it as `this.metadata`. */
  metadata?: Metadata;
  /**
   * While the client has no connection: wait through reconnects (true), or
   * fail with UNAVAILABLE once an attempt has failed (false, as gRPC's
   * default). Default: the client's `waitForReady` (false).
   */
  waitForReady?: boolean;
}
