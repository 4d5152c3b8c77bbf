import { randomFillSync, scryptSync } from "node:crypto";
import { chmodSync, constants, existsSync, mkdirSync, type Stats, writeFileSync } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { argon2id } from "@noble/hashes/argon2.js";
import { RootKeyError } from "../errors.ts";
import type { KeyStore } from "../keystore/key-store.ts";

/** Length of the root key: an AES-256 key that wraps every piece of key material at rest. */
export const ROOT_KEY_LENGTH = 32;

/**
 * Where the root key comes from. The root key is the one secret the operator must keep: with it
 * and a copy of the key store, every key can be recovered; without it, none can.
 */
export interface RootKeySource {
  /** Says where the key came from, never what it is. */
  readonly description: string;
  /** Returns fresh root key bytes; the caller wipes them after import. */
  load(store: KeyStore): Promise<Uint8Array>;
}

function parseKeyText(text: string, where: string): Uint8Array {
  const trimmed = text.trim();
  // Buffer.from(string) carves small results out of Node's shared pool, which every later
  // Buffer.allocUnsafe of the process hands out again: the decoded key is copied out and wiped
  // there, on success as on failure.
  const bytes = /^[0-9a-fA-F]{64}$/.test(trimmed)
    ? Buffer.from(trimmed, "hex")
    : Buffer.from(trimmed, "base64");
  try {
    if (bytes.length !== ROOT_KEY_LENGTH) {
      throw new RootKeyError(
        `root key from ${where} must be ${ROOT_KEY_LENGTH} bytes as 64 hex digits or base64`,
      );
    }
    return new Uint8Array(bytes);
  } finally {
    bytes.fill(0);
  }
}

/**
 * The most a root key file may hold: 64 hex digits (the longest encoding) with room for
 * surrounding whitespace. One byte more is read, so a longer or endless file (`/dev/zero`) is
 * refused without being read whole.
 */
export const MAX_ROOT_KEY_FILE_BYTES = 1024;

export interface RootKeyFileOptions {
  /**
   * Refuse a key file that group or other users can read, write or execute (any of mode 0077),
   * as ssh refuses such a private key. Default false. Checked on POSIX systems only; Windows
   * has no such mode bits.
   */
  readonly requirePrivateMode?: boolean;
  /**
   * Called with the file's mode when group or other users may access it (mode & 0077) and
   * `requirePrivateMode` is off, after the key was read and parsed: a place to warn. POSIX only.
   */
  readonly onSharedMode?: (mode: number) => void;
}

/**
 * Never makes a terminal the process's controlling one. A regular file is opened without waiting
 * (there is nothing to wait for); a FIFO is opened blocking, as `cat` would, so that a process
 * substitution whose writer has not written yet is read rather than refused.
 */
const OPEN_FILE = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);
const OPEN_FIFO = constants.O_RDONLY | (constants.O_NOCTTY ?? 0);

/**
 * Reads at most {@link MAX_ROOT_KEY_FILE_BYTES} (+1) of `path` and parses the key in it. Only a
 * regular file or a FIFO (`<(…)`) is opened: a directory, socket or device (`/dev/zero` never
 * ends, `/dev/tty` reads the keyboard, opening some devices has effects of its own) is refused
 * on the path, and again on the opened handle, which is what is read, so that a file swapped in
 * between is refused too.
 */
