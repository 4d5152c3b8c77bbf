/*
 * Express names the matched route's own path (`req.route.path`) but not the patterns of the
 * routers it is mounted under: `req.baseUrl` is the part of the URL those routers consumed,
 * ids and e-mail addresses included. Express has no public way to get them (the router's
 * `listRoutes()` lists the registered patterns, not which of them a request took), so they are
 * read from the router stack: from the application at the top, through each mounted router or
 * sub-application, down to the layer that holds the very `Route` object that matched.
 *
 * Where one way only leads there, each mount holding one pattern, the answer does not depend
 * on the request and is kept per route until a stack on the way changes length. Otherwise (an
 * array of mount paths, one router mounted twice) the request's path is matched again, layer by
 * layer, as the router matched it, which costs about a microsecond per mount.
 *
 * The request's own `app`, `baseUrl` and path say where it is now. Once the route's handler has
 * returned they may no longer lead to the route (a sub-application put `req.app` back as it
 * returned); `route-entry.ts` keeps them as they were when the router entered the route.
 *
 * That reads router 2.3's `Layer` (`rawPath`, and `match()` returning `{ path, pattern }`
 * without changing the layer), which the router documents as internal. Whatever does not have
 * that shape — an older router, whose `match()` overwrites the layer's own fields while the
 * router reads them, or a future one — gives no answer, and the caller shows no mount part at
 * all rather than the URL.
 */

/** What this module reads of the router's internal `Layer`. */
interface LayerView {
  readonly handle?: unknown;
  readonly route?: unknown;
  readonly rawPath?: unknown;
  readonly match?: unknown;
}

/** What it reads of an Express application: its router, where and under whom it is mounted. */
interface AppView {
  readonly router: { readonly stack: readonly unknown[] };
  readonly parent?: unknown;
  readonly mountpath?: unknown;
}

type Pattern = string | RegExp;

/** Deeper than any real application; bounds the walk of a router mounted inside itself. */
const MAX_DEPTH = 32;

/** Layers a survey looks at before it gives up (a router mounted many times over). */
const MAX_SURVEYED = 20_000;

/** What a survey of the stacks found for one route, valid while those stacks keep their lengths. */
interface Survey {
  /** The request's application it was made for: which sub-applications it could see. */
  readonly app: unknown;
  /** The application it started from. */
  readonly root: AppView;
  readonly stacks: (readonly unknown[])[];
  readonly lengths: number[];
  /** The route's pattern when one way only leads to it, each mount holding one pattern. */
  pattern: string | undefined;
  /** The `/`s its mounts consume: those of `baseUrl` read inside the route. */
  slashes: number | undefined;
}

// Keyed by `Route` objects, which live as long as the application, not by requests.
const surveys = new WeakMap<object, Survey>();

/**
 * What `routeChain` reads of the request: the request itself, or the values it had when the
 * router entered the route (`RouteEntry`), which the routers put back as they return.
 */
export interface RequestView {
  readonly app: unknown;
  readonly baseUrl: unknown;
  /** The path the current router matches: `req.path`. */
  readonly path: unknown;
}

/** What is known of the request besides its view. */
export interface RouteChainOptions {
  /**
   * An application the request was in before it was routed to the route: one above a
   * sub-application mounted by `router.use`, which has no `parent` to lead back to it.
   */
  readonly outer?: unknown;
  /**
   * The view is the request as the router entered the route: its mounts consumed exactly
   * `baseUrl`, and the route matched `path`.
   */
  readonly entered?: boolean;
}

/**
 * The patterns the request took to `route`: each mount pattern (a trailing `/` dropped, the
 * root `/` empty), then the pattern of `route` that matched, joined (`/users/:email/notes/:id`).
 * Never any part of the URL. Without `pattern`, `readable` tells whether the stack could be read
 * (then `route` is not under the request's application: a sub-application that has returned).
 */
