/**
 * Raw peers for the connection middleware tests: they connect from a chosen
 * loopback source address (127.0.0.2, ...; Linux routes all of 127.0.0.0/8
 * to loopback), send a real HELLO and report what the server answered. No
 * tests here.
 */
import assert from "node:assert/strict";
import { type HandshakeOutcome, type PeerRoute, RawPeer, helloFrame } from "../integration/helpers.js";

/** What the server answered a HELLO with. */
export type Outcome = HandshakeOutcome;

/** Where to connect and from where. */
export type Route = PeerRoute;

/** A raw peer connected from a chosen source address. */
export type LoopbackPeer = RawPeer;

/** Every peer a test opened, destroyed together at its end. */
export class Peers {
  private readonly all: LoopbackPeer[] = [];

  /** Connects, sends HELLO and returns the peer with the server's answer. */
  async hello(route: Route): Promise<{ peer: LoopbackPeer; outcome: Outcome }> {
    const peer = await this.connect(route);
    peer.write(helloFrame());
    const outcome = await peer.answer();
    return { peer, outcome };
  }

  /** Connects, sends HELLO, asserts WELCOME; returns the open peer. */
  async admitted(route: Route): Promise<LoopbackPeer> {
    const { peer, outcome } = await this.hello(route);
    assert.deepEqual(outcome, { admitted: true }, `expected ${route.from ?? "the peer"} to be admitted`);
    return peer;
  }

  /** Connects, sends HELLO, asserts ERROR `code` with a message matching `message`, and that the server closes. */
  async refused(route: Route, code: string, message?: RegExp): Promise<{ message: string; data: unknown }> {
    const { peer, outcome } = await this.hello(route);
    assert.equal(outcome.admitted, false, `expected ${route.from ?? "the peer"} to be refused`);
    if (outcome.admitted) throw new Error("unreachable");
    assert.equal(outcome.code, code, `wrong code; message: ${outcome.message}`);
    if (message !== undefined) assert.match(outcome.message, message);
    await peer.expectClosed();
    return { message: outcome.message, data: outcome.data };
  }

  /** Connects without sending anything. */
  async connect(route: Route): Promise<LoopbackPeer> {
    const peer = await RawPeer.connect(route);
    this.all.push(peer);
    return peer;
  }

  destroyAll(): void {
    for (const peer of this.all) peer.destroy();
  }
}

/** The port of a `host:port` or `[v6]:port` address. */
export function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}