async function readKeyFile(path: string, options: RootKeyFileOptions): Promise<Uint8Array> {
  const buffer = Buffer.alloc(MAX_ROOT_KEY_FILE_BYTES + 1);
  try {
    let handle: FileHandle | undefined;
    let length = 0;
    let mode = 0;
    try {
      const fifo = keyFileKind(path, await stat(path)) === "fifo";
      handle = await open(path, fifo ? OPEN_FIFO : OPEN_FILE);
      const info = await handle.stat();
      keyFileKind(path, info);
      mode = info.mode;
      // A pipe may return less than asked before its end: read until full or EOF.
      while (length < buffer.length) {
        const { bytesRead } = await handle.read(buffer, length, buffer.length - length);
        if (bytesRead === 0) break;
        length += bytesRead;
      }
    } catch (cause) {
      if (cause instanceof RootKeyError) throw cause;
      throw new RootKeyError(`cannot read root key file ${path}`, { cause });
    } finally {
      await handle?.close().catch(() => undefined);
    }
    const shared = process.platform !== "win32" && (mode & 0o077) !== 0;
    if (shared && options.requirePrivateMode === true) {
      throw new RootKeyError(
        `root key file ${path} is open to other users (mode ${(mode & 0o777).toString(8)}): chmod 600 it`,
      );
    }
    if (length > MAX_ROOT_KEY_FILE_BYTES) {
      throw new RootKeyError(
        `root key file ${path} holds more than ${MAX_ROOT_KEY_FILE_BYTES} bytes: it must hold only 64 hex digits or base64 of ${ROOT_KEY_LENGTH} bytes`,
      );
    }
    const key = parseKeyText(buffer.toString("utf8", 0, length), `file ${path}`);
    if (shared) options.onSharedMode?.(mode);
    return key;
  } finally {
    buffer.fill(0);
  }
}

function keyFileKind(path: string, info: Stats): "file" | "fifo" {
  if (info.isFile()) return "file";
  if (info.isFIFO()) return "fifo";
  const kind = info.isDirectory()
    ? "a directory"
    : info.isSocket()
      ? "a socket"
      : info.isCharacterDevice()
        ? "a character device"
        : info.isBlockDevice()
          ? "a block device"
          : "an unknown kind of file";
  throw new RootKeyError(
    `root key file ${path} is ${kind}, not a regular file or FIFO: put the key in a file (mode 0600)`,
  );
}

export interface PassphraseOptions {
  /** scrypt (node:crypto, default) or argon2id (@noble/hashes). */
  readonly kdf?: "scrypt" | "argon2id";
}

/** Checked parameters to derive with (see parseKdfParameters). */
type Kdf =
  | {
      readonly kdf: "scrypt";
      readonly salt: string;
      readonly n: number;
      readonly r: number;
      readonly p: number;
    }
  | {
      readonly kdf: "argon2id";
      readonly salt: string;
      readonly t: number;
      readonly m: number;
      readonly p: number;
    };

// scrypt N=2^17, r=8 (128 MiB) and argon2id t=3, m=64 MiB: OWASP's current minimums or above.
const SCRYPT = { n: 2 ** 17, r: 8, p: 1 } as const;
const ARGON2ID = { t: 3, m: 65536, p: 1 } as const;

/**
 * Bounds on stored KDF parameters. The floors are what this library writes: the setting is not
 * sealed, so a store writer who plants weaker ones before the store's first use would get a
 * root key cheap to guess the passphrase of (the stored root key id checks each guess). The
 * ceilings keep planted ones from exhausting memory or time (1 GiB, argon2id 16 passes).
 */
const KDF_BOUNDS = {
  scrypt: { n: [SCRYPT.n, 2 ** 20], r: [SCRYPT.r, 32], p: [SCRYPT.p, 16] },
  argon2id: { t: [ARGON2ID.t, 16], m: [ARGON2ID.m, 2 ** 20], p: [ARGON2ID.p, 16] },
} as const;
const MAX_KDF_MEMORY = 2 ** 30;
const SALT = { min: 16, max: 64 } as const;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Checks the stored `root-key-kdf` setting (FORMAT §4 item 4); absent parameters take the
 * defaults. Returns what to derive with.
 * @throws RootKeyError naming the setting and the rule a value breaks.
 */
