import { describe, expect, it } from "vitest";
import { KeyStoreConflictError, KmsInternalError, NotFoundError } from "../errors.ts";
import { MAX_WRITE_ATTEMPTS, retryOnConflict } from "./compare-and-set.ts";

const exhausted = (cause: KeyStoreConflictError) =>
  new KmsInternalError("record is being changed too often; try again", { cause });

describe("retryOnConflict", () => {
  it("returns the first attempt that wins, each attempt told its index", async () => {
    const seen: number[] = [];
    const result = await retryOnConflict(
      async (index) => {
        seen.push(index);
        if (index < 2) throw new KeyStoreConflictError(`lost ${index}`);
        return "written";
      },
      { exhausted },
    );
    expect(result).toBe("written");
    expect(seen).toStrictEqual([0, 1, 2]);
  });

  it("throws the documented error, with the last conflict as cause, once the budget is spent", async () => {
    let attempts = 0;
    const error = await retryOnConflict(
      async (index) => {
        attempts++;
        throw new KeyStoreConflictError(`lost ${index}`);
      },
      { exhausted },
    ).catch((e: unknown) => e);
    expect(attempts).toBe(MAX_WRITE_ATTEMPTS);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toBe("record is being changed too often; try again");
    expect((error as Error).cause).toBeInstanceOf(KeyStoreConflictError);
    expect(((error as Error).cause as Error).message).toBe(`lost ${MAX_WRITE_ATTEMPTS - 1}`);
  });

  it("spends the budget it is given", async () => {
    let attempts = 0;
    await expect(
      retryOnConflict(
        async () => {
          attempts++;
          throw new KeyStoreConflictError("lost");
        },
        { exhausted: () => new KeyStoreConflictError("gave up"), attempts: 3 },
      ),
    ).rejects.toThrow("gave up");
    expect(attempts).toBe(3);
  });

  it("propagates any other error at once, without another attempt", async () => {
    for (const failure of [new NotFoundError("gone"), new TypeError("bug"), "not an Error"]) {
      let attempts = 0;
      const error = await retryOnConflict(
        async () => {
          attempts++;
          throw failure;
        },
        { exhausted },
      ).catch((e: unknown) => e);
      expect(error).toBe(failure);
      expect(attempts).toBe(1);
    }
  });

  it("propagates another error after conflicts, leaving the rest of the budget unspent", async () => {
    let attempts = 0;
    const gone = new NotFoundError("gone");
    await expect(
      retryOnConflict(
        async (index) => {
          attempts++;
          if (index === 0) throw new KeyStoreConflictError("lost");
          throw gone;
        },
        { exhausted },
      ),
    ).rejects.toBe(gone);
    expect(attempts).toBe(2);
  });
});
