/**
 * Whether `text` is well-formed UTF-16 (no lone surrogates). UTF-8 encoders replace a lone
 * surrogate with U+FFFD, so "\ud800", "\udfff" and "\ufffd" would encode to the same bytes:
 * as encryption context or binding they would be interchangeable, and as a value one would
 * silently come back as another. Native (ES2024); one-byte strings answer without a scan.
 */
export function isWellFormed(text: string): boolean {
  return (text as unknown as { isWellFormed(): boolean }).isWellFormed();
}
