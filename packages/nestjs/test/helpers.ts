import "reflect-metadata";
import type { INestApplication } from "@nestjs/common";

/** Listens on an ephemeral loopback port; the origin is what signers put in @target-uri. */
export async function listen(app: INestApplication): Promise<string> {
  await app.listen(0, "127.0.0.1");
  const address = app.getHttpServer().address() as { port: number };
  return `http://127.0.0.1:${address.port}`;
}
