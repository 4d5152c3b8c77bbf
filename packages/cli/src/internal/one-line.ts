/**
 * A message as one line, so a script reading stderr sees one line per failure. Messages quote
 * arguments and paths, which may hold newlines or terminal escapes: those are shown escaped
 * (`\n`, `\u001b`) rather than obeyed.
 */
export function oneLine(message: string): string {
  return message.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => CONTROL_ESCAPES[c] ?? unicodeEscape(c));
}

const CONTROL_ESCAPES: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function unicodeEscape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
}
