import { createRequire } from "node:module";
import type IpAddr from "ipaddr.js";
import { ErrorCode, RpcError } from "../protocol/rpc-error.js";

/** An IPv4 or IPv6 address, as ipaddr.js parses it. */
export type IpAddress = IpAddr.IPv4 | IpAddr.IPv6;

let ipaddrModule: typeof IpAddr | undefined;

/**
 * ipaddr.js, loaded when an IP plugin first needs it. `rapt/server` re-exports
 * every plugin, so a static import made each server load it, and importing a
 * CommonJS module from ESM runs Node's export lexer over its 38 KB, which
 * V8 optimizes with about 5 MB of compiler memory: 5-9 MB more RSS for
 * every server, most of which never filter by IP. require() skips the lexer.
 */
function ipaddr(): typeof IpAddr {
  return (ipaddrModule ??= createRequire(import.meta.url)("ipaddr.js") as typeof IpAddr);
}

/** A CIDR range: network address and prefix length. A single address is a /32 or /128. */
export type IpRange = readonly [IpAddress, number];

/**
 * Parses a peer's address; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as
 * dual-stack listeners report IPv4 clients) becomes the IPv4 address.
 * Undefined when it is not an IP address.
 */
export function parsePeerAddress(address: string): IpAddress | undefined {
  if (!ipaddr().isValid(address)) return undefined;
  return ipaddr().process(address);
}

/**
 * Parses a list entry: a single address (`10.1.2.3`, `::1`) or a CIDR range
 * (`10.0.0.0/8`, `2001:db8::/32`). IPv4 must be in four-part decimal: forms
 * such as `010.0.0.1` (octal) or `10.1` are refused, not reinterpreted.
 * IPv4-mapped entries (`::ffff:10.0.0.0/104`) become the IPv4 range
 * (`10.0.0.0/8`), as peers' mapped addresses are matched as IPv4. Throws
 * INVALID_ARGUMENT naming `what` for anything else.
 */
export function parseIpRange(entry: string, what: string): IpRange {
  const text = typeof entry === "string" ? entry.trim() : "";
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const ipv4 = ipaddr().IPv4.isIPv4(address) && !address.includes(":");
  const valid =
    slash < 0
      ? ipv4
        ? ipaddr().IPv4.isValidFourPartDecimal(text)
        : ipaddr().IPv6.isValid(text)
      : ipv4
        ? ipaddr().IPv4.isValidCIDRFourPartDecimal(text)
        : ipaddr().IPv6.isValidCIDR(text);
  if (!valid) {
    throw new RpcError(ErrorCode.INVALID_ARGUMENT, `${what}: ${JSON.stringify(entry)} is not an IP address or CIDR range`);
  }
  const [network, bits] = slash < 0 ? rangeOf(ipaddr().parse(text)) : ipaddr().parseCIDR(text);
  if (network.kind() === "ipv6" && (network as IpAddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    return [(network as IpAddr.IPv6).toIPv4Address(), bits - 96];
  }
  return [network, bits];
}

function rangeOf(address: IpAddress): [IpAddress, number] {
  return [address, address.kind() === "ipv4" ? 32 : 128];
}

/** Whether `address` lies in `range` (an IPv4 address never lies in an IPv6 range, nor the reverse). */
export function inRange(address: IpAddress, range: IpRange): boolean {
  const [network, bits] = range;
  if (address.kind() !== network.kind()) return false;
  return address.match(network, bits);
}
