import type { Connection } from "../protocol/connection.js";

/**
 * Chooses the connection for a call among the open ones (never empty). A
 * plain function: pass your own to `ClientOptions.picker`.
 */
export type Picker = (candidates: readonly Connection[]) => Connection;

/** Each call goes to the next connection in turn. */
export function roundRobin(): Picker {
  let next = 0;
  return (candidates) => {
    next = next + 1 >= 0x7fff_ffff ? 0 : next + 1;
    return candidates[next % candidates.length] as Connection;
  };
}

/** Load of a connection: calls in flight, weighted by its last PING round trip (1 ms before one is measured). */
export function connectionLoad(connection: Connection): number {
  return (connection.streamCount + 1) * Math.max(connection.rtt ?? 1, 0.05);
}

/**
 * Power of two choices: two connections at random, the less loaded of them
 * by {@link connectionLoad}. Nearly as good as scanning for the least loaded,
 * without herding every caller onto the same connection.
 */
export function leastLoaded(): Picker {
  return (candidates) => {
    const n = candidates.length;
    if (n === 1) return candidates[0] as Connection;
    const i = Math.floor(Math.random() * n);
    let j = Math.floor(Math.random() * (n - 1));
    if (j >= i) j++;
    const a = candidates[i] as Connection;
    const b = candidates[j] as Connection;
    return connectionLoad(b) < connectionLoad(a) ? b : a;
  };
}
