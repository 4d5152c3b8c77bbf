/** JSON with every Uint8Array as {"$base64": "..."} (the golden tests' reviver reverses it). */
export function toJson(value: unknown): string {
  return `${JSON.stringify(
    value,
    (_key, v: unknown) =>
      v instanceof Uint8Array ? { $base64: Buffer.from(v).toString("base64") } : v,
    2,
  )}\n`;
}
