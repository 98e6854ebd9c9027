/**
 * Bearer-token authentication of gRPC calls, and the exposure rule of the server.
 *
 * - {@linkcode createTokenCheck} checks the `authorization: Bearer <token>` metadata of a call
 *   against the configured token (`lib/runtime/token.ts`, shared with the HTTP surface) and
 *   throws an {@linkcode UnauthenticatedError} that says how to pass the token. The token is
 *   never put in an error message or a log line.
 * - {@linkcode isLoopbackHost} tells whether a `--host` keeps the server on this machine.
 *
 * This module knows nothing of the domain; `status.ts` maps {@linkcode UnauthenticatedError} to
 * `UNAUTHENTICATED` with an `ErrorInfo` whose reason is `UNAUTHENTICATED`.
 *
 * @module
 */

import type * as grpc from "@grpc/grpc-js";
import { bearerToken, createTokenMatcher } from "../runtime/token.ts";

/** The `ErrorInfo.reason` of a call refused for a missing or wrong token. */
export const UNAUTHENTICATED_REASON = "UNAUTHENTICATED";

/** The metadata key that carries the token. */
export const AUTHORIZATION_KEY = "authorization";

/** How a client passes the token; part of every {@linkcode UnauthenticatedError} message. */
// The CLI adds its own hint (its flags, under the name it was invoked by), so this names the
// protocol only.
export const TOKEN_HINT = "pass it as metadata `authorization: Bearer <token>`";

/** A call without the right bearer token; mapped to `UNAUTHENTICATED` by `status.ts`. */
export class UnauthenticatedError extends Error {
  /** Stable reason a client can branch on. */
  readonly reason: typeof UNAUTHENTICATED_REASON = UNAUTHENTICATED_REASON;

  /**
   * @param message What is wrong and how to fix it; must never contain a token.
   */
  constructor(message: string) {
    super(message);
    this.name = "UnauthenticatedError";
  }
}

/**
 * Creates the check of one call's metadata against `token`.
 *
 * @param token The token every call must carry; leading and trailing whitespace is ignored.
 * @returns A function that returns when the metadata carries `authorization: Bearer <token>`
 * and throws an {@linkcode UnauthenticatedError} otherwise.
 * @throws {TypeError} If `token` is empty.
 *
 * @example
 * ```ts
 * import * as grpc from "@grpc/grpc-js";
 * const check = createTokenCheck("s3cret");
 * const metadata = new grpc.Metadata();
 * metadata.set("authorization", "Bearer s3cret");
 * check(metadata); // passes
 * ```
 */
export function createTokenCheck(token: string): (metadata: grpc.Metadata) => void {
  const matches = createTokenMatcher(token);
  return (metadata) => {
    const values = metadata.get(AUTHORIZATION_KEY);
    if (values.length === 0) {
      throw new UnauthenticatedError(`this server requires a token: ${TOKEN_HINT}`);
    }
    const presented = bearerToken(String(values[0]));
    if (presented === undefined || !matches(presented)) {
      throw new UnauthenticatedError(`the token is not valid: ${TOKEN_HINT}`);
    }
  };
}

/**
 * Whether `host` is a loopback address or name: `localhost`, `127.0.0.0/8` or `::1`.
 *
 * @param host A `--host` value, with or without IPv6 brackets.
 * @returns `true` when a server bound to it is reachable from this machine only.
 *
 * @example
 * ```ts
 * isLoopbackHost("127.0.0.1"); // true
 * isLoopbackHost("0.0.0.0"); // false
 * ```
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (bare === "localhost" || bare === "::1" || bare === "0:0:0:0:0:0:0:1") return true;
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(bare);
  return v4 !== null && v4.slice(1).every((part) => Number(part) <= 255);
}
