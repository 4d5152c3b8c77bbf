import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import { RawAesKeyring } from "../keyring/raw-aes-keyring.ts";
import { encryptMessage } from "./message.ts";

/** ES2024 ArrayBuffer methods (Node 24 has them; the compiled-for lib does not declare them). */
interface ResizableArrayBuffer extends ArrayBuffer {
  resize(length: number): void;
  transfer(): ArrayBuffer;
}
const Resizable = ArrayBuffer as unknown as new (
  length: number,
  options?: { maxByteLength: number },
) => ResizableArrayBuffer;

describe("one-shot encryption of a plaintext whose buffer changes during the keyring call", () => {
  const keyring = new RawAesKeyring({
    keyNamespace: "t",
    keyName: "k",
    wrappingKey: randomBytes(32),
  });

  test("a resizable buffer shrunk meanwhile is refused, not sealed short", async () => {
    const buffer = new Resizable(10_000, { maxByteLength: 20_000 });
    const plaintext = new Uint8Array(buffer).fill(7);
    const sealing = encryptMessage(plaintext, { keyring });
    buffer.resize(0);
    await expect(sealing).rejects.toThrow(ValidationError);
  });

  test("a buffer transferred meanwhile is refused with a ValidationError", async () => {
    const buffer = new Resizable(10_000);
    const sealing = encryptMessage(new Uint8Array(buffer), { keyring });
    buffer.transfer();
    await expect(sealing).rejects.toThrow(ValidationError);
  });
});
