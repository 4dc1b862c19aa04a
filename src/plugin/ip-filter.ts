import { ErrorCode, RpcError } from "../protocol/rpc-error.js";
import type { ConnectionMiddleware, IncomingConnection } from "../server/connection-middleware.js";
import { type IpAddress, type IpRange, inRange, parsePeerAddress, parseIpRange } from "./ip-range.js";

/** Options of {@link ipFilter}. */
export interface IpFilterOptions {
  /**
   * Addresses and CIDR ranges allowed to connect, IPv4 or IPv6 (`10.0.0.0/8`,
   * `::1`). A non-empty list means allow-only: every other address is
   * refused. Default `[]`: any address not blocked.
   */
  allow: readonly string[];
  /** Addresses and CIDR ranges refused; they win over `allow`. Default `[]`. */
  block: readonly string[];
}

/** The middleware {@link ipFilter} returns, with its run-time controls. */
export interface IpFilter extends ConnectionMiddleware {
  /** The lists in force, as given. */
  readonly options: Readonly<IpFilterOptions>;
  /**
   * Replaces the lists given (a list left out stays). Every entry is checked
   * first: on an invalid one this throws INVALID_ARGUMENT and nothing
   * changes. Applies to connections accepted from then on; open ones stay.
   */
  configure(options: Partial<IpFilterOptions>): void;
  /** Whether a connection from `address` would be admitted (IPv4-mapped addresses are matched as IPv4). */
  allows(address: string): boolean;
}

interface Rules {
  readonly options: Readonly<IpFilterOptions>;
  readonly allow: readonly IpRange[];
  readonly block: readonly IpRange[];
}

function compile(options: IpFilterOptions): Rules {
  const list = (entries: readonly string[], name: string): IpRange[] => {
    if (!Array.isArray(entries)) {
      throw new RpcError(ErrorCode.INVALID_ARGUMENT, `ipFilter: ${name} must be an array of addresses and CIDR ranges`);
    }
    return entries.map((entry) => parseIpRange(entry, `ipFilter ${name}`));
  };
  return {
    options: Object.freeze({ allow: Object.freeze([...options.allow]), block: Object.freeze([...options.block]) }),
    allow: list(options.allow, "allow"),
    block: list(options.block, "block"),
  };
}

/** Why `address` is refused under `rules`, or undefined when it is allowed. */
function verdict(rules: Rules, address: IpAddress | undefined): string | undefined {
  if (address === undefined) return rules.allow.length > 0 ? "it is not an IP address in the allow list" : undefined;
  if (rules.block.some((range) => inRange(address, range))) return "the address is blocked";
  if (rules.allow.length > 0 && !rules.allow.some((range) => inRange(address, range))) return "the address is not in the allow list";
  return undefined;
}

/**
 * Connection middleware that admits or refuses connections by the client's
 * IP address, with single addresses and CIDR ranges, IPv4 and IPv6. A
 * blocked address is refused; with a non-empty `allow` list, so is every
 * address outside it. IPv4 clients of a dual-stack listener
 * (`::ffff:a.b.c.d`) are matched as IPv4, against IPv4 entries. Unix socket
 * connections have no IP address and always pass (file permissions guard
 * them). A refused client gets PERMISSION_DENIED, `connection from
 * 127.0.0.2 refused: the address is blocked`.
 *
 * ```ts
 * const filter = ipFilter({ allow: ["10.0.0.0/8", "::1"], block: ["10.0.0.13"] });
 * server.useConnection(filter);
 * filter.configure({ block: ["10.0.0.13", "10.9.0.0/16"] }); // at run time
 * ```
 *
 * Throws INVALID_ARGUMENT for an entry that is not an address or range
 * (IPv4 must be four-part decimal).
 */
export function ipFilter(options: Partial<IpFilterOptions> = {}): IpFilter {
  let rules = compile({ allow: options.allow ?? [], block: options.block ?? [] });
  const middleware = (conn: IncomingConnection, next: () => Promise<void>): Promise<void> => {
    if (conn.peer.family === "unix") return next();
    const address = parsePeerAddress(conn.peer.address);
    const why = verdict(rules, address);
    if (why !== undefined)
      conn.reject(ErrorCode.PERMISSION_DENIED, `connection from ${address?.toString() ?? conn.peer.address} refused: ${why}`);
    return next();
  };
  return Object.defineProperties(middleware, {
    options: { get: () => rules.options, enumerable: true },
    configure: {
      value: (update: Partial<IpFilterOptions>): void => {
        rules = compile({ allow: update.allow ?? rules.options.allow, block: update.block ?? rules.options.block });
      },
    },
    allows: {
      value: (address: string): boolean => verdict(rules, parsePeerAddress(address)) === undefined,
    },
  }) as IpFilter;
}
