import "reflect-metadata";
import {
  Controller,
  Get,
  type INestApplication,
  Module,
  NotFoundException,
  Param,
} from "@nestjs/common";
import { APP_FILTER } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProblemsFilter } from "../src/problems.filter.ts";

/** A route that matches and then finds nothing, as a handler looking up a record would. */
@Controller("things")
class ThingsController {
  @Get(":id")
  thing(@Param("id") id: string): { id: string } {
    if (id === "missing") throw new NotFoundException(`no thing ${id}`);
    return { id };
  }
}

@Module({
  controllers: [ThingsController],
  providers: [{ provide: APP_FILTER, useClass: ProblemsFilter }],
})
class ThingsModule {}

describe("ProblemsFilter and a NotFoundException", () => {
  let app: INestApplication;
  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ imports: [ThingsModule] }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.init();
  });
  afterAll(() => app.close());

  it("is 404 when a handler of a matched route throws it, for GET and HEAD", async () => {
    const res = await request(app.getHttpServer()).get("/things/missing");
    expect(res.status).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(res.headers.allow).toBeUndefined();
    expect(res.body).toMatchObject({ status: 404, title: "Not found" });
    const head = await request(app.getHttpServer()).head("/things/missing");
    expect(head.status).toBe(404);
    expect((await request(app.getHttpServer()).get("/things/1")).status).toBe(200);
  });

  it("is still 405 with Allow for a method the path does not take, OPTIONS 204", async () => {
    const res = await request(app.getHttpServer()).post("/things/missing");
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe("GET, HEAD, OPTIONS");
    const options = await request(app.getHttpServer()).options("/things/missing");
    expect(options.status).toBe(204);
    expect(options.headers.allow).toBe("GET, HEAD, OPTIONS");
  });

  it("is still 404 for a path no route matches", async () => {
    const res = await request(app.getHttpServer()).get("/nothing/here");
    expect(res.status).toBe(404);
    expect(res.headers.allow).toBeUndefined();
  });
});
