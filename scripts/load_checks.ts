/**
 * What a load run must satisfy: the events a SUCCEEDED operation publishes, the errors racing
 * clients may get, and the check that a watcher saw exactly every event. Shared by
 * `scripts/load.ts` and the tests that drive it.
 *
 * @module
 */

import type { Operation_OperationType as OperationType } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { BUILTIN_PLANS } from "../lib/engine/plans.ts";

/** Events of a SUCCEEDED operation: created, started, started/succeeded per step, terminal. */
export function succeededEventCount(type: OperationType): number {
  return 3 + 2 * (BUILTIN_PLANS.get(type)?.steps.length ?? 0);
}

/** Errors expected when clients race on their own machines. */
export const EXPECTED_REASONS: readonly string[] = ["MACHINE_BUSY", "PHASE_PRECONDITION"];

/** What one watcher saw. */
export interface WatcherResult {
  /** Events per operation id. */
  perOperation: Map<string, number>;
  /** Events in total. */
  events: number;
  /** The error that ended it, e.g. RESOURCE_EXHAUSTED when it fell behind. */
  error?: string;
}

/**
 * Compares what a watcher saw with the expected events per operation.
 *
 * @param watcher The watcher.
 * @param expected Events per operation id.
 * @returns One line per mismatch (empty when it saw exactly every event).
 */
export function watcherMismatches(
  watcher: WatcherResult,
  expected: ReadonlyMap<string, number>,
): string[] {
  const wrong: string[] = [];
  for (const [id, count] of expected) {
    const seen = watcher.perOperation.get(id) ?? 0;
    if (seen !== count) wrong.push(`${id}: expected ${count} events, saw ${seen}`);
  }
  for (const id of watcher.perOperation.keys()) {
    if (!expected.has(id)) wrong.push(`${id}: unexpected events`);
  }
  return wrong;
}
