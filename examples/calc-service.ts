// The service both example programs share: the client imports only its type.
import { type CallContext, ErrorCode, RpcError } from "rapt/server";

export const calc = {
  add(a: number, b: number): number {
    return a + b;
  },
  async divide(a: number, b: number): Promise<number> {
    // An RpcError reaches the caller as it is; any other error would arrive as INTERNAL.
    if (b === 0) throw new RpcError(ErrorCode.INVALID_ARGUMENT, "division by zero");
    return a / b;
  },
  /** Handlers get their call context as `this`; it is not a parameter, so clients never pass it. */
  whoami(this: CallContext): string {
    return `${this.peer.address} on connection ${this.connectionId}`;
  },
  async slow(this: CallContext, ms: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      this.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(this.signal.reason);
      });
    });
    return `slept ${ms} ms`;
  },
};
