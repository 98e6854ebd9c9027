/**
 * Restart recovery: what happens at start to operations a previous process left PENDING or
 * RUNNING (it crashed, or was killed, instead of stopping gracefully).
 *
 * Rule: each of them becomes FAILED with code {@linkcode INTERRUPTED} (retryable), its machine
 * gets NeedsIntervention (reason `OperationInterrupted`) and is no longer busy, one
 * `Operation interrupted: <message>` event is published, and a last journal line is written
 * before the journal ends. Nothing is resumed: a hardware step is not known to be safe to
 * interrupt halfway and repeat (the same reason as the shutdown rule), so an operator checks the
 * machine and starts the operation again. A replay of the request id returns the FAILED
 * operation, as it would for any finished operation.
 *
 * With the in-memory store there is never anything to recover (a restart starts clean).
 *
 * @module
 */

import { INTERRUPTED, type OperationFailure } from "../model/lifecycle.ts";
import { Operation_Phase as OperationPhase } from "../gen/baremetal/v1/baremetal_pb.ts";
import { finish, type TerminalDeps } from "./terminal.ts";

/** The message of an interrupted operation's error. */
export const INTERRUPTED_MESSAGE =
  "the server restarted while this operation was active; it was not resumed because its steps " +
  "are not known to be safe to repeat: check the machine, then start the operation again";

/** The error an interrupted operation ends with. */
export function interruptedFailure(): OperationFailure {
  return { code: INTERRUPTED, message: INTERRUPTED_MESSAGE, retryable: true, details: {} };
}

/** What {@linkcode recoverInterrupted} did. */
export interface RecoveryResult {
  /** Ids of the operations failed as INTERRUPTED, in creation order. */
  operationIds: string[];
  /** How long recovery took, in milliseconds. */
  ms: number;
}

/**
 * Fails every active operation of `store` as INTERRUPTED (see the module documentation). Call it
 * once at start, before the executor runs anything.
 *
 * @param deps The store, and the feeds to tell.
 * @returns The recovered operations and the time taken.
 */
export function recoverInterrupted(
  deps: TerminalDeps,
): RecoveryResult {
  const start = performance.now();
  const operationIds: string[] = [];
  const error = interruptedFailure();
  for (const active of deps.store.activeOperations()) {
    const id = active.operationId;
    const ended = finish(deps, id, { phase: OperationPhase.FAILED, error }, { interrupted: true });
    if (ended.changed) operationIds.push(id);
  }
  return { operationIds, ms: performance.now() - start };
}
