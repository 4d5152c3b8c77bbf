/**
 * `route` read after the matched route's handler has returned: in an error handler after the
 * routers, in middleware that answers after the route called `next()`, in a response signer
 * that runs when the response ends. By then Express has put `req.baseUrl` and `req.app` back as
 * the routers and sub-applications unwound, so the mount patterns above a sub-application can no
 * longer be read from the request. With `kmsContext` in front of the routes, `route` is still
 * the whole chain of mount patterns, and never a value from the URL.
 */
import { randomBytes } from "node:crypto";
import { createHmacSigner, type MessageSigner } from "@kms/http-signatures";
import type { NextFunction, Request, RequestHandler, Response } from "express";
import express from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import {
  currentKmsContext,
  kmsContext,
  kmsContextOf,
  routePattern,
  signResponse,
} from "../src/index.ts";

type ErrorHandler = (error: unknown, req: Request, res: Response, next: NextFunction) => void;

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 1));

/** An application with an authenticated user and `kmsContext` in front of everything. */
function contextApp(): express.Express {
  const app = express();
  app.use((req, _res, next) => {
    (req as unknown as { user: object }).user = { tenantId: "tenant-a", id: "u1" };
    next();
  });
  app.use(kmsContext());
  return app;
}

/** An error handler recording the route as the request's context and `routePattern` see it. */
function recordingErrorHandler(seen: string[]): ErrorHandler {
  return (_error, req, res, _next) => {
    seen.push(`context: ${kmsContextOf(req)?.route}`);
    seen.push(`current: ${currentKmsContext()?.route}`);
    seen.push(`pattern: ${routePattern(req)}`);
    res.sendStatus(500);
  };
}

function failing(): RequestHandler {
  return async () => {
    await tick();
    throw new Error("boom");
  };
}

function expectNoValue(seen: readonly string[], values: readonly string[]): void {
  for (const entry of seen) for (const value of values) expect(entry).not.toContain(value);
}

