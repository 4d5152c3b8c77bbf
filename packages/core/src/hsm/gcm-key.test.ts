import { createCipheriv, createSecretKey, randomBytes } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it, vi } from "vitest";
import {
  GcmKey,
  GcmOpenBatch,
  ghashScratchWiped,
  SHORT_GCM_MAX_BYTES,
  WIDE_TABLES_MAX,
  WIDEN_AFTER,
} from "./gcm-key.ts";

const hex = (text: string) => Buffer.from(text.replace(/\s/g, ""), "hex");

/** IV ‖ ciphertext ‖ tag by node:crypto, behind `prefix` bytes (the field header's place). */
function nodeSeal(raw: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array) {
  const cipher = createCipheriv("aes-256-gcm", createSecretKey(raw), iv);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([7, 7, 7]), iv, body, cipher.getAuthTag()]);
}

function keyOf(raw: Uint8Array): GcmKey {
  return new GcmKey(createSecretKey(raw));
}

/** Byte equality with node:crypto both ways, at every short length and several AAD lengths. */
function expectSameAsNode(key: GcmKey, raw: Uint8Array): void {
  for (const aadLength of [0, 1, 15, 16, 17, 45, 64]) {
    const aad = randomBytes(aadLength);
    for (let length = 0; length <= SHORT_GCM_MAX_BYTES + 40; length++) {
      const plaintext = randomBytes(length);
      const ours = Buffer.alloc(3 + 12 + length + 16);
      key.sealWithFreshIv(aad, Buffer.from(plaintext), ours, 3);
      const iv = ours.subarray(3, 15);
      expect(ours.subarray(3).equals(nodeSeal(raw, iv, aad, plaintext).subarray(3))).toBe(true);
      const theirs = nodeSeal(raw, randomBytes(12), aad, plaintext);
      expect(key.openFrom(aad, theirs, 3)?.equals(plaintext)).toBe(true);
    }
  }
}

/** Every single-bit change of IV, ciphertext or tag refused, and a wrong AAD, key or length. */
function expectTamperingRefused(key: GcmKey, raw: Uint8Array): void {
  const aad = randomBytes(40);
  for (const length of [0, 1, 16, 33, 100]) {
    const sealed = nodeSeal(raw, randomBytes(12), aad, randomBytes(length));
    for (let at = 3; at < sealed.length; at++) {
      for (const bit of [0, 3, 7]) {
        const tampered = Buffer.from(sealed);
        tampered[at] = (tampered[at] as number) ^ (1 << bit);
        expect(key.openFrom(aad, tampered, 3)).toBeUndefined();
      }
    }
    const otherAad = Buffer.from(aad);
    otherAad[5] = (otherAad[5] as number) ^ 1;
    expect(key.openFrom(otherAad, sealed, 3)).toBeUndefined();
    expect(key.openFrom(aad.subarray(0, 39), sealed, 3)).toBeUndefined();
    expect(keyOf(randomBytes(32)).openFrom(aad, sealed, 3)).toBeUndefined();
    expect(key.openFrom(aad, sealed.subarray(0, sealed.length - 1), 3)).toBeUndefined();
  }
  expect(key.openFrom(aad, new Uint8Array(3 + 12 + 15), 3)).toBeUndefined();
}

/**
 * Hashes WIDEN_AFTER blocks with every power of H a short value uses (one block each per value
 * of SHORT_GCM_MAX_BYTES), so that each power's table widens if the budget allows.
 */
function warm(key: GcmKey): void {
  const aad = new Uint8Array(8);
  const plaintext = new Uint8Array(SHORT_GCM_MAX_BYTES);
  const out = Buffer.alloc(12 + SHORT_GCM_MAX_BYTES + 16);
  for (let i = 0; i < WIDEN_AFTER; i++) key.sealWithFreshIv(aad, plaintext, out, 0);
}

/** Powers of H whose tables a short value can use: H² … H⁹. */
const SHORT_POWERS = SHORT_GCM_MAX_BYTES / 16;

