/**
 * The HTTP surface of the server, on `Deno.serve`: the dashboard (`/`, its stylesheet and
 * script), its change feed (`/events`, Server-Sent Events), one operation's log
 * (`/operations/{id}/logs`, SSE), `/healthz`, `/readyz`, and the routes other parts mount
 * ({@linkcode HttpRoute}). Same host, TLS certificate and token as gRPC.
 *
 * The token: a browser opens the sign-in link (`/?token=<token>`) once; the answer sets an
 * HttpOnly, SameSite=Strict cookie (a digest of the token, never the token) and redirects to the
 * clean URL. Scripts send `Authorization: Bearer <token>`. Without a valid one, every route but
 * the public ones answers 401. Nothing on the surface changes state; mounted POST routes that do
 * take `access: "token"`.
 *
 * Bounds: at most `maxStreams` SSE streams open (503 beyond), request bodies at most
 * `maxBodyBytes` (413; a body of unknown length on a POST 411; any body on a GET 400), URLs at
 * most 8 KiB (414); unknown paths 404, wrong methods 405 with `Allow`.
 *
 * HEAD: every GET route answers HEAD as it answers GET, without the body (load balancers and
 * `curl -I` probe `/healthz` and `/readyz` so). On an event stream it checks the token, the
 * operation and the stream limit, and opens no stream: a HEAD on `/events` is how the dashboard
 * tells "signed out" (401) from "offline".
 *
 * Shutdown: `/readyz` turns 503 first, then whatever the caller stops (the gRPC server and the
 * engine), then every open stream ends and the listener closes.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import type { Engine } from "../engine/mod.ts";
import { NotFoundError } from "../model/errors.ts";
import { bearerToken, createTokenMatcher } from "../runtime/token.ts";
import { DASHBOARD_ASSETS } from "./dashboard_assets.ts";
import { DashboardFeed, type DashboardFeedOptions } from "./dashboard_feed.ts";
import type { HttpRoute } from "./route.ts";
import { feedStream, logStream } from "./sse.ts";

const logger = getLogger(["bmdemo", "http"]);

/** The cookie a signed-in browser carries. */
export const SESSION_COOKIE = "bmdemo_session";

/** Default of {@linkcode HttpSurfaceOptions.maxBodyBytes}: 64 KiB. */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/** Longest request URL accepted, in characters. */
export const MAX_URL_LENGTH = 8 * 1024;

/** Options of {@linkcode startHttpSurface}. */
export interface HttpSurfaceOptions {
  /** The engine the gRPC server serves (composed by the caller). */
  engine: Engine;
  /** Address to listen on (the server's `--host`). @default "127.0.0.1" */
  host?: string;
  /** Port; 0 picks a free one. @default 0 */
  port?: number;
  /** Certificate chain and key (PEM contents): HTTPS. @default plain HTTP */
  tls?: { cert: string; key: string };
  /** The server's token; required by every non-public route when set. Never logged. */
  authToken?: string;
  /** Most SSE streams open at once (the server's `--max-watchers`). @default 1000 */
  maxStreams?: number;
  /** Largest request body accepted. @default {@linkcode DEFAULT_MAX_BODY_BYTES} */
  maxBodyBytes?: number;
  /** Milliseconds between keep-alive comments on an idle stream. @default 15000 */
  heartbeatMs?: number;
  /** Routes mounted beside the built-in ones (metrics, netboot). */
  routes?: readonly HttpRoute[];
  /**
   * Called when an SSE stream opens; the handle it returns is disposed when the stream ends
   * (the metrics count dashboards among `bmdemo_watchers`).
   */
  onStream?: () => Disposable;
  /** Options of the dashboard's change feed. */
  feed?: DashboardFeedOptions;
}

/** Options of {@linkcode HttpSurface.shutdown}. */
export interface HttpShutdownOptions {
  /**
   * What to stop after `/readyz` turned 503 and before the streams end (the gRPC server and the
   * engine), so browsers still see the operations it cancels.
   */
  before?: () => Promise<void>;
}

