import type { Request } from "express";
import { existingRequestState, requestState } from "../request-state.ts";

/*
 * The router sets `req.route` as it enters a matched route, just before the route's handlers
 * (and `router.param` callbacks) run: `req.baseUrl`, `req.app` and the path are then the ones
 * the route was reached with. As the routers and sub-applications return they put `baseUrl`,
 * `url` and `app` back (not `route`), so what is read after the handler returned — in an error
 * handler after the routers, in middleware the route passed on to with `next()`, when a signed
 * response ends — no longer says which mounts the request went through. Watching the assignment
 * keeps those values from the moment of entry. Express has no public hook there; the router's
 * diagnostics channel would be one, but subscribing to it traces every handler of every
 * application in the process.
 */

/** The request as it was when the router entered `route`. */
export interface RouteEntry {
  readonly route: unknown;
  readonly app: unknown;
  readonly baseUrl: unknown;
  readonly path: unknown;
}

// One pair of functions for every request, so V8 shares the shape the property gives them.
const watched: PropertyDescriptor = {
  configurable: true,
  enumerable: true,
  get(this: object): unknown {
    return existingRequestState(this)?.enteredRoute?.route;
  },
  set(this: Request, value: unknown): void {
    enter(this, value);
  },
};

/**
 * From now on, remembers for each route the router enters what the request looked like then,
 * and which application the request is in now: the one to look for mounts from, also when a
 * sub-application below was mounted by `router.use` and so has no `parent` leading back.
 * `req.route` reads and assigns as before. Called more than once, the first call counts.
 */
export function watchRouteEntry(req: Request): void {
  const state = requestState(req);
  if (state.routeWatch !== undefined) return;
  state.routeWatch = { app: req.app };
  const own = Object.getOwnPropertyDescriptor(req, "route");
  if (own === undefined) {
    // Something defines `route` further up the prototype chain: not ours to shadow.
    if ("route" in req) return;
  } else {
    if (own.configurable !== true || !("value" in own)) return;
    // Watching starts inside the route (`app.get(path, kmsContext(), handler)`): entered now.
    enter(req, own.value);
  }
  Object.defineProperty(req, "route", watched);
}

function enter(req: Request, route: unknown): void {
  const state = requestState(req);
  // A pattern kept for this route was read under the mount it was entered by before.
  state.route = undefined;
  state.enteredRoute = { route, app: req.app, baseUrl: req.baseUrl, path: pathOf(req) };
}

/** `req.path`, which throws without a `url`: this runs inside the router and must not. */
function pathOf(req: Request): unknown {
  try {
    return req.path;
  } catch {
    return undefined;
  }
}