describe("GcmKey", () => {
  // The GCM specification's (McGrew–Viega) test cases 13–16: AES-256, 96-bit IV.
  const K0 = new Uint8Array(32);
  const K = hex("feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308");
  const IV = hex("cafebabefacedbaddecaf888");
  const P = hex(`d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
    1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b391aafd255`);
  const A = hex("feedfacedeadbeeffeedfacedeadbeef abaddad2");
  const cases = [
    {
      name: "13",
      key: K0,
      iv: new Uint8Array(12),
      aad: new Uint8Array(0),
      pt: new Uint8Array(0),
      ct: "",
      tag: "530f8afbc74536b9a963b4f1c4cb738b",
    },
    {
      name: "14",
      key: K0,
      iv: new Uint8Array(12),
      aad: new Uint8Array(0),
      pt: new Uint8Array(16),
      ct: "cea7403d4d606b6e074ec5d3baf39d18",
      tag: "d0d1c8a799996bf0265b98b5d48ab919",
    },
    {
      name: "15",
      key: K,
      iv: IV,
      aad: new Uint8Array(0),
      pt: P,
      ct: `522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
           8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad`,
      tag: "b094dac5d93471bdec1a502270e3cc6c",
    },
    {
      name: "16",
      key: K,
      iv: IV,
      aad: A,
      pt: P.subarray(0, 60),
      ct: `522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
           8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662`,
      tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
  ];

  for (const c of cases) {
    it(`opens the GCM spec's test case ${c.name}`, () => {
      const sealed = Buffer.concat([Buffer.from([9]), c.iv, hex(c.ct), hex(c.tag)]);
      expect(keyOf(c.key).openFrom(c.aad, sealed, 1)?.toString("hex")).toBe(
        Buffer.from(c.pt).toString("hex"),
      );
    });
  }

  it("seals what node:crypto opens and opens what it seals, at every short length", () => {
    const raw = randomBytes(32);
    expectSameAsNode(keyOf(raw), raw);
  });

  it("refuses every single-bit change of IV, ciphertext or tag, and a wrong AAD or key", () => {
    const raw = randomBytes(32);
    expectTamperingRefused(keyOf(raw), raw);
  });

  it("gives fresh IVs", () => {
    const key = keyOf(randomBytes(32));
    const aad = randomBytes(20);
    const a = Buffer.alloc(12 + 5 + 16);
    const b = Buffer.alloc(12 + 5 + 16);
    key.sealWithFreshIv(aad, Buffer.from("hello"), a, 0);
    key.sealWithFreshIv(aad, Buffer.from("hello"), b, 0);
    expect(a.subarray(0, 12).equals(b.subarray(0, 12))).toBe(false);
  });

  it("leaves no hash in its GHASH scratch after sealing, opening or refusing", () => {
    const raw = randomBytes(32);
    const key = keyOf(raw);
    const aad = randomBytes(20);
    const out = Buffer.alloc(12 + 33 + 16);
    key.sealWithFreshIv(aad, randomBytes(33), out, 0);
    expect(ghashScratchWiped()).toBe(true);
    const sealed = nodeSeal(raw, randomBytes(12), aad, randomBytes(33));
    expect(key.openFrom(aad, sealed, 3)).toBeDefined();
    expect(ghashScratchWiped()).toBe(true);
    expect(key.openFrom(randomBytes(20), sealed, 3)).toBeUndefined();
    expect(ghashScratchWiped()).toBe(true);
    const batch = new GcmOpenBatch();
    batch.add(key, aad, sealed, 3);
    batch.add(key, randomBytes(20), sealed, 3);
    expect(batch.open()).toBe(1);
    batch.clear();
    expect(ghashScratchWiped()).toBe(true);
  });

  it("wipes its tables when the last holder lets go, and again after each later use", () => {
    const key = keyOf(randomBytes(32));
    const aad = randomBytes(20);
    const sealed = Buffer.alloc(12 + 5 + 16);
    key.hold();
    key.hold();
    key.sealWithFreshIv(aad, Buffer.from("hello"), sealed, 0);
    expect(key.tablesHeld).toBeGreaterThan(0);
    key.release();
    expect(key.released).toBe(false);
    expect(key.tablesHeld).toBeGreaterThan(0);
    key.release();
    expect(key.released).toBe(true);
    expect(key.tablesHeld).toBe(0);
    // Still correct when used after that (a call already under way), and wiped again.
    expect(key.openFrom(aad, sealed, 0)?.toString()).toBe("hello");
    expect(key.tablesHeld).toBe(0);
    const batch = new GcmOpenBatch();
    batch.add(key, aad, sealed, 0);
    expect(batch.open()).toBe(-1);
    batch.clear();
    expect(key.tablesHeld).toBe(0);
    // Held again (a cache entry took it): the tables stay.
    key.hold();
    expect(key.openFrom(aad, sealed, 0)?.toString()).toBe("hello");
    expect(key.tablesHeld).toBeGreaterThan(0);
  });
});

describe("GcmKey's 8-bit tables", () => {
  it("widen after WIDEN_AFTER blocks and give the same bytes as node:crypto", () => {
    const raw = randomBytes(32);
    const key = keyOf(raw);
    key.hold();
    const aad = new Uint8Array(8);
    const out = Buffer.alloc(12 + 33 + 16);
    // 32-byte strings (33 bytes with their type tag) hash one block with each of H², H³, H⁴.
    for (let i = 0; i < WIDEN_AFTER - 1; i++) key.sealWithFreshIv(aad, new Uint8Array(33), out, 0);
    expect(key.wideTablesHeld).toBe(0);
    key.sealWithFreshIv(aad, new Uint8Array(33), out, 0);
    expect(key.wideTablesHeld).toBe(3);
    warm(key);
    expect(key.wideTablesHeld).toBe(SHORT_POWERS);
    expectSameAsNode(key, raw);
    expectTamperingRefused(key, raw);
    key.release();
  });

  it("stay within their budget, which a released key gives back", () => {
    const full = Array.from({ length: WIDE_TABLES_MAX / SHORT_POWERS }, () =>
      keyOf(randomBytes(32)),
    );
    for (const key of full) {
      key.hold();
      warm(key);
      expect(key.wideTablesHeld).toBe(SHORT_POWERS);
    }
    const raw = randomBytes(32);
    const late = keyOf(raw);
    late.hold();
    warm(late);
    expect(late.wideTablesHeld).toBe(0);
    expectSameAsNode(late, raw);
    (full[0] as GcmKey).release();
    warm(late);
    expect(late.wideTablesHeld).toBe(SHORT_POWERS);
    for (const key of [...full.slice(1), late]) key.release();
  });

  it("are wiped, and give their budget back, when their key is collected unreleased", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    // The tables of the keys, kept beyond them (table(k) hands them out).
    const tables: Int32Array[] = [];
    const fill = () => {
      for (let i = 0; i < WIDE_TABLES_MAX / SHORT_POWERS; i++) {
        const key = keyOf(randomBytes(32));
        key.hold();
        warm(key);
        expect(key.wideTablesHeld).toBe(SHORT_POWERS);
        for (let k = 2; k <= SHORT_POWERS + 1; k++) tables.push(key.table(k));
      }
    };
    fill();
    expect(tables.every((table) => table.some((word) => word !== 0))).toBe(true);
    const late = keyOf(randomBytes(32));
    late.hold();
    for (let attempt = 0; attempt < 20 && late.wideTablesHeld === 0; attempt++) {
      gc();
      // Finalizers run in a later task.
      await new Promise((resolve) => setTimeout(resolve, 5));
      warm(late);
    }
    expect(late.wideTablesHeld).toBe(SHORT_POWERS);
    expect(tables.every((table) => table.every((word) => word === 0))).toBe(true);
    late.release();
  });

  it("are wiped with the rest when the last holder lets go", () => {
    const key = keyOf(randomBytes(32));
    key.hold();
    warm(key);
    const aad = new Uint8Array(8);
    const out = Buffer.alloc(12 + 33 + 16);
    const spy = vi.spyOn(Int32Array.prototype, "fill");
    try {
      key.release();
      const wiped = spy.mock.contexts.filter(
        (array) => (array as Int32Array).length === 16 * 256 * 4,
      );
      expect(wiped).toHaveLength(SHORT_POWERS);
      expect(wiped.every((array) => (array as Int32Array).every((word) => word === 0))).toBe(true);
    } finally {
      spy.mockRestore();
    }
    expect([key.tablesHeld, key.wideTablesHeld]).toEqual([0, 0]);
    // A use after the release rebuilds 4-bit tables only, and wipes them again.
    key.sealWithFreshIv(aad, new Uint8Array(33), out, 0);
    expect([key.tablesHeld, key.wideTablesHeld]).toEqual([0, 0]);
  });
});

