/**
 * The one comparison of a presented secret with the server's token, shared by the gRPC and HTTP
 * surfaces: constant time whatever was sent (it compares SHA-256 digests), and the token never
 * leaves the returned function.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Creates the check of a presented token against `token`.
 *
 * @param token The server's token; leading and trailing whitespace is ignored.
 * @returns A function telling whether a presented token (trimmed) is the token.
 * @throws {TypeError} If `token` is empty.
 *
 * @example
 * ```ts
 * const matches = createTokenMatcher("s3cret");
 * matches("s3cret"); // true
 * matches("guess"); // false
 * ```
 */
export function createTokenMatcher(token: string): (presented: string) => boolean {
  const expected = token.trim();
  if (expected === "") throw new TypeError("Cannot check calls against an empty token");
  const expectedDigest = digest(expected);
  // Digests have the same length whatever the input, so the comparison takes the same time
  // whatever the token sent, and a wrong token reveals nothing of the right one.
  return (presented) => timingSafeEqual(digest(presented.trim()), expectedDigest);
}

/**
 * The token of an `authorization` value of the form `Bearer <token>` (scheme case-insensitive).
 *
 * @param value The header or metadata value.
 * @returns The token, or `undefined` when the value is not a bearer credential.
 *
 * @example
 * ```ts
 * bearerToken("Bearer s3cret"); // "s3cret"
 * bearerToken("Basic abc"); // undefined
 * ```
 */
export function bearerToken(value: string): string | undefined {
  return /^Bearer\s+(.+)$/i.exec(value.trim())?.[1].trim();
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
