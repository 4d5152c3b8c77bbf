/**
 * A copy of `text` that shares no memory with the string it was cut from. V8 keeps a substring
 * (a parser token, a regular-expression capture, `slice`) as a view into its parent, and a
 * concatenation as a pair of references, so a short string kept for long (a cache key, a
 * remembered nonce) can hold a whole request header alive: a 40-character nonce key kept a
 * 12 KB Signature-Input per request. Copy what outlives the request.
 */
export function detachedString(text: string): string {
  // UTF-16 code units round-trip exactly (lone surrogates included), and V8 stores the result
  // as a plain one-byte string when every unit fits.
  return Buffer.from(text, "utf16le").toString("utf16le");
}
