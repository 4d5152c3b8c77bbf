/**
 * Sets `out[key]` as an own, enumerable member, also for "__proto__": assigning that name sets
 * the object's prototype instead (or does nothing), and the pair is lost. Context keys and JSON
 * member names come from callers and from JSON.parse, which keeps "__proto__" as a member.
 */
export function setOwnMember<T>(out: Record<string, T>, key: string, value: T): void {
  if (key === "__proto__") {
    Object.defineProperty(out, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    out[key] = value;
  }
}
