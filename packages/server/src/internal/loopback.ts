import { BlockList, isIP } from "node:net";

/**
 * Node parses every spelling of an address here (`0:0:0:0:0:0:0:1`, `::0001`, `::ffff:7f00:1`),
 * so no hand-written reading of `::` compression decides what counts as loopback. The mapped
 * subnet is listed as well as 127.0.0.0/8 because a dual-stack socket reports an IPv4 peer in
 * that form, and the rule should not depend on whether this Node version's BlockList applies
 * IPv4 rules to mapped addresses.
 */
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addSubnet("::ffff:127.0.0.0", 104, "ipv6");
LOOPBACK.addAddress("::1", "ipv6");

/** 127.0.0.0/8, ::1, and IPv4-mapped 127.0.0.0/8 (::ffff:127.x.y.z), as node reports addresses. */
export function isLoopback(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && LOOPBACK.check(address, family === 4 ? "ipv4" : "ipv6");
}