describe("GcmOpenBatch", () => {
  it("opens many values with one key and reports the first that fails", () => {
    const raw = randomBytes(32);
    const key = keyOf(raw);
    const aads = [randomBytes(30), randomBytes(17)];
    const batch = new GcmOpenBatch();
    const plaintexts: Buffer[] = [];
    const offsets: number[] = [];
    for (let i = 0; i < 3000; i++) {
      const plaintext = randomBytes(i % (SHORT_GCM_MAX_BYTES + 1));
      plaintexts.push(plaintext);
      const sealed = nodeSeal(raw, randomBytes(12), aads[i % 2] as Uint8Array, plaintext);
      offsets.push(batch.add(key, aads[i % 2] as Uint8Array, sealed, 3));
    }
    expect(batch.size).toBe(3000);
    expect(batch.open()).toBe(-1);
    for (let i = 0; i < 3000; i++) {
      const at = offsets[i] as number;
      const plaintext = plaintexts[i] as Buffer;
      expect(batch.plaintext.subarray(at, at + plaintext.length).equals(plaintext)).toBe(true);
    }
    batch.clear();
    expect(batch.plaintext.every((byte) => byte === 0)).toBe(true);

    const good = nodeSeal(raw, randomBytes(12), aads[0] as Uint8Array, randomBytes(20));
    const bad = Buffer.from(good);
    bad[20] = (bad[20] as number) ^ 1;
    batch.add(key, aads[0] as Uint8Array, good, 3);
    batch.add(key, aads[0] as Uint8Array, bad, 3);
    batch.add(key, aads[0] as Uint8Array, good, 3);
    expect(batch.open()).toBe(1);
    batch.clear();
    expect(batch.size).toBe(0);
  });

  it("wipes on clear what every open since the last clear wrote", () => {
    const raw = randomBytes(32);
    const key = keyOf(raw);
    const aad = randomBytes(16);
    const batch = new GcmOpenBatch();
    for (let i = 0; i < 20; i++) {
      batch.add(key, aad, nodeSeal(raw, randomBytes(12), aad, randomBytes(100)), 3);
    }
    expect(batch.open()).toBe(-1);
    // A smaller batch opened without a clear in between.
    batch.add(key, aad, nodeSeal(raw, randomBytes(12), aad, randomBytes(5)), 3);
    expect(batch.open()).toBe(-1);
    batch.clear();
    expect(batch.plaintext.every((byte) => byte === 0)).toBe(true);
  });

  it("refuses values too long or too short for it", () => {
    const key = keyOf(randomBytes(32));
    const batch = new GcmOpenBatch();
    expect(batch.add(key, new Uint8Array(0), new Uint8Array(12 + 15), 0)).toBe(-1);
    expect(
      batch.add(key, new Uint8Array(0), new Uint8Array(12 + SHORT_GCM_MAX_BYTES + 17), 0),
    ).toBe(-1);
    expect(batch.size).toBe(0);
  });

  it("refuses a value under another key while it holds values", () => {
    const batch = new GcmOpenBatch();
    const sealed = new Uint8Array(12 + 16 + 16);
    batch.add(keyOf(randomBytes(32)), new Uint8Array(0), sealed, 0);
    expect(() => batch.add(keyOf(randomBytes(32)), new Uint8Array(0), sealed, 0)).toThrow(
      /one key/,
    );
  });
});