function parseKdfParameters(text: string, store: KeyStore): Kdf {
  const refuse = (rule: string): never => {
    throw new RootKeyError(
      `setting root-key-kdf of key store ${store.description} ${rule}; the store was altered`,
    );
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return refuse("is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return refuse("is not a JSON object");
  }
  const stored = value as Record<string, unknown>;
  const kdf = stored.kdf;
  if (kdf !== "scrypt" && kdf !== "argon2id") {
    return refuse(`"kdf" expected "scrypt" or "argon2id", got ${JSON.stringify(kdf)}`);
  }
  const salt = stored.salt;
  if (typeof salt !== "string" || !BASE64.test(salt)) return refuse('"salt" expected base64');
  const saltLength = Buffer.byteLength(salt, "base64");
  if (saltLength < SALT.min || saltLength > SALT.max) {
    return refuse(`"salt" expected ${SALT.min}–${SALT.max} bytes, got ${saltLength}`);
  }
  const defaults: Readonly<Record<string, number>> = kdf === "scrypt" ? SCRYPT : ARGON2ID;
  const bounds: Readonly<Record<string, readonly [number, number]>> = KDF_BOUNDS[kdf];
  const numbers: Record<string, number> = {};
  for (const [name, [min, max]] of Object.entries(bounds)) {
    const given = stored[name] ?? defaults[name];
    if (!Number.isSafeInteger(given) || (given as number) < min || (given as number) > max) {
      return refuse(`"${name}" expected an integer ${min}–${max}, got ${JSON.stringify(given)}`);
    }
    numbers[name] = given as number;
  }
  const { n = 0, r = 0, p = 0, t = 0, m = 0 } = numbers;
  if (kdf === "argon2id") return { kdf, salt, t, m, p };
  if ((n & (n - 1)) !== 0) return refuse(`"n" expected a power of two, got ${n}`);
  if (128 * n * r > MAX_KDF_MEMORY) {
    return refuse(`"n" × "r" needs ${128 * n * r} bytes of memory, over ${MAX_KDF_MEMORY}`);
  }
  return { kdf, salt, n, r, p };
}

/**
 * FORMAT §4.4: root key = scrypt or argon2id (v0x13, no secret, no associated data) over
 * UTF-8(NFC(passphrase)) with the stored salt and parameters, 32 bytes. Every step is part of
 * the format: NFC (not NFKC, not the string as given) makes canonically equivalent spellings
 * open the same store, and changing any step would make every passphrase-protected store
 * unreadable (test/hsm/passphrase-kat.test.ts pins the results).
 */
function deriveFromPassphrase(passphrase: string, params: Kdf): Uint8Array {
  const salt = Buffer.from(params.salt, "base64");
  if (params.kdf === "scrypt") {
    const { n, r, p } = params;
    const derived = scryptSync(passphrase.normalize("NFC"), salt, ROOT_KEY_LENGTH, {
      N: n,
      r,
      p,
      maxmem: 256 * n * r,
    });
    // The Buffer itself, not a copy: the caller wipes what it is given, and a copy would leave
    // this one holding the root key until the heap reuses it.
    return new Uint8Array(derived.buffer, derived.byteOffset, derived.byteLength);
  }
  return argon2id(passphrase.normalize("NFC"), salt, {
    t: params.t,
    m: params.m,
    p: params.p,
    dkLen: ROOT_KEY_LENGTH,
  });
}

/**
 * Root keys given as raw bytes to a call that opens the store once with them (`createKms`,
 * `rotateRootKey`). Each is copied when `source` is called, as `RootKeySource.fromBytes` does,
 * so the caller may wipe its own at once; unlike a fromBytes source, which keeps its copy for
 * later loads, `wipe` zeroes these copies once the store is open (or failed to open), so no copy
 * of the root key outlives the call unwiped.
 */
export class TransientRootKeys {
  readonly #copies: Uint8Array[] = [];

  /** `key` itself, or a source of a copy of its bytes (wiped by `wipe`). */
  source(key: RootKeySource | Uint8Array): RootKeySource {
    if (!(key instanceof Uint8Array)) return key;
    if (key.length !== ROOT_KEY_LENGTH) {
      throw new RootKeyError(`root key must be ${ROOT_KEY_LENGTH} bytes`);
    }
    const copy = Uint8Array.from(key);
    this.#copies.push(copy);
    return { description: "bytes", load: async () => Uint8Array.from(copy) };
  }

  wipe(): void {
    for (const copy of this.#copies) copy.fill(0);
    this.#copies.length = 0;
  }
}

/** Factories for the supported root key sources. */
export const RootKeySource = {
  /** Raw 32 bytes held by the application (copied; the caller may wipe its own). */
  fromBytes(bytes: Uint8Array): RootKeySource {
    if (!(bytes instanceof Uint8Array) || bytes.length !== ROOT_KEY_LENGTH) {
      throw new RootKeyError(`root key must be ${ROOT_KEY_LENGTH} bytes`);
    }
    const copy = Uint8Array.from(bytes);
    return { description: "bytes", load: async () => Uint8Array.from(copy) };
  },

  /**
   * An environment variable holding 64 hex digits or base64 (default KMS_ROOT_KEY), read from
   * `env` (default `process.env`) when the key is loaded.
   */
  fromEnv(
    name = "KMS_ROOT_KEY",
    env: Readonly<Record<string, string | undefined>> = process.env,
  ): RootKeySource {
    return {
      description: `environment variable ${name}`,
      load: async () => {
        const value = env[name];
        if (value === undefined || value === "") {
          throw new RootKeyError(`environment variable ${name} holds no root key`);
        }
        return parseKeyText(value, `environment variable ${name}`);
      },
    };
  },

  /**
   * A file holding 64 hex digits or base64 (e.g. a mounted secret), at most 1 KiB with
   * surrounding whitespace; read when the key is loaded. A FIFO or `<(…)` works too.
   * @throws RootKeyError (on load) for a file that cannot be read, is longer, holds no valid
   *   key, or, with `requirePrivateMode`, is open to other users.
   */
  fromFile(path: string, options: RootKeyFileOptions = {}): RootKeySource {
    const checked = { ...options };
    if (checked.onSharedMode !== undefined && typeof checked.onSharedMode !== "function") {
      throw new RootKeyError(`"onSharedMode" must be a function`);
    }
    return {
      description: `file ${path}`,
      load: () => readKeyFile(path, checked),
    };
  },

  /**
   * A passphrase stretched with scrypt or argon2id. The salt and parameters are stored in the
   * key store on first use, so the same passphrase opens the same store anywhere.
   */
  fromPassphrase(passphrase: string, options: PassphraseOptions = {}): RootKeySource {
    if (typeof passphrase !== "string" || passphrase.length < 12) {
      throw new RootKeyError("root key passphrase must be at least 12 characters");
    }
    const kdf = options.kdf ?? "scrypt";
    return {
      description: `passphrase (${kdf})`,
      load: async (store) => {
        const salt = Buffer.from(randomFillSync(new Uint8Array(16))).toString("base64");
        const proposed: Kdf =
          kdf === "scrypt" ? { kdf, salt, ...SCRYPT } : { kdf, salt, ...ARGON2ID };
        const stored = await store.putSettingIfAbsent("root-key-kdf", JSON.stringify(proposed));
        return deriveFromPassphrase(passphrase, parseKdfParameters(stored, store));
      },
    };
  },

  /**
   * Development only: reads the root key from `path`, creating a random one there (mode 0600) on
   * first use, and says so on stderr. Anyone who can read that file can read every key.
   */
  devFile(path: string): RootKeySource {
    return {
      description: `development key file ${path}`,
      load: async () => {
        if (!existsSync(path)) {
          mkdirSync(dirname(path), { recursive: true });
          const fresh = randomFillSync(new Uint8Array(ROOT_KEY_LENGTH));
          // A view, not Buffer.from(fresh), which would copy the key into Node's shared pool.
          const hex = Buffer.from(fresh.buffer, fresh.byteOffset, fresh.length).toString("hex");
          writeFileSync(path, `${hex}\n`, {
            mode: 0o600,
            flag: "wx",
          });
          fresh.fill(0);
          process.emitWarning(
            `created a development root key in ${path}. Anyone who can read this file can ` +
              "decrypt every key in the store: use RootKeySource.fromEnv/fromFile in production.",
            { code: "KMS_DEV_ROOT_KEY" },
          );
        }
        chmodSync(path, 0o600);
        return readKeyFile(path, {});
      },
    };
  },

  /** A fresh random key: only meaningful with the memory store, whose keys die with it. */
  ephemeral(): RootKeySource {
    return {
      description: "ephemeral random key",
      load: async () => randomFillSync(new Uint8Array(ROOT_KEY_LENGTH)),
    };
  },
} as const;