describe("route read after the route's handler returned", () => {
  it("names the sub-application's mount in an error handler after an async handler rejects", async () => {
    const seen: string[] = [];
    const app = contextApp();
    const tenantApp = express();
    tenantApp.get("/notes/:noteId", failing());
    app.use("/tenants/:tenantId", tenantApp);
    app.use(recordingErrorHandler(seen));
    const res = await request(app).get("/tenants/t-secret-1/notes/n-secret-2");
    expect(res.status).toBe(500);
    const route = "GET /tenants/:tenantId/notes/:noteId";
    expect(seen).toEqual([`context: ${route}`, `current: ${route}`, `pattern: ${route}`]);
    expectNoValue(seen, ["t-secret-1", "n-secret-2"]);
  });

  it("names every level of sub-applications and routers nested three deep", async () => {
    const seen: string[] = [];
    const app = contextApp();
    const tenantApp = express();
    const projects = express.Router({ mergeParams: true });
    const files = express.Router();
    files.get("/versions/:version", failing());
    projects.use("/files/:fileId", files);
    tenantApp.use("/projects/:projectId", projects);
    app.use("/tenants/:tenantId", tenantApp);
    // An error handler inside the sub-application that passes the error on: it unwinds too.
    tenantApp.use(((error, _req, _res, next) => next(error)) satisfies ErrorHandler);
    app.use(recordingErrorHandler(seen));
    const res = await request(app).get("/tenants/acme/projects/p-7/files/f@x.example/versions/3");
    expect(res.status).toBe(500);
    const route = "GET /tenants/:tenantId/projects/:projectId/files/:fileId/versions/:version";
    expect(seen).toEqual([`context: ${route}`, `current: ${route}`, `pattern: ${route}`]);
    expectNoValue(seen, ["acme", "p-7", "f@x.example"]);
  });

  it("names sub-applications mounted inside sub-applications", async () => {
    const seen: string[] = [];
    const app = contextApp();
    const tenantApp = express();
    const adminApp = express();
    adminApp.delete("/users/:userId", failing());
    tenantApp.use("/admin/:section", adminApp);
    app.use("/tenants/:tenantId", tenantApp);
    app.use(recordingErrorHandler(seen));
    await request(app).delete("/tenants/t-9/admin/billing/users/bob@example.com");
    const route = "DELETE /tenants/:tenantId/admin/:section/users/:userId";
    expect(seen).toEqual([`context: ${route}`, `current: ${route}`, `pattern: ${route}`]);
  });

  it("names the mounts above a sub-application mounted with router.use, inside and after", async () => {
    const seen: string[] = [];
    const app = contextApp();
    const outer = express.Router();
    const sub = express();
    sub.get("/s/:s", (req, _res, next) => {
      seen.push(`inside: ${routePattern(req)}`);
      next(new Error("boom"));
    });
    outer.use("/r/:r", sub);
    app.use("/v/:v", outer);
    app.use(((_error, req, res, _next) => {
      seen.push(`after: ${kmsContextOf(req)?.route}`);
      res.sendStatus(500);
    }) satisfies ErrorHandler);
    await request(app).get("/v/v-secret/r/r-secret/s/s-secret");
    expect(seen).toEqual(["inside: GET /v/:v/r/:r/s/:s", "after: GET /v/:v/r/:r/s/:s"]);
  });

  it("names the route to middleware that answers after the route called next()", async () => {
    const seen: string[] = [];
    const app = contextApp();
    const tenantApp = express();
    const notes = express.Router();
    notes.get("/notes/:noteId", async (_req, res, next) => {
      await tick();
      res.locals.note = { ok: true };
      next();
    });
    tenantApp.use("/api", notes);
    app.use("/tenants/:tenantId", tenantApp);
    app.use((req, res) => {
      res.on("finish", () => seen.push(`finish: ${kmsContextOf(req)?.route}`));
      seen.push(`answer: ${currentKmsContext()?.route}`);
      res.json(res.locals.note);
    });
    const res = await request(app).get("/tenants/t-secret/api/notes/42");
    expect(res.status).toBe(200);
    await tick();
    expect(seen).toEqual([
      "answer: GET /tenants/:tenantId/api/notes/:noteId",
      "finish: GET /tenants/:tenantId/api/notes/:noteId",
    ]);
  });

  it("names the route to a response signer that reads it when the response ends", async () => {
    const seen: string[] = [];
    const hmac = createHmacSigner(randomBytes(32), { keyId: "server" });
    // A signer that takes its time (as a KMS call does) and records the route it signs under.
    const signer: MessageSigner = {
      algorithm: hmac.algorithm,
      keyId: hmac.keyId,
      sign: async (base) => {
        await tick();
        seen.push(`signed: ${currentKmsContext()?.route}`);
        return hmac.sign(base);
      },
    };
    const app = contextApp();
    app.use(signResponse({ signer }));
    const tenantApp = express();
    tenantApp.get("/orders/:orderId", async (_req, res, next) => {
      await tick();
      res.locals.order = { id: "hidden" };
      next();
    });
    tenantApp.post("/orders/:orderId/refund", failing());
    app.use("/tenants/:tenantId", tenantApp);
    app.use((_req, res) => res.json(res.locals.order));
    app.use(((_error, _req, res, _next) =>
      res.status(500).json({ error: "boom" })) satisfies ErrorHandler);
    const ok = await request(app).get("/tenants/t-secret/orders/o-secret");
    const failed = await request(app).post("/tenants/t-secret/orders/o-secret/refund");
    expect([ok.status, failed.status]).toEqual([200, 500]);
    expect(ok.headers.signature).toBeDefined();
    expect(failed.headers.signature).toBeDefined();
    expect(seen).toEqual([
      "signed: GET /tenants/:tenantId/orders/:orderId",
      "signed: POST /tenants/:tenantId/orders/:orderId/refund",
    ]);
  });

  it("takes the route as entered when kmsContext runs inside the route itself", async () => {
    const seen: string[] = [];
    const app = express();
    app.use((req, _res, next) => {
      (req as unknown as { user: object }).user = { tenantId: "tenant-a" };
      next();
    });
    const tenantApp = express();
    tenantApp.get("/notes/:noteId", kmsContext(), failing());
    app.use("/tenants/:tenantId", tenantApp);
    app.use(((_error, req, res, _next) => {
      seen.push(`${kmsContextOf(req)?.route}`);
      res.sendStatus(500);
    }) satisfies ErrorHandler);
    await request(app).get("/tenants/t-secret/notes/n-secret");
    expect(seen).toEqual(["GET /tenants/:tenantId/notes/:noteId"]);
  });

  it("names a route entered twice by the mount it was entered under each time", async () => {
    const seen: string[] = [];
    const app = contextApp();
    const shared = express.Router();
    let entries = 0;
    shared.get("/t/*rest", (req, _res, next) => {
      seen.push(`inside: ${routePattern(req)}`);
      if (++entries === 1) next();
      else next(new Error("boom"));
    });
    app.use("/a", shared);
    app.use("/:section/t", shared);
    app.use(((_error, req, res, _next) => {
      seen.push(`after: ${kmsContextOf(req)?.route}`);
      res.sendStatus(500);
    }) satisfies ErrorHandler);
    await request(app).get("/a/t/t/x");
    expect(seen).toEqual([
      "inside: GET /a/t/*rest",
      "inside: GET /:section/t/t/*rest",
      "after: GET /:section/t/t/*rest",
    ]);
  });

  it("leaves req.route as Express sets it", async () => {
    const seen: unknown[] = [];
    const app = contextApp();
    const tenantApp = express();
    tenantApp.get("/notes/:noteId", (req, _res, next) => {
      seen.push(req.route?.path, Object.keys(req).includes("route"));
      next(new Error("boom"));
    });
    app.use("/tenants/:tenantId", tenantApp);
    app.use((req, _res, next) => {
      seen.push("unreached", req.route);
      next();
    });
    app.use(((_error, req, res, _next) => {
      seen.push(req.route?.path);
      req.route = undefined;
      seen.push(req.route, routePattern(req));
      res.sendStatus(500);
    }) satisfies ErrorHandler);
    await request(app).get("/tenants/t/notes/n");
    expect(seen).toEqual(["/notes/:noteId", true, "/notes/:noteId", undefined, "GET /*"]);
  });

  // Random trees of routers and sub-applications (mounted by app.use, router.use or
  // app.use(router)), parameters at every level, the route read only in an error handler after
  // everything returned: the whole pattern, and no value sent in the URL.
  it("is the whole pattern after return, across random trees of routers and sub-applications", async () => {
    let seed = 11;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const valueChars = "abcdefghijklmnopqrstuvwxyz0123456789@.-_";
    const value = () =>
      `v${Array.from({ length: 4 + next(8) }, () => valueChars[next(40)]).join("")}`;
    for (let trial = 0; trial < 40; trial++) {
      const depth = 1 + next(3);
      const segments: { pattern: string; url: string; values: string[] }[] = [];
      for (let level = 0; level <= depth; level++) {
        const literal = ["", "/api", "/tenants", "/x"][next(4)] ?? "";
        let pattern = literal;
        let url = literal;
        const values: string[] = [];
        for (let p = 0; p < 1 + next(2); p++) {
          const v = value();
          pattern += `/:p${level}_${p}`;
          url += `/${encodeURIComponent(v)}`;
          values.push(v);
        }
        segments.push({ pattern, url, values });
      }
      const seen: string[] = [];
      const app = contextApp();
      // Each mount level is a router or a sub-application; the leaf holds the route.
      const levels = segments
        .slice(0, -1)
        .map(() => (next(2) === 0 ? express() : express.Router()));
      const leaf = segments.at(-1);
      const innermost = levels.at(-1);
      if (leaf === undefined || innermost === undefined) throw new Error("no route");
      innermost.get(leaf.pattern, failing());
      levels.forEach((level, i) => {
        const parent = i === 0 ? app : levels[i - 1];
        parent?.use(segments[i]?.pattern ?? "/", level);
      });
      app.use(((_error, req, res, _next) => {
        seen.push(`${kmsContextOf(req)?.route}`);
        res.sendStatus(500);
      }) satisfies ErrorHandler);
      const url = segments.map((s) => s.url).join("");
      expect((await request(app).get(url)).status, url).toBe(500);
      expect(seen, url).toEqual([`GET ${segments.map((s) => s.pattern).join("")}`]);
      expectNoValue(
        seen,
        segments.flatMap((s) => s.values),
      );
    }
  });
});
