// `kms serve --credentials`: the file whose mode is checked is the file whose secrets are read.
// node:fs/promises is wrapped so that the file at the path is swapped right after the first call
// that touches it, whichever call that is: someone winning the race between a look and a read.
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { readCredentialsFile } from "../src/internal/serve-command.ts";
import { workspace } from "./helpers.ts";

const swap = vi.hoisted(() => ({ afterFirstCall: undefined as (() => void) | undefined }));

vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>();
  const watched =
    <A extends unknown[], R>(call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const result = await call(...args);
      const then = swap.afterFirstCall;
      swap.afterFirstCall = undefined;
      then?.();
      return result;
    };
  return {
    ...actual,
    open: watched(actual.open),
    stat: watched(actual.stat),
    readFile: watched(actual.readFile),
  };
});

let ws: ReturnType<typeof workspace>;
beforeEach(() => {
  ws = workspace();
});
afterEach(() => {
  swap.afterFirstCall = undefined;
  ws.dispose();
});

const credentials = (accessKeyId: string) =>
  JSON.stringify({
    [accessKeyId]: {
      secretAccessKey: "s".repeat(40),
      principal: "arn:aws:iam::000000000000:role/app",
    },
  });

it("a file swapped in after the first look is not the one read (regression: checked one, read the other)", async () => {
  const path = join(ws.dir, "credentials.json");
  writeFileSync(path, credentials("AKIAOPERATORS000001"), { mode: 0o600 });
  const planted = join(ws.dir, "planted.json");
  writeFileSync(planted, credentials("AKIAPLANTED00000001"), { mode: 0o600 });
  swap.afterFirstCall = () => renameSync(planted, path);
  expect(Object.keys(await readCredentialsFile(path))).toEqual(["AKIAOPERATORS000001"]);
  expect(swap.afterFirstCall).toBeUndefined();
});
