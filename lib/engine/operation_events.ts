/**
 * The operation event vocabulary: every event the engine publishes or a watch yields is built
 * here, its message text and its structured fields (`kind`, `step`, `step_index`, `step_count`,
 * `attempt`, `detail`) together, so the two cannot drift. The texts are the original's wire
 * contract and stay byte-identical for clients that read only `message`; new clients read the
 * fields.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import {
  type Operation,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationEvent_Kind as EventKind,
  OperationEventSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";

/** What an event says about its operation: the message and the structured fields. */
export interface EventChange {
  /** The message text, as the original sent it. */
  message: string;
  /** The kind of change. @default UNSPECIFIED */
  kind?: EventKind;
  /** STEP_* kinds: the step's name. */
  step?: string;
  /** STEP_* kinds: the step's 1-based position in its plan. */
  stepIndex?: number;
  /** STEP_* kinds: the number of steps in the plan. */
  stepCount?: number;
  /** STEP_SUCCEEDED and STEP_FAILED: the attempt that ended the step, 1-based. */
  attempt?: number;
  /** STEP_FAILED and a failed TERMINAL: why. */
  detail?: string;
}

/** Where a step stands in its plan. */
export interface StepPosition {
  /** The step's name. */
  step: string;
  /** 1-based position. */
  stepIndex: number;
  /** Steps in the plan. */
  stepCount: number;
}

/** Message of the event that ends an initial snapshot; it carries no operation. */
export const SNAPSHOT_COMPLETE = "Snapshot complete";

/** The operation was admitted. @returns The change. */
export function createdChange(): EventChange {
  return { message: "Operation created", kind: EventKind.CREATED };
}

/** The executor took the operation. @returns The change. */
export function startedChange(): EventChange {
  return { message: "Operation started", kind: EventKind.STARTED };
}

/**
 * A step started.
 *
 * @param position The step and where it stands in its plan.
 * @returns The change.
 */
export function stepStartedChange(position: StepPosition): EventChange {
  return { message: `Step ${position.step} started`, kind: EventKind.STEP_STARTED, ...position };
}

/**
 * A step succeeded.
 *
 * @param position The step and where it stands in its plan.
 * @param attempt The attempt that succeeded, 1-based.
 * @returns The change.
 */
export function stepSucceededChange(position: StepPosition, attempt: number): EventChange {
  return {
    message: `Step ${position.step} succeeded`,
    kind: EventKind.STEP_SUCCEEDED,
    ...position,
    attempt,
  };
}

/**
 * A step failed after its last attempt.
 *
 * @param position The step and where it stands in its plan.
 * @param failure The last attempt's number and error message.
 * @returns The change.
 */
export function stepFailedChange(
  position: StepPosition,
  failure: { attempt: number; message: string },
): EventChange {
  return {
    message: `Step ${position.step} failed: ${failure.message}`,
    kind: EventKind.STEP_FAILED,
    ...position,
    attempt: failure.attempt,
    detail: failure.message,
  };
}

/** How an operation ended, as {@linkcode terminalChange} words it. */
export type TerminalCause =
  | { phase: OperationPhase.SUCCEEDED }
  | { phase: OperationPhase.FAILED; message: string; interrupted?: boolean }
  | { phase: OperationPhase.CANCELED };

/**
 * The operation ended.
 *
 * @param cause Its terminal phase (and, for FAILED, the message and whether restart recovery
 * ended it).
 * @returns The change.
 */
export function terminalChange(cause: TerminalCause): EventChange {
  const kind = EventKind.TERMINAL;
  switch (cause.phase) {
    case OperationPhase.SUCCEEDED:
      return { message: "Operation succeeded", kind };
    case OperationPhase.CANCELED:
      return { message: "Operation canceled", kind };
    case OperationPhase.FAILED: {
      const verb = cause.interrupted ? "interrupted" : "failed";
      return { message: `Operation ${verb}: ${cause.message}`, kind, detail: cause.message };
    }
  }
}

/**
 * The event of an active operation in a watch's initial snapshot.
 *
 * @param operation The operation.
 * @returns The event.
 */
export function snapshotEvent(operation: Operation): OperationEvent {
  return create(OperationEventSchema, {
    ts: timestampNow(),
    snapshot: operation,
    message: "Snapshot",
    kind: EventKind.SNAPSHOT,
  });
}

/**
 * The event that ends a watch's initial snapshot: the sync point after which every change
 * arrives as a live event.
 *
 * @returns The event (without an operation).
 */
export function snapshotCompleteEvent(): OperationEvent {
  return create(OperationEventSchema, {
    ts: timestampNow(),
    message: SNAPSHOT_COMPLETE,
    kind: EventKind.SNAPSHOT_COMPLETE,
  });
}
