import "reflect-metadata";
import { TypeormFieldEncryption } from "@kms/typeorm";
import { getDataSourceToken } from "@nestjs/typeorm";
import { afterEach, expect, test, vi } from "vitest";
import { createApp } from "../src/server.ts";
import { sqliteBackend } from "./backends.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

test("the app checks its encrypted entities once the DataSource is up, before any request", async () => {
  const check = vi.spyOn(TypeormFieldEncryption.prototype, "check");
  const backend = await sqliteBackend();
  const app = await createApp(backend.config);
  try {
    const dataSource = app.get(getDataSourceToken());
    expect(check).toHaveBeenCalledTimes(1);
    expect(check).toHaveBeenCalledWith(dataSource);
    expect(dataSource.isInitialized).toBe(true);
  } finally {
    await app.close();
    await backend.close();
  }
});