export function routeChain(
  view: RequestView,
  route: object,
  options: RouteChainOptions = {},
): { readonly pattern: string } | { readonly pattern?: undefined; readonly readable: boolean } {
  const apps = ancestry(view.app);
  const root = apps.at(-1);
  const baseUrl = view.baseUrl;
  if (root === undefined || typeof baseUrl !== "string") return { readable: false };
  const { outer, entered = false } = options;
  if (outer !== undefined && outer !== view.app) {
    const outerApps = ancestry(outer);
    const outerRoot = outerApps.at(-1);
    if (outerRoot !== undefined && outerRoot !== root) {
      // The request came in through another top application: `view.app` is (or was, since
      // `req.app` stays when it returns) a sub-application below it mounted by `router.use`.
      const both = [...apps, ...outerApps.filter((app) => !apps.includes(app))];
      const found = chainFrom(view, baseUrl, route, outerRoot, both, entered);
      if (found.pattern !== undefined) return found;
    }
  }
  return chainFrom(view, baseUrl, route, root, apps, entered);
}

/** `app` and the applications it is mounted under (by `app.use`), innermost first. */
function ancestry(start: unknown): AppView[] {
  const apps: AppView[] = [];
  let app = start;
  while (isApp(app) && !apps.includes(app) && apps.length < MAX_DEPTH) {
    apps.push(app);
    app = app.parent;
  }
  return apps;
}

function chainFrom(
  view: RequestView,
  baseUrl: string,
  route: object,
  root: AppView,
  apps: readonly AppView[],
  entered: boolean,
): { readonly pattern: string } | { readonly pattern?: undefined; readonly readable: boolean } {
  const survey = surveyed(route, view.app, root, apps);
  // An application mounted other than by `app.use` (`router.use(subApp)`) has no `parent`: a
  // survey from the top application above `view.app` then misses the mounts above it. Those
  // consumed part of `baseUrl`, which has more `/`s than the survey's mounts consume. Empty,
  // `baseUrl` was read after the routers returned.
  if (survey.pattern !== undefined && (baseUrl === "" || slashesIn(baseUrl) === survey.slashes)) {
    return { pattern: survey.pattern };
  }
  // The path the top router matched: the consumed part and what the current router sees. Read
  // after a router has returned (an error handler after it), both are the top router's again.
  const below = view.path;
  if (typeof below !== "string") return { readable: false };
  // Where several ways lead to the route, the one the router took consumed `baseUrl` as it was
  // when it entered the route: one mounted at `/a` and at `/:section/t`, entered a second time
  // by `/a/t/t/x` (the first way called `next()`), is named by the second.
  const walk: Walk = {
    route,
    apps,
    onPath: [],
    readable: true,
    routePath: entered ? below : undefined,
  };
  const parts = search(walk, root.router.stack, baseUrl + below, root);
  return parts === undefined ? { readable: walk.readable } : { pattern: parts.join("") };
}

/** The survey of the ways to `route`, made again when a stack it read has changed length. */
function surveyed(route: object, app: unknown, root: AppView, apps: readonly AppView[]): Survey {
  const known = surveys.get(route);
  if (known !== undefined && known.app === app && known.root === root && unchanged(known)) {
    return known;
  }
  const survey: Survey = {
    app,
    root,
    stacks: [],
    lengths: [],
    pattern: undefined,
    slashes: undefined,
  };
  let ways = 0;
  let layers = 0;
  const onPath: unknown[] = [];
  // `mounts` is undefined below a mount of several patterns, `slashes` below one whose `/`s
  // cannot be counted (a RegExp, a wildcard, an optional part).
  const visit = (
    stack: readonly unknown[],
    at: AppView,
    mounts: string | undefined,
    slashes: number | undefined,
  ): void => {
    if (onPath.length >= MAX_DEPTH || onPath.includes(stack)) return;
    survey.stacks.push(stack);
    survey.lengths.push(stack.length);
    onPath.push(stack);
    for (const entry of stack) {
      if (++layers > MAX_SURVEYED) break;
      if (typeof entry !== "object" || entry === null) continue;
      const layer = entry as LayerView;
      const own = onePattern(layer.rawPath);
      if (layer.route !== undefined) {
        if (layer.route !== route) continue;
        ways++;
        const whole = mounts !== undefined && own !== undefined && ways === 1;
        survey.pattern = whole ? mounts + patternText(own) : undefined;
        survey.slashes = slashes;
        continue;
      }
      const mounted = mountedStack(layer, at, apps);
      if (mounted === undefined) continue;
      const mount = own === undefined ? undefined : mountText(own);
      const consumed = typeof own === "string" ? countable(mountText(own)) : undefined;
      visit(
        mounted.stack,
        mounted.app,
        mounts === undefined || mount === undefined ? undefined : mounts + mount,
        slashes === undefined || consumed === undefined ? undefined : slashes + consumed,
      );
    }
    onPath.pop();
  };
  visit(root.router.stack, root, "", 0);
  if (layers > MAX_SURVEYED) survey.pattern = undefined;
  surveys.set(route, survey);
  return survey;
}