describe("GHASH table accesses", () => {
  /**
   * The entries of the H tables a call reads, in order: they must follow from public data
   * (ciphertext, lengths) alone, so two keys opening the same bytes read the same entries. A
   * textbook table GHASH (Horner's rule, X ← (X ⊕ C)·H) indexes by X, which depends on H: its
   * trace would differ between keys.
   */
  function traceOf(of: Uint8Array | GcmKey, aad: Uint8Array, sealed: Uint8Array): string[] {
    const key = () => (of instanceof GcmKey ? of : keyOf(of));
    const trace: string[] = [];
    const real = GcmKey.prototype.table;
    const spy = vi.spyOn(GcmKey.prototype, "table").mockImplementation(function (
      this: GcmKey,
      power: number,
    ) {
      const table = real.call(this, power);
      return new Proxy(table, {
        get(target, property) {
          if (typeof property === "string" && /^\d+$/.test(property)) {
            trace.push(`${power}:${property}`);
          }
          const value = Reflect.get(target, property, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
    });
    try {
      key().openFrom(aad, sealed, 3);
      const batch = new GcmOpenBatch();
      batch.add(key(), aad, sealed, 3);
      batch.open();
      batch.clear();
    } finally {
      spy.mockRestore();
    }
    return trace;
  }

  it("reads the same entries under any two keys with 8-bit tables", () => {
    const aad = randomBytes(45);
    const mine = randomBytes(32);
    const theirs = randomBytes(32);
    const keys = [mine, theirs].map((raw) => {
      const key = keyOf(raw);
      key.hold();
      warm(key);
      expect(key.wideTablesHeld).toBe(SHORT_POWERS);
      return key;
    });
    for (const length of [1, 16, 33, 100]) {
      const sealed = nodeSeal(mine, randomBytes(12), aad, randomBytes(length));
      const trace = traceOf(keys[0] as GcmKey, aad, sealed);
      expect(trace.length).toBeGreaterThan(0);
      expect(trace.every((entry) => Number(entry.split(":")[1]) < 16 * 256 * 4)).toBe(true);
      expect(traceOf(keys[1] as GcmKey, aad, sealed)).toEqual(trace);
      const other = Buffer.from(sealed);
      other[15] = (other[15] as number) ^ 0xff;
      expect(traceOf(keys[0] as GcmKey, aad, other)).not.toEqual(trace);
    }
    for (const key of keys) key.release();
  });

  it("reads the same entries under any key, and other entries for other ciphertext", () => {
    const aad = randomBytes(45);
    for (const length of [1, 16, 33, 100]) {
      const mine = randomBytes(32);
      const sealed = nodeSeal(mine, randomBytes(12), aad, randomBytes(length));
      const trace = traceOf(mine, aad, sealed);
      expect(trace.length).toBeGreaterThan(0);
      expect(traceOf(randomBytes(32), aad, sealed)).toEqual(trace);
      const other = Buffer.from(sealed);
      other[15] = (other[15] as number) ^ 0xff;
      expect(traceOf(mine, aad, other)).not.toEqual(trace);
    }
  });
});
