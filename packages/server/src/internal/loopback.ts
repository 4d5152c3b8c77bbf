import { isIP } from "node:net";

/** 127.0.0.0/8, ::1, and IPv4-mapped 127.0.0.0/8 (::ffff:127.x.y.z). */
export function isLoopback(address: string): boolean {
  const lower = address.toLowerCase();
  const v4 = lower.startsWith("::ffff:") ? lower.slice(7) : lower;
  if (isIP(v4) === 4) return v4.startsWith("127.");
  if (isIP(lower) !== 6) return false;
  // Any spelling of ::1 (0:0:0:0:0:0:0:1, ::0001…): every group zero but a last group of 1.
  const [head = "", tail = ""] = lower.split("::");
  const groups = lower.includes("::")
    ? [...head.split(":").filter(Boolean), ...tail.split(":").filter(Boolean)]
    : lower.split(":");
  const last = groups.pop();
  return (
    last !== undefined &&
    Number.parseInt(last, 16) === 1 &&
    groups.every((g) => Number.parseInt(g, 16) === 0)
  );
}
