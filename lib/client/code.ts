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

/**
 * The name of a status code as the gRPC spec writes it (the benchmarks' and load test's
 * reports): `codeName` in UPPER_SNAKE, where the spec alone spells CANCELLED with two Ls.
 *
 * @param code A status code, e.g. `Code.FailedPrecondition` (9).
 * @returns Its name, e.g. `FAILED_PRECONDITION`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(statusName(9), "FAILED_PRECONDITION");
 * assert.equal(statusName(1), "CANCELLED");
 * ```
 */
export function statusName(code: number): string {
  const name = codeName(code).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  return name === "CANCELED" ? "CANCELLED" : name;
}
