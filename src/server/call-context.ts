import type { PeerCertificate } from "../protocol/peer-certificate.js";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Endpoint } from "../protocol/endpoint.js";
import { peerCertificate } from "../protocol/peer-certificate.js";
import type { Metadata } from "../protocol/wire-messages.js";
import type { Remote } from "../client/remote.js";
import type { Session } from "./session.js";

/** Who is on the other end of a connection. */
export interface PeerInfo {
  /** IP address, or the socket path for Unix sockets. */
  readonly address: string;
  /** Remote port; 0 for Unix sockets. */
  readonly port: number;
  readonly family: "IPv4" | "IPv6" | "unix";
  /**
   * The certificate the client presented, on a TLS listener that asked for
   * one (`requestCert`); undefined otherwise. See {@link PeerCertificate}.
   */
  readonly certificate?: PeerCertificate;
}

/**
 * What a handler knows about its call. Handlers receive it as `this`:
 * declare `function add(this: CallContext, a: number, b: number)` to use it
 * (arrow functions cannot). `this` keeps it out of the parameter list, so
 * `Parameters<typeof fn>` and the client's typed proxy see only the arguments.
 */
export interface CallContext {
  /** Full method name, `group.name`. */
  readonly method: string;
  readonly peer: PeerInfo;
  /** Server-assigned id of the connection the call came on. */
  readonly connectionId: string;
  /** Metadata sent with this call. */
  readonly metadata: Metadata;
  /** Metadata the client sent in its handshake (credentials go here). */
  readonly connectionMetadata: Metadata;
  /** Absolute deadline (ms since the epoch, server clock), or undefined for none. */
  readonly deadline: number | undefined;
  /** Aborted when the caller cancels, the deadline passes or the connection drops; its reason is an RpcError. */
  readonly signal: AbortSignal;
  /** The call's stream id on its connection. */
  readonly streamId: number;
  /** The client session the call was made in (`client.session()`), with its state; undefined outside one. */
  readonly session: Session | undefined;
  /**
   * The other end of this connection: call the functions it registered
   * (`this.remote.call("ui.notify", [msg])`) or send it events
   * (`this.remote.emit("progress", 50)`).
   */
  readonly remote: Remote;
  /**
   * What the server's `connectionState` factory created for this connection
   * (tino's ConnState); undefined without one. Cast it to your type.
   */
  readonly connectionState: unknown;
  /**
   * What the server's `authenticate` returned for this connection (the
   * caller's identity); undefined when the server has none or it returned
   * undefined. Cast it to your type.
   */
  readonly auth: unknown;
}

/** What a `connectionState` factory is told about a new connection. */
export interface ConnectionInfo {
  readonly peer: PeerInfo;
  readonly connectionId: string;
  /** The client's handshake metadata. */
  readonly metadata: Metadata;
  /** Runs `fn` when the connection closes: release what the state holds. */
  onClose(fn: () => void): void;
}

/** Whether a peer is on this machine: loopback addresses (IPv4, IPv6, IPv4-mapped) and Unix sockets. */
export function isLoopbackPeer(peer: PeerInfo): boolean {
  if (peer.family === "unix") return true;
  const address = peer.address.toLowerCase();
  return address.startsWith("127.") || address === "::1" || address.startsWith("::ffff:127.");
}

/**
 * Whether {@link peerOf} will find who is on the other end: false for a TCP
 * socket with no remote address (it was reset before it got here). Node
 * caches the remote address on the socket when it is first read, as here, so
 * peerOf finds it later too, even after the socket has closed.
 */
export function hasPeer(socket: Socket, endpoint: Endpoint): boolean {
  return "path" in endpoint || socket.remoteAddress !== undefined;
}

/**
 * Who is on the other end of a socket, or undefined when a TCP socket has no
 * remote address (it was reset before it got here). `endpoint` is the
 * server's listener, or the endpoint a client connected to: whether it is a
 * Unix socket is decided by it, not by the missing remote address (otherwise
 * such a TCP socket would pass for a trusted Unix peer), and a Unix peer's
 * address is its path, as Unix sockets report no address of their own. On
 * TLS, the certificate the other end presented, if any, is `certificate`.
 */
export function peerOf(socket: Socket, endpoint: Endpoint): PeerInfo | undefined {
  const certificate = (socket as TLSSocket).encrypted === true ? peerCertificate(socket as TLSSocket) : undefined;
  const tls = certificate === undefined ? {} : { certificate };
  if ("path" in endpoint) return { address: endpoint.path, port: 0, family: "unix", ...tls };
  if (socket.remoteAddress === undefined) return undefined;
  return {
    address: socket.remoteAddress,
    port: socket.remotePort ?? 0,
    family: socket.remoteFamily === "IPv6" ? "IPv6" : "IPv4",
    ...tls,
  };
}