/** A running HTTP surface. */
export interface HttpSurface extends AsyncDisposable {
  /** The port it listens on. */
  readonly port: number;
  /** The dashboard's URL, e.g. `http://127.0.0.1:8080/`. */
  readonly url: string;
  /** The sign-in link (the URL with `?token=`) when a token is set. Contains the token. */
  readonly signInUrl: string | undefined;
  /** Whether `/readyz` answers 200. */
  readonly ready: boolean;
  /** SSE streams open now. */
  readonly streamCount: number;
  /** Turns `/readyz` 503 (the first step of shutdown); idempotent. */
  stopServing(): void;
  /** Shuts the surface down (see the module documentation); idempotent. */
  shutdown(options?: HttpShutdownOptions): Promise<void>;
}

/** A built-in or mounted route, matched by pattern. */
interface Route {
  method: "GET" | "POST";
  match: (path: string) => string[] | undefined;
  access: "token" | "public";
  handle: (request: Request, params: string[]) => Response | Promise<Response>;
}

function exact(path: string): (candidate: string) => string[] | undefined {
  return (candidate) => candidate === path ? [] : undefined;
}

/** The methods a route's method allows: a GET route answers HEAD too. */
function allowed(method: Route["method"]): string[] {
  return method === "GET" ? ["GET", "HEAD"] : [method];
}

