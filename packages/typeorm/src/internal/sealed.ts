/**
 * A ciphertext (or blind index) on its way to the database. Encrypted columns accept only
 * these in queries and writes: their value transformer unwraps a Sealed value and rejects
 * anything else, so plaintext that bypassed the subscriber (a listener-less query builder, a
 * find with a plain value) fails loudly instead of being stored or compared as plaintext.
 */
export class Sealed {
  readonly stored: string | Uint8Array;

  constructor(stored: string | Uint8Array) {
    this.stored = stored;
  }
}