function unchanged(survey: Survey): boolean {
  const { stacks, lengths } = survey;
  for (let i = 0; i < stacks.length; i++) if (stacks[i]?.length !== lengths[i]) return false;
  return true;
}

/** A layer's pattern when it has exactly one (not an array of several). */
function onePattern(raw: unknown): Pattern | undefined {
  const pattern: unknown = Array.isArray(raw) && raw.length === 1 ? raw[0] : raw;
  return isPattern(pattern) ? pattern : undefined;
}

/**
 * The `/`s of what a mount path consumed: those the pattern spells (a parameter stops at a `/`).
 * Undefined for a wildcard or an optional part, which match any number.
 */
function countable(mount: string): number | undefined {
  return /[*{}\\]/.test(mount) ? undefined : slashesIn(mount);
}

function slashesIn(text: string): number {
  let count = 0;
  for (let i = text.indexOf("/"); i !== -1; i = text.indexOf("/", i + 1)) count++;
  return count;
}

interface Walk {
  readonly route: object;
  /** `req.app` and the applications above it. */
  readonly apps: readonly AppView[];
  /** The stacks being searched, outermost first. */
  readonly onPath: (readonly unknown[])[];
  /** Cleared at the first layer that cannot be asked for its match. */
  readable: boolean;
  /** The path the route matched, when known: the ways that leave another for it are not taken. */
  readonly routePath: string | undefined;
}

function search(
  walk: Walk,
  stack: readonly unknown[],
  path: string,
  app: AppView,
): string[] | undefined {
  if (walk.onPath.length >= MAX_DEPTH || walk.onPath.includes(stack)) return undefined;
  walk.onPath.push(stack);
  try {
    for (const entry of stack) {
      if (typeof entry !== "object" || entry === null) continue;
      const layer = entry as LayerView;
      if (layer.route !== undefined) {
        if (layer.route !== walk.route) continue;
        if (walk.routePath !== undefined && path !== walk.routePath) continue;
        const match = matchLayer(walk, layer, path);
        if (match !== undefined) return [patternText(match.pattern)];
        continue;
      }
      const mounted = mountedStack(layer, app, walk.apps);
      if (mounted === undefined) continue;
      const match = literalMount(layer.rawPath, path) ?? matchLayer(walk, layer, path);
      if (match === undefined || !consumes(match.path, path)) continue;
      const rest = path.slice(match.path.length);
      const below = rest.startsWith("/") ? rest : `/${rest}`;
      const found = search(walk, mounted.stack, below, mounted.app);
      if (found !== undefined) {
        found.unshift(mountText(match.pattern));
        return found;
      }
    }
    return undefined;
  } finally {
    walk.onPath.pop();
  }
}

/** The stack a middleware layer hands the request to, if it is a router or an application. */
function mountedStack(
  layer: LayerView,
  app: AppView,
  apps: readonly AppView[],
): { stack: readonly unknown[]; app: AppView } | undefined {
  const handle = layer.handle;
  if (typeof handle !== "function") return undefined;
  const stack: unknown = (handle as { stack?: unknown }).stack;
  if (Array.isArray(stack)) return { stack, app };
  // `router.use(subApp)`: the application itself is the handle.
  if (isApp(handle)) return { stack: handle.router.stack, app: handle };
  // `app.use(subApp)` mounts a closure around it: the sub-application is known only as one of
  // the request's applications, the one this application mounted at the layer's pattern.
  for (const child of apps) {
    if (child.parent === app && samePatterns(child.mountpath, layer.rawPath)) {
      return { stack: child.router.stack, app: child };
    }
  }
  return undefined;
}