function text(status: number, body: string, headers: HeadersInit = {}): Response {
  return new Response(`${body}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/**
 * The cookie value a browser gets for `token`: a digest, so the cookie never holds the token.
 *
 * @param token The server's token.
 * @returns The cookie value.
 */
function sessionValue(token: string): string {
  return createHash("sha256").update(`bmdemo dashboard session\0${token.trim()}`).digest("hex");
}

function cookieValue(request: Request, name: string): string | undefined {
  for (const part of (request.headers.get("cookie") ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

const OPERATION_LOGS = /^\/operations\/([^/]+)\/logs$/;
const OPERATION_ID = /^[A-Za-z0-9._-]{1,128}$/;

/**
 * Starts the HTTP surface and resolves once it listens.
 *
 * @param options Engine, address, TLS, token, bounds, mounted routes.
 * @returns The running surface.
 * @throws {TypeError} When two routes share a method and path, or a path is not exact.
 * @throws {Deno.errors.AddrInUse} When the port is taken (and other bind errors).
 *
 * @example
 * ```ts ignore
 * await using http = await startHttpSurface({ engine, port: 0 });
 * console.log(http.url);
 * ```
 */
export async function startHttpSurface(options: HttpSurfaceOptions): Promise<HttpSurface> {
  const engine = options.engine;
  const host = options.host ?? "127.0.0.1";
  const maxStreams = options.maxStreams ?? 1000;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const token = options.authToken?.trim() || undefined;
  const matchesToken = token === undefined ? undefined : createTokenMatcher(token);
  const session = token === undefined ? undefined : sessionValue(token);
  const matchesSession = session === undefined ? undefined : createTokenMatcher(session);
  const secure = options.tls !== undefined;
  const stopping = new AbortController();
  let ready = true;
  let streams = 0;
  const feed = new DashboardFeed(engine, options.feed);

  /** Opens an SSE stream; on a HEAD, only answers as the GET would (no stream is opened). */
  function openStream(
    request: Request,
    build: (onEnd: () => void) => ReadableStream<Uint8Array>,
  ): Response {
    if (streams >= maxStreams) {
      return text(
        503,
        `Too many open event streams (${maxStreams}, the server's --max-watchers): close a dashboard tab or retry later`,
        { "retry-after": "5" },
      );
    }
    const headers = {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    };
    if (request.method === "HEAD") return new Response(null, { headers });
    streams++;
    const tracked = options.onStream?.();
    const body = build(() => {
      streams--;
      tracked?.[Symbol.dispose]();
    });
    return new Response(body, { headers });
  }

  const routes: Route[] = [
    ...Object.entries(DASHBOARD_ASSETS).map(([path, asset]): Route => ({
      method: "GET",
      match: exact(path),
      access: "token",
      handle: () =>
        new Response(asset.body, {
          headers: {
            "content-type": asset.type,
            "cache-control": "no-store",
            // The page loads only its own files and talks only to this server.
            "content-security-policy": "default-src 'self'; img-src 'self' data:; " +
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "referrer-policy": "no-referrer",
          },
        }),
    })),
    {
      method: "GET",
      match: exact("/events"),
      access: "token",
      handle: (request) =>
        openStream(
          request,
          (onEnd) =>
            feedStream(feed, feed.resume(request.headers.get("last-event-id")), {
              signal: stopping.signal,
              heartbeatMs,
              onEnd,
            }),
        ),
    },
    {
      method: "GET",
      match: (path) => {
        const match = OPERATION_LOGS.exec(path);
        return match ? [match[1]] : undefined;
      },
      access: "token",
      handle: (request, [raw]) => {
        let operationId: string;
        try {
          operationId = decodeURIComponent(raw);
        } catch {
          return text(400, "Malformed operation id in the path (bad percent-encoding)");
        }
        if (!OPERATION_ID.test(operationId)) {
          return text(
            400,
            "Malformed operation id: letters, digits, '.', '_' and '-', 1 to 128 of them",
          );
        }
        try {
          engine.getOperation(operationId);
        } catch (error) {
          if (error instanceof NotFoundError) {
            return text(404, `No operation "${operationId}" (it may have been pruned)`);
          }
          throw error;
        }
        const last = Number(request.headers.get("last-event-id") ?? "0");
        return openStream(request, (onEnd) =>
          logStream(engine, operationId, {
            signal: stopping.signal,
            heartbeatMs,
            onEnd,
            afterSeq: Number.isSafeInteger(last) && last > 0 ? last : 0,
          }));
      },
    },
    {
      method: "GET",
      match: exact("/healthz"),
      access: "public",
      handle: () => text(200, "ok"),
    },
    {
      method: "GET",
      match: exact("/readyz"),
      access: "public",
      handle: () => ready ? text(200, "ready") : text(503, "shutting down"),
    },
  ];
  const seen = new Set(["GET /", "GET /events", "GET /healthz", "GET /readyz"]);
  for (const route of options.routes ?? []) {
    if (!/^\/[A-Za-z0-9._~\/-]*$/.test(route.path) || route.path.includes("//")) {
      throw new TypeError(`Route path must be an exact path such as /metrics: got "${route.path}"`);
    }
    const key = `${route.method} ${route.path}`;
    if (seen.has(key) || OPERATION_LOGS.test(route.path) || route.path in DASHBOARD_ASSETS) {
      throw new TypeError(`Route ${key} is mounted twice (or shadows a built-in route)`);
    }
    seen.add(key);
    routes.push({
      method: route.method,
      match: exact(route.path),
      access: route.access,
      handle: (request) => route.handle(request),
    });
  }

  function authorize(request: Request): Response | undefined {
    if (matchesToken === undefined) return undefined;
    const header = request.headers.get("authorization");
    if (header !== null) {
      const presented = bearerToken(header);
      if (presented !== undefined && matchesToken(presented)) return undefined;
      return unauthorized("the token is not valid");
    }
    const cookie = cookieValue(request, SESSION_COOKIE);
    if (cookie !== undefined && matchesSession!(cookie)) return undefined;
    return unauthorized("this server requires a token");
  }

  function unauthorized(what: string): Response {
    return text(
      401,
      `${what}: open the sign-in link bmdemo-server printed at start (the dashboard URL with ` +
        `?token=<token>), or send "Authorization: Bearer <token>"`,
      { "www-authenticate": 'Bearer realm="bmdemo"' },
    );
  }

  /** `?token=` on a GET: a valid one becomes the session cookie and a redirect to the clean URL. */
  function signIn(url: URL): Response {
    const presented = url.searchParams.get("token") ?? "";
    if (matchesToken === undefined || !matchesToken(presented)) {
      return matchesToken === undefined
        ? text(400, "This server has no token: open the URL without ?token=")
        : unauthorized("the token in the link is not valid");
    }
    url.searchParams.delete("token");
    const location = `${url.pathname}${url.search}`;
    return new Response(null, {
      status: 303,
      headers: {
        location,
        "set-cookie": `${SESSION_COOKIE}=${session}; Path=/; HttpOnly; SameSite=Strict${
          secure ? "; Secure" : ""
        }`,
        "cache-control": "no-store",
        "referrer-policy": "no-referrer",
      },
    });
  }

  function checkBody(request: Request): Response | undefined {
    const length = request.headers.get("content-length");
    const chunked = request.headers.has("transfer-encoding");
    if (request.method === "GET" || request.method === "HEAD") {
      if (chunked || (length !== null && length !== "0")) {
        return text(400, `A ${request.method} request carries no body`);
      }
      return undefined;
    }
    if (length === null) {
      return chunked || request.body !== null
        ? text(411, "Send the body with a Content-Length")
        : undefined;
    }
    if (!/^\d+$/.test(length)) return text(400, "Malformed Content-Length");
    if (Number(length) > maxBodyBytes) {
      return text(413, `Request body too large: at most ${maxBodyBytes} bytes`);
    }
    return undefined;
  }

  async function handle(request: Request): Promise<Response> {
    if (request.url.length > MAX_URL_LENGTH) {
      return text(414, `URL too long: at most ${MAX_URL_LENGTH} characters`);
    }
    const url = new URL(request.url);
    const path = url.pathname;
    const matched = routes
      .map((route) => ({ route, params: route.match(path) }))
      .filter((entry) => entry.params !== undefined);
    if (matched.length === 0) return text(404, `Not found: ${path}`);
    const head = request.method === "HEAD";
    const hit = matched.find((entry) => entry.route.method === (head ? "GET" : request.method));
    if (!hit) {
      const allow = [...new Set(matched.flatMap(({ route }) => allowed(route.method)))].join(", ");
      return text(405, `Method ${request.method} not allowed on ${path}: use ${allow}`, { allow });
    }
    const refused = checkBody(request);
    if (refused) return refused;
    if (hit.route.access === "token") {
      if ((request.method === "GET" || head) && url.searchParams.has("token")) return signIn(url);
      const denied = authorize(request);
      if (denied) return denied;
    }
    try {
      return await hit.route.handle(request, hit.params!);
    } catch (error) {
      logger.error("{method} {path} failed: {error}", {
        method: request.method,
        path,
        error: error instanceof Error ? error.message : String(error),
      });
      return text(500, "Internal error (see the server log)");
    }
  }

  /** The answer to a HEAD: the GET's status and headers, its length, no body. */
  async function withoutBody(response: Response): Promise<Response> {
    if (response.body === null) return response;
    const streaming = response.headers.get("content-type")?.startsWith("text/event-stream");
    const headers = new Headers(response.headers);
    if (streaming) {
      await response.body.cancel();
    } else {
      headers.set("content-length", String((await response.arrayBuffer()).byteLength));
    }
    return new Response(null, {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  }

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: host,
    port: options.port ?? 0,
    ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
    onError: (error) => {
      logger.error("HTTP handler failed: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
      return text(500, "Internal error (see the server log)");
    },
  }, async (request) => {
    const answer = await handle(request);
    const response = request.method === "HEAD" ? await withoutBody(answer) : answer;
    response.headers.set("x-content-type-options", "nosniff");
    if (logger.isEnabledFor("debug")) {
      logger.debug("HTTP {method} {path} {status}", {
        method: request.method,
        path: new URL(request.url).pathname,
        status: response.status,
      });
    }
    return response;
  });
  const addr = await listening.promise;
  const shown = host.includes(":") ? `[${host}]` : host;
  const url = `${secure ? "https" : "http"}://${shown}:${addr.port}/`;

  let shutdown: Promise<void> | undefined;
  function stop(shutdownOptions: HttpShutdownOptions = {}): Promise<void> {
    shutdown ??= (async () => {
      ready = false;
      try {
        await shutdownOptions.before?.();
      } finally {
        stopping.abort();
        feed.close();
        await server.shutdown();
      }
    })();
    return shutdown;
  }

  return {
    port: addr.port,
    url,
    signInUrl: token === undefined ? undefined : `${url}?token=${encodeURIComponent(token)}`,
    get ready() {
      return ready;
    },
    get streamCount() {
      return streams;
    },
    stopServing() {
      ready = false;
    },
    shutdown: stop,
    [Symbol.asyncDispose]: () => stop(),
  };
}
