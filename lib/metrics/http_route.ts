/**
 * The `/metrics` route the HTTP surface serves: the exposition text of a registry, behind the
 * token like every route that shows the server's state.
 *
 * @module
 */

/**
 * A route of the HTTP surface. This is the same interface as `HttpRoute` of
 * `lib/http/route.ts` (the web surface's extension point), written out here so that the metrics
 * layer does not depend on the surface; TypeScript's structural typing makes the two one.
 */
export interface HttpRoute {
  /** The one method the route answers; the surface answers 405 to the others. */
  readonly method: "GET" | "POST";
  /** The exact path, e.g. `/metrics`. */
  readonly path: string;
  /** `token`: the surface checks the bearer token (or its cookie) before `handle` runs. */
  readonly access: "token" | "public";
  /** Answers a request the surface has already matched and checked. */
  handle(request: Request): Response | Promise<Response>;
}

/** The content type of the Prometheus text exposition format, version 0.0.4. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** What the route renders: a registry's exposition text. */
export interface Exposition {
  /** The text of every metric, collected now. */
  metrics(): Promise<string>;
}

/**
 * The `/metrics` route: GET, token required, the registry's text rendered per request.
 *
 * @param registry What to render (a prom-client `Registry`).
 * @returns The route.
 *
 * @example
 * ```ts
 * const route = metricsRoute({ metrics: () => Promise.resolve("up 1\n") });
 * const response = await route.handle(new Request("http://localhost/metrics"));
 * await response.text(); // "up 1\n"
 * ```
 */
export function metricsRoute(registry: Exposition): HttpRoute {
  return {
    method: "GET",
    path: "/metrics",
    access: "token",
    async handle(): Promise<Response> {
      try {
        return new Response(await registry.metrics(), {
          headers: { "content-type": EXPOSITION_CONTENT_TYPE, "cache-control": "no-store" },
        });
      } catch (error) {
        // A collector that fails must not look like an empty scrape: Prometheus marks the
        // target down (up == 0) on a 5xx and keeps the error in its target page.
        const message = error instanceof Error ? error.message : String(error);
        return new Response(`collecting the metrics failed: ${message}\n`, {
          status: 500,
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      }
    },
  };
}
