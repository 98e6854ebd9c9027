/**
 * The extension point of the HTTP surface: a route another part of bmdemo mounts beside the
 * dashboard (metrics mounts `/metrics`; hardware netboot mounts `/boot/ipxe` and `/boot/report`).
 * The surface matches the exact path and method, checks the token for `access: "token"`, bounds
 * the request's size, and answers 404 and 405 itself.
 *
 * @module
 */

/**
 * A route mounted on the HTTP surface (`startHttpSurface({ routes })`).
 *
 * @example
 * ```ts
 * const hello: HttpRoute = {
 *   method: "GET",
 *   path: "/hello",
 *   access: "public",
 *   handle: () => new Response("hello\n"),
 * };
 * ```
 */
export interface HttpRoute {
  /** The method it answers; another method on its path gets 405. */
  readonly method: "GET" | "POST";
  /** The exact path, e.g. `/metrics` (no pattern, no trailing slash, no query). */
  readonly path: string;
  /**
   * `token`: needs the server's token (cookie or `Authorization: Bearer`) when one is configured;
   * `public`: anyone who can reach the port (health, machines booting from the network).
   */
  readonly access: "token" | "public";
  /** Answers the request; a POST body is at most the surface's body limit. */
  handle(request: Request): Response | Promise<Response>;
}
