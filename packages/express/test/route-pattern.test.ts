/**
 * `route` (`routePattern(req)`) is what audit and logs record about where a request went: the
 * patterns of every router and sub-application on the way, then the route's own, and never a
 * part of the URL. `req.baseUrl`, which it used to put in front of the route's pattern, is the
 * URL as requested: a router mounted at `/users/:email` put the e-mail address in the trail.
 */
import type { NextFunction, Request, Response } from "express";
import express from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { currentKmsContext, kmsContext, routePattern } from "../src/index.ts";

type Handler = (req: Request, res: Response, next: NextFunction) => void;

/** A handler that records `routePattern(req)` and answers it with the request's params. */
function recorder(seen: string[]): Handler {
  return (req, res) => {
    seen.push(routePattern(req));
    res.json({ params: req.params });
  };
}

/** The patterns an application reports for each of `paths` (GET), in order. */
async function routesOf(app: express.Express, paths: readonly string[], seen: string[]) {
  const statuses: number[] = [];
  for (const path of paths) statuses.push((await request(app).get(path)).status);
  return { seen, statuses };
}

describe("routePattern: the mount patterns, never the URL", () => {
  it("names a parameterised mount path by its pattern, through kmsContext too (the review's case)", async () => {
    const app = express();
    app.use((req, _res, next) => {
      (req as unknown as { user: object }).user = { tenantId: "tenant-a", id: "u1" };
      next();
    });
    app.use(kmsContext());
    const router = express.Router({ mergeParams: true });
    router.get("/notes/:id", (req, res) => {
      res.json({
        route: currentKmsContext()?.route,
        email: (req.params as Record<string, string>).email,
      });
    });
    app.use("/users/:email", router);
    const res = await request(app).get("/users/alice@example.com/notes/42");
    expect(res.body).toEqual({ route: "GET /users/:email/notes/:id", email: "alice@example.com" });
  });

  it("names each level of routers nested three deep, with and without mergeParams", async () => {
    const seen: string[] = [];
    const app = express();
    const orgs = express.Router({ mergeParams: true });
    const teams = express.Router();
    const members = express.Router({ mergeParams: true });
    members.get("/notes/:id", recorder(seen));
    teams.use("/members/:member", members);
    orgs.use("/teams/:team", teams);
    app.use("/orgs/:org", orgs);
    const two = express.Router();
    two.get("/:file", recorder(seen));
    orgs.use("/files", two);
    const { statuses } = await routesOf(
      app,
      ["/orgs/acme/teams/red/members/bob@acme.example/notes/7", "/orgs/acme/files/report.pdf"],
      seen,
    );
    expect(statuses).toEqual([200, 200]);
    expect(seen).toEqual([
      "GET /orgs/:org/teams/:team/members/:member/notes/:id",
      "GET /orgs/:org/files/:file",
    ]);
  });

  it("keeps mount paths without parameters as written, a trailing slash and the root dropped", async () => {
    const seen: string[] = [];
    const app = express();
    const api = express.Router();
    api.get("/orders/:orderId", recorder(seen));
    api.get("/", recorder(seen));
    app.use("/api/", api);
    const root = express.Router();
    root.get("/health", recorder(seen));
    app.use(root);
    await routesOf(app, ["/api/orders/42", "/api", "/API/orders/42", "/health"], seen);
    expect(seen).toEqual([
      "GET /api/orders/:orderId",
      "GET /api/",
      "GET /api/orders/:orderId",
      "GET /health",
    ]);
  });

  it("names the RegExp or the one of an array of paths that matched, for mounts and routes", async () => {
    const seen: string[] = [];
    const app = express();
    const orders = express.Router();
    orders.get("/orders/:id", recorder(seen));
    app.use(/^\/v\d+/, orders);
    app.use(["/shops/:shop", "/stores/:store"], orders);
    app.get(/^\/legacy\/(\d+)$/, recorder(seen));
    app.get(["/a/:first", "/b/:second"], recorder(seen));
    await routesOf(
      app,
      ["/v2/orders/5", "/shops/s1/orders/5", "/stores/s2/orders/5", "/legacy/42", "/b/x"],
      seen,
    );
    expect(seen).toEqual([
      "GET /^\\/v\\d+//orders/:id",
      "GET /shops/:shop/orders/:id",
      "GET /stores/:store/orders/:id",
      "GET /^\\/legacy\\/(\\d+)$/",
      "GET /b/:second",
    ]);
  });

  it("names the mount paths of sub-applications mounted with app.use, nested too", async () => {
    const seen: string[] = [];
    const app = express();
    const tenantApp = express();
    const adminApp = express();
    tenantApp.get("/notes/:id", recorder(seen));
    adminApp.get("/users/:userId", recorder(seen));
    tenantApp.use("/admin/:section", adminApp);
    app.use("/tenants/:tenant", tenantApp);
    await routesOf(app, ["/tenants/t-1/notes/9", "/tenants/t-1/admin/s/users/u@x.example"], seen);
    expect(seen).toEqual([
      "GET /tenants/:tenant/notes/:id",
      "GET /tenants/:tenant/admin/:section/users/:userId",
    ]);
  });

  it("names the mount a request took when one router is mounted at two paths", async () => {
    const seen: string[] = [];
    const app = express();
    const shared = express.Router();
    shared.get("/t/:t", recorder(seen));
    app.use("/a/:x", shared);
    app.use("/b", shared);
    await routesOf(app, ["/b/t/1", "/a/secret-1/t/2", "/b/t/3"], seen);
    expect(seen).toEqual(["GET /b/t/:t", "GET /a/:x/t/:t", "GET /b/t/:t"]);
  });

  it("follows routers mounted after requests were served", async () => {
    const seen: string[] = [];
    const app = express();
    const notes = express.Router();
    notes.get("/notes/:id", recorder(seen));
    app.use("/v1", notes);
    await routesOf(app, ["/v1/notes/1"], seen);
    // A second way to the same route, consuming as many segments: the pattern kept for the
    // first way must not answer for it.
    app.use("/:version", notes);
    await routesOf(app, ["/v2/notes/2", "/v1/notes/3"], seen);
    expect(seen).toEqual(["GET /v1/notes/:id", "GET /:version/notes/:id", "GET /v1/notes/:id"]);
  });

  it("is METHOD /* before routing, in middleware and where no route matched", async () => {
    const seen: string[] = [];
    const app = express();
    app.use((req, _res, next) => {
      seen.push(`app: ${routePattern(req)}`);
      next();
    });
    const users = express.Router();
    users.use((req, _res, next) => {
      seen.push(`router: ${routePattern(req)}`);
      next();
    });
    users.get("/notes/:id", recorder(seen));
    app.use("/users/:email", users);
    app.use((req, res) => {
      seen.push(`404: ${routePattern(req)}`);
      res.sendStatus(404);
    });
    const { statuses } = await routesOf(app, ["/users/dave@example.com/nothing/7"], seen);
    expect(statuses).toEqual([404]);
    expect(seen).toEqual(["app: GET /*", "router: GET /*", "404: GET /*"]);
  });

  it("names the whole pattern in an error handler after the router, first read there", async () => {
    const seen: string[] = [];
    const app = express();
    const users = express.Router();
    users.get("/orders/:orderId", () => {
      throw new Error("boom");
    });
    app.use("/users/:email", users);
    app.use((_error: unknown, req: Request, res: Response, _next: NextFunction) => {
      seen.push(routePattern(req));
      res.sendStatus(500);
    });
    expect((await request(app).get("/users/erin@example.com/orders/3")).status).toBe(500);
    expect(seen).toEqual(["GET /users/:email/orders/:orderId"]);
  });

  it("after a sub-application has returned, keeps its mount path if read inside, else shows /*", async () => {
    for (const readInside of [true, false]) {
      const seen: string[] = [];
      const app = express();
      const tenantApp = express();
      tenantApp.get("/notes/:id", (req) => {
        if (readInside) routePattern(req);
        throw new Error("boom");
      });
      app.use("/tenants/:tenant", tenantApp);
      app.use((_error: unknown, req: Request, res: Response, _next: NextFunction) => {
        seen.push(routePattern(req));
        res.sendStatus(500);
      });
      await request(app).get("/tenants/t-secret/notes/1");
      expect(seen).toEqual([readInside ? "GET /tenants/:tenant/notes/:id" : "GET /*/notes/:id"]);
    }
  });

  it("shows /* for the mount of a sub-application mounted with router.use, which has no parent", async () => {
    const seen: string[] = [];
    const app = express();
    const outer = express.Router();
    const sub = express();
    sub.get("/s/:s", recorder(seen));
    outer.use("/r/:r", sub);
    app.use("/vr/:vr", outer);
    await routesOf(app, ["/vr/v-secret/r/r-secret/s/1"], seen);
    expect(seen).toEqual(["GET /*/s/:s"]);
  });

  it("shows /* for the mount paths where the router's layers lack rawPath (router < 2.3)", async () => {
    const seen: string[] = [];
    const app = express();
    const users = express.Router();
    users.get("/notes/:id", recorder(seen));
    app.use("/users/:email", users);
    app.get("/health/:probe", recorder(seen));
    // Older routers keep no pattern on a layer: their match() overwrites `path` with the URL's.
    for (const layer of [...app.router.stack, ...users.stack]) {
      delete (layer as { rawPath?: unknown }).rawPath;
    }
    const { statuses } = await routesOf(
      app,
      ["/users/frank@example.com/notes/1", "/health/p1"],
      seen,
    );
    expect(statuses).toEqual([200, 200]);
    expect(seen).toEqual(["GET /*/notes/:id", "GET /health/:probe"]);
  });

  it("leaves a global RegExp mount alone: the router's next match starts where it did", async () => {
    const mount = /^\/g\d+/g;
    const lastIndexes: number[][] = [];
    const app = express();
    const router = express.Router();
    router.get("/x/:id", (req, res) => {
      const before = mount.lastIndex;
      const route = routePattern(req);
      lastIndexes.push([before, mount.lastIndex]);
      res.json({ route });
    });
    app.use(mount, router);
    const res = await request(app).get("/g1/x/1");
    expect(res.body.route).toBe("GET /*/x/:id");
    expect(lastIndexes).toHaveLength(1);
    expect(lastIndexes[0]?.[1]).toBe(lastIndexes[0]?.[0]);
  });

  // Random mount trees and parameter values: the pattern is the mounts' and the route's, and
  // no value sent in the URL appears in it.
  it("never contains a value from the URL, across random mount trees", async () => {
    let seed = 7;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const valueChars = "abcdefghijklmnopqrstuvwxyz0123456789@.-_";
    const value = () => Array.from({ length: 3 + next(10) }, () => valueChars[next(40)]).join("");
    for (let trial = 0; trial < 40; trial++) {
      const depth = 1 + next(3);
      const segments: { pattern: string; url: string; values: string[] }[] = [];
      for (let level = 0; level <= depth; level++) {
        const literal = ["", "/api", "/v1", "/users", "/x"][next(5)] ?? "";
        const params = next(3);
        let pattern = literal;
        let url = literal;
        const values: string[] = [];
        for (let p = 0; p < params; p++) {
          const v = value();
          pattern += `/:p${level}_${p}`;
          url += `/${encodeURIComponent(v)}`;
          values.push(v);
        }
        if (pattern === "") {
          pattern = `/:leaf${level}`;
          const v = value();
          url = `/${v}`;
          values.push(v);
        }
        segments.push({ pattern, url, values });
      }
      const seen: string[] = [];
      const app = express();
      const routers = segments
        .slice(0, -1)
        .map(() => express.Router({ mergeParams: next(2) === 1 }));
      const leaf = segments.at(-1);
      const innermost = routers.at(-1);
      if (leaf === undefined || innermost === undefined) throw new Error("no route");
      innermost.get(leaf.pattern, recorder(seen));
      routers.forEach((router, i) => {
        const mountPattern = segments[i]?.pattern ?? "/";
        if (i === 0) app.use(mountPattern, router);
        else routers[i - 1]?.use(mountPattern, router);
      });
      const url = segments.map((s) => s.url).join("");
      const res = await request(app).get(url);
      const expected = `GET ${segments.map((s) => s.pattern).join("")}`;
      expect(res.status, url).toBe(200);
      expect(seen, url).toEqual([expected]);
      for (const v of segments.flatMap((s) => s.values)) {
        if (!expected.includes(v)) expect(seen[0], url).not.toContain(v);
      }
    }
  });
});
