/**
 * The client side's one table of status code names: connect's `Code` enum, whose names are
 * exactly Go's `codes.Code` strings (`NotFound`, `Canceled`, ...), the ones the CLI prints.
 *
 * @module
 */

import { Code } from "@connectrpc/connect";

export { Code };

/**
 * The name of a status code as Go prints it.
 *
 * @param code A status code, e.g. `Code.NotFound` (5).
 * @returns Its name, e.g. `NotFound`; `Code(N)` for a code outside the spec.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(codeName(5), "NotFound");
 * assert.equal(codeName(0), "OK");
 * ```
 */
export function codeName(code: number): string {
  return code === 0 ? "OK" : (Code[code] ?? `Code(${code})`);
}
