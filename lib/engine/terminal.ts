/**
 * The one way an operation ends, used by the executor (success, failure), cancel (user and
 * shutdown) and restart recovery. Order: the store's compare-and-set applies the terminal phase
 * with its machine effects atomically, then the log banner is written, then the journal ends,
 * then exactly one terminal event is published. So an observer never sees a terminal event
 * before the machine reflects it, a log reader gets the banner as the last line, and when two
 * outcomes race only the winner writes or publishes anything.
 *
 * @module
 */

import type { Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import { Operation_Phase as OperationPhase } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { Outcome } from "../model/lifecycle.ts";
import type { Store } from "../store/mod.ts";
import type { EventFeed } from "./events.ts";
import type { LogJournal } from "./log_journal.ts";
import { terminalChange } from "./operation_events.ts";
import type { LogStream } from "../provider/mod.ts";

/** What ending an operation touches. */
export interface TerminalDeps {
  /** Applies the terminal phase (compare-and-set). */
  store: Store;
  /** Receives the terminal event. */
  events: EventFeed;
  /** Receives the banner, then ends. */
  logs: LogJournal;
}

/** Options of {@linkcode finish}. */
export interface FinishOptions {
  /** A FAILED outcome set by restart recovery: the event says `Operation interrupted: ...`. */
  interrupted?: boolean;
}

/** What {@linkcode finish} did. */
export type FinishResult =
  /** This call ended the operation. */
  | { changed: true; operation: Operation }
  /**
   * Nothing changed: another outcome won (`operation` unset), or a cancel found the operation
   * already CANCELED (`operation` is it).
   */
  | { changed: false; operation?: Operation };

/**
 * Ends an operation with `outcome` unless it already ended (see the module documentation).
 *
 * @param deps Store, event feed and log journal.
 * @param operationId The operation.
 * @param outcome SUCCEEDED, FAILED with its error, or CANCELED with its cause.
 * @param options Whether a FAILED outcome is restart recovery's.
 * @returns Whether this call ended it, and the operation.
 * @throws {NotFoundError} CANCELED only: `OPERATION_NOT_FOUND`.
 * @throws {FailedPreconditionError} CANCELED only: `OPERATION_FINISHED` (SUCCEEDED or FAILED).
 */
export function finish(
  deps: TerminalDeps,
  operationId: string,
  outcome: Outcome,
  options: FinishOptions = {},
): FinishResult {
  let operation: Operation | undefined;
  if (outcome.phase === OperationPhase.CANCELED) {
    // Cancel tells the caller what is wrong (not found, already finished) rather than losing.
    const canceled = deps.store.cancelOperation(operationId, outcome.cause);
    if (!canceled.changed) return { changed: false, operation: canceled.operation };
    operation = canceled.operation;
  } else {
    operation = deps.store.finishOperation(operationId, outcome);
    if (!operation) return { changed: false };
  }
  const [banner, stream] = bannerOf(outcome);
  deps.logs.append(operationId, banner, stream);
  deps.logs.end(operationId);
  deps.events.publish(
    operation,
    terminalChange(
      outcome.phase === OperationPhase.FAILED
        ? { phase: outcome.phase, message: outcome.error.message, interrupted: options.interrupted }
        : { phase: outcome.phase },
    ),
  );
  return { changed: true, operation };
}

/** The last line of an ended operation's log, and its stream. */
function bannerOf(outcome: Outcome): [string, LogStream] {
  switch (outcome.phase) {
    case OperationPhase.SUCCEEDED:
      return ["=== Operation SUCCEEDED ===", "stdout"];
    case OperationPhase.FAILED:
      return [`=== Operation FAILED: ${outcome.error.message} ===`, "stderr"];
    case OperationPhase.CANCELED:
      return [
        outcome.cause === "user"
          ? "=== Operation CANCELED ==="
          : "=== Operation CANCELED: the server is shutting down ===",
        "stdout",
      ];
  }
}
