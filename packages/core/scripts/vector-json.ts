/** JSON with every Uint8Array as {"$base64": "..."} (the golden tests' reviver reverses it). */
export function toJson(value: unknown): string {
  return `${JSON.stringify(
    value,
    function (this: Record<string, unknown>, key: string, v: unknown) {
      // JSON.stringify hands the replacer what a Buffer's toJSON() returns ({type, data}), so
      // the holder's own property is what tells a Buffer (a Uint8Array) apart.
      const original = key === "" ? v : this[key];
      return original instanceof Uint8Array
        ? { $base64: Buffer.from(original).toString("base64") }
        : v;
    },
    2,
  )}\n`;
}