function isApp(value: unknown): value is AppView {
  if (typeof value !== "function") return false;
  const app = value as { handle?: unknown; set?: unknown; router?: unknown };
  if (typeof app.handle !== "function" || typeof app.set !== "function") return false;
  const router: unknown = app.router;
  return typeof router === "function" && Array.isArray((router as { stack?: unknown }).stack);
}

/** The layer's match of `path`, if the layer is one this module knows how to ask. */
function matchLayer(
  walk: Walk,
  layer: LayerView,
  path: string,
): { path: string; pattern: Pattern } | undefined {
  if (typeof layer.match !== "function" || !knownPatterns(layer.rawPath)) {
    walk.readable = false;
    return undefined;
  }
  let match: unknown;
  try {
    match = (layer.match as (this: LayerView, path: string) => unknown).call(layer, path);
  } catch {
    // A parameter with a malformed %-escape: the router refused it too.
    return undefined;
  }
  if (match === false) return undefined;
  const { path: matched, pattern } = (match ?? {}) as { path?: unknown; pattern?: unknown };
  if (typeof matched !== "string" || !isPattern(pattern)) {
    walk.readable = false;
    return undefined;
  }
  return { path: matched, pattern };
}

/** Characters path-to-regexp reads as syntax in a path (parameters, wildcards, groups). */
const PATH_SYNTAX = /[:*{}()[\]+?!\\]/;

/**
 * A mount path without parameters (`/api`) matches a path it starts, as written, at a `/`:
 * known without asking the layer, whose `match()` costs about a microsecond. Where it does
 * not start it as written the layer is asked anyway (it may match regardless of case).
 */
function literalMount(raw: unknown, path: string): { path: string; pattern: string } | undefined {
  if (typeof raw !== "string" || PATH_SYNTAX.test(raw)) return undefined;
  const prefix = withoutTrailingSlash(raw);
  return consumes(prefix, path) ? { path: prefix, pattern: raw } : undefined;
}

/**
 * Patterns this module may match again. A RegExp with the `g` or `y` flag carries its position
 * from one `exec` to the next: matching it here would change where the router's next match of
 * it starts.
 */
function knownPatterns(raw: unknown): boolean {
  return Array.isArray(raw) ? raw.every(knownPattern) : knownPattern(raw);
}

function knownPattern(pattern: unknown): boolean {
  return isPattern(pattern) && !(pattern instanceof RegExp && (pattern.global || pattern.sticky));
}

function isPattern(value: unknown): value is Pattern {
  return typeof value === "string" || value instanceof RegExp;
}

/** Whether the router would strip `matched` from `path` (its prefix, ending at a `/`). */
function consumes(matched: string, path: string): boolean {
  if (!path.startsWith(matched)) return false;
  const next = path[matched.length];
  return next === undefined || next === "/";
}

/** Both `app.mountpath` and `layer.rawPath` keep the patterns given to `app.use`. */
function samePatterns(mountpath: unknown, raw: unknown): boolean {
  if (!Array.isArray(mountpath) || !Array.isArray(raw)) return mountpath === raw;
  const given: unknown[] = mountpath.flat(Number.POSITIVE_INFINITY);
  return given.length === raw.length && given.every((pattern, i) => pattern === raw[i]);
}

function patternText(pattern: Pattern): string {
  return typeof pattern === "string" ? pattern : String(pattern);
}

/** As the router sets `baseUrl`: a mount path's trailing `/` is not part of it. */
function mountText(pattern: Pattern): string {
  return typeof pattern === "string" ? withoutTrailingSlash(pattern) : String(pattern);
}

function withoutTrailingSlash(pattern: string): string {
  let end = pattern.length;
  while (end > 0 && pattern[end - 1] === "/") end--;
  return end === pattern.length ? pattern : pattern.slice(0, end);
}
