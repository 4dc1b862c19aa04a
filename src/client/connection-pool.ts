import type { Connection } from "../protocol/connection.js";
import type { Endpoint } from "../protocol/endpoint.js";
import type { RpcError } from "../protocol/rpc-error.js";
import { EndpointConnection, type EndpointConnectionOptions, type Waiter } from "./endpoint-connection.js";
import type { Picker } from "./picker.js";

/** Pool sizing. */
export interface PoolOptions {
  /** Connections kept per endpoint. Default 1. */
  min?: number;
  /** Connections per endpoint at most; more are opened while all are at maxInFlight. Default: min. */
  max?: number;
  /** Calls in flight per connection before the pool grows (and, when full, refuses). Default: no limit but the server's. */
  maxInFlight?: number;
}

const NOOP = (): void => {};

/**
 * Connections to every endpoint of a client: `min` to `max` per endpoint,
 * each an {@link EndpointConnection} with its own reconnect backoff. Calls
 * go to an open connection chosen by the picker; an endpoint whose
 * connections fail drops out of the choice until it reconnects.
 */
export class ConnectionPool {
  readonly endpoints: readonly Endpoint[];
  /** Calls in flight per connection before growing or refusing. */
  readonly maxInFlight: number;
  private readonly slots: EndpointConnection[][];
  private readonly links: EndpointConnection[] = [];
  private readonly max: number;
  private readonly linkOptions: EndpointConnectionOptions;
  private readonly picker: Picker;
  private readonly candidates: Connection[] = [];
  private readonly groups = new Map<Waiter, Waiter[]>();

  constructor(endpoints: readonly Endpoint[], linkOptions: EndpointConnectionOptions, pool: PoolOptions, picker: Picker) {
    const min = Math.max(1, pool.min ?? 1);
    this.endpoints = endpoints;
    this.max = Math.max(min, pool.max ?? min);
    this.maxInFlight = pool.maxInFlight ?? Number.POSITIVE_INFINITY;
    this.linkOptions = linkOptions;
    this.picker = picker;
    this.slots = endpoints.map(() => []);
    for (let slot = 0; slot < endpoints.length; slot++) for (let i = 0; i < min; i++) this.addLink(slot);
  }

  /**
   * An open connection for a call, or undefined when there is none. The fast
   * path of every call: with one connection it is a property read.
   */
  get ready(): Connection | undefined {
    const links = this.links;
    if (links.length === 1) {
      const only = (links[0] as EndpointConnection).ready;
      if (only !== undefined && only.streamCount >= this.maxInFlight) this.grow(0);
      return only;
    }
    const candidates = this.candidates;
    candidates.length = 0;
    for (const link of links) {
      const connection = link.ready;
      if (connection !== undefined && connection.streamCount < this.maxInFlight) candidates.push(connection);
    }
    if (candidates.length > 0) {
      const chosen = this.picker(candidates);
      candidates.length = 0;
      return chosen;
    }
    // Everything open is at maxInFlight (or nothing is open): grow where
    // allowed, and hand out the least busy open connection meanwhile.
    let best: Connection | undefined;
    for (const [slot, slotLinks] of this.slots.entries()) {
      let open = false;
      for (const link of slotLinks) {
        const connection = link.ready;
        if (connection === undefined) continue;
        open = true;
        if (best === undefined || connection.streamCount < best.streamCount) best = connection;
      }
      if (open) this.grow(slot);
    }
    return best;
  }

  /** Open connections now. */
  get openConnections(): Connection[] {
    const open: Connection[] = [];
    for (const link of this.links) {
      const connection = link.ready;
      if (connection !== undefined) open.push(connection);
    }
    return open;
  }

  /** The most recent failure of any endpoint. */
  get lastFailure(): RpcError | undefined {
    for (const link of this.links) if (link.lastFailure !== undefined) return link.lastFailure;
    return undefined;
  }

  /**
   * Hands `waiter` the first connection that opens on any endpoint. A
   * fail-fast waiter is rejected once every endpoint has failed (with the
   * last endpoint's error); see {@link EndpointConnection.wait}.
   */
  wait(waiter: Waiter): void {
    const ready = this.ready;
    if (ready !== undefined) {
      waiter.resolve(ready);
      return;
    }
    const links = this.links;
    if (links.length === 1) {
      (links[0] as EndpointConnection).wait(waiter);
      return;
    }
    let pending = links.length;
    let settled = false;
    const subs: Waiter[] = [];
    const finish = (): void => {
      settled = true;
      this.groups.delete(waiter);
      for (const [i, link] of links.entries()) link.cancelWait(subs[i] as Waiter);
    };
    for (let i = 0; i < links.length; i++) {
      subs.push({
        waitForReady: waiter.waitForReady,
        resolve: (connection) => {
          if (settled) return;
          finish();
          waiter.resolve(connection);
        },
        reject: (error) => {
          if (settled || --pending > 0) return;
          finish();
          waiter.reject(error);
        },
      });
    }
    this.groups.set(waiter, subs);
    for (const [i, link] of links.entries()) {
      if (!settled) link.wait(subs[i] as Waiter);
    }
  }

  /** Removes a waiter that gave up. */
  cancelWait(waiter: Waiter): void {
    const links = this.links;
    if (links.length === 1) {
      (links[0] as EndpointConnection).cancelWait(waiter);
      return;
    }
    const subs = this.groups.get(waiter);
    if (subs === undefined) return;
    this.groups.delete(waiter);
    for (const [i, link] of links.entries()) link.cancelWait(subs[i] as Waiter);
  }

  /** Stops using `connection` for new calls (its stream ids ran out). */
  retire(connection: Connection): void {
    for (const link of this.links) link.retire(connection);
  }

  /** Graceful close of every connection. */
  async close(): Promise<void> {
    await Promise.all(this.links.map((link) => link.close()));
  }

  /** Closes everything now. */
  destroy(reason: RpcError): void {
    for (const link of this.links) link.destroy(reason);
  }

  private addLink(slot: number): EndpointConnection {
    const link = new EndpointConnection(this.endpoints[slot] as Endpoint, this.linkOptions);
    (this.slots[slot] as EndpointConnection[]).push(link);
    this.links.push(link);
    return link;
  }

  /** Opens one more connection to an endpoint, if it is below `max`. */
  private grow(slot: number): void {
    const slotLinks = this.slots[slot] as EndpointConnection[];
    if (slotLinks.length >= this.max) return;
    // Only grow once the previous new connection has opened.
    if (slotLinks.some((link) => link.ready === undefined)) return;
    // A waiter that wants nothing starts the connection attempt.
    this.addLink(slot).wait({ waitForReady: true, resolve: NOOP, reject: NOOP });
  }
}
