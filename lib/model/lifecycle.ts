/**
 * Pure lifecycle rules: effective state, condition upserts, phase gates and the effects an
 * operation's outcome has on its machine. No I/O, no clock (time is a parameter), no gRPC.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type Condition,
  ConditionSchema,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";

/** Names of the conditions bmdemo reads or writes. */
export type ConditionType =
  | "Reachable"
  | "InCustomerCluster"
  | "NeedsIntervention"
  | "Healthy"
  | "Provisioned"
  | "OperationCanceled"
  | "RMA"
  | "Retired";

/** A condition to set: its new status and why. */
export interface ConditionUpdate {
  /** Condition name. */
  type: ConditionType;
  /** New status. */
  status: boolean;
  /** Machine-readable reason, UpperCamelCase. */
  reason: string;
  /** Human-readable detail. */
  message: string;
}

/** The machine fields effective state is derived from. */
export interface EffectiveStateInput {
  /** The machine's phase. */
  phase: MachinePhase;
  /** The machine's conditions. */
  conditions: readonly Condition[];
  /** The PENDING or RUNNING operation on the machine, or empty. */
  activeOperationId: string;
}

/**
 * Upserts a condition by type, returning a new list (the input is not changed).
 * `last_transition_time` is set when the condition appears and changes only when its status
 * flips; reason and message are always replaced. New conditions are appended.
 *
 * @param conditions Current conditions.
 * @param update The condition to set.
 * @param now Current time.
 * @returns The new list.
 *
 * @example
 * ```ts
 * import { timestampNow } from "@bufbuild/protobuf/wkt";
 * const next = setCondition([], { type: "Provisioned", status: true, reason: "ReimageComplete", message: "" }, timestampNow());
 * ```
 */
export function setCondition(
  conditions: readonly Condition[],
  update: ConditionUpdate,
  now: Timestamp,
): Condition[] {
  const index = conditions.findIndex((c) => c.type === update.type);
  const previous = index === -1 ? undefined : conditions[index];
  const next = create(ConditionSchema, {
    ...update,
    lastTransitionTime: previous && previous.status === update.status
      ? previous.lastTransitionTime
      : now,
  });
  if (index === -1) return [...conditions, next];
  const copy = [...conditions];
  copy[index] = next;
  return copy;
}

/**
 * Returns the condition of the given type, if present.
 *
 * @param conditions Conditions to search.
 * @param type Condition name.
 * @returns The condition or `undefined`.
 */
export function getCondition(
  conditions: readonly Condition[],
  type: ConditionType,
): Condition | undefined {
  return conditions.find((c) => c.type === type);
}

/**
 * Whether a condition is present with the given status (a missing condition never matches).
 *
 * @param conditions Conditions to search.
 * @param type Condition name.
 * @param status Status to match; `true` by default.
 * @returns `true` when the condition is present with that status.
 */
export function hasCondition(
  conditions: readonly Condition[],
  type: ConditionType,
  status = true,
): boolean {
  return getCondition(conditions, type)?.status === status;
}

/**
 * Computes what a machine is doing now, with the seed's precedence: BLOCKED (RMA or Retired),
 * ATTENTION (NeedsIntervention), BUSY (an active operation), MAINTENANCE_IDLE, NEW, IDLE.
 *
 * @param machine Phase, conditions and active operation of the machine.
 * @returns The effective state.
 *
 * @example
 * ```ts
 * import { MachineStatus_Phase } from "../gen/baremetal/v1/baremetal_pb.ts";
 * effectiveState({ phase: MachineStatus_Phase.READY, conditions: [], activeOperationId: "" }); // IDLE
 * ```
 */
export function effectiveState(machine: EffectiveStateInput): EffectiveState {
  const { phase, conditions, activeOperationId } = machine;
  if (hasCondition(conditions, "Retired") || hasCondition(conditions, "RMA")) {
    return EffectiveState.BLOCKED;
  }
  if (hasCondition(conditions, "NeedsIntervention")) return EffectiveState.ATTENTION;
  if (activeOperationId !== "") return EffectiveState.BUSY;
  if (phase === MachinePhase.MAINTENANCE) return EffectiveState.MAINTENANCE_IDLE;
  if (phase === MachinePhase.FACTORY_READY) return EffectiveState.NEW;
  return EffectiveState.IDLE;
}

/**
 * Whether an operation phase is terminal (SUCCEEDED, FAILED or CANCELED).
 *
 * @param phase Operation phase.
 * @returns `true` for terminal phases.
 */
export function isTerminalPhase(phase: OperationPhase): boolean {
  return phase === OperationPhase.SUCCEEDED || phase === OperationPhase.FAILED ||
    phase === OperationPhase.CANCELED;
}

/**
 * Whether an operation phase is active (PENDING or RUNNING).
 *
 * @param phase Operation phase.
 * @returns `true` for active phases.
 */
export function isActivePhase(phase: OperationPhase): boolean {
  return phase === OperationPhase.PENDING || phase === OperationPhase.RUNNING;
}

/** The operation types bmdemo can run, i.e. every type but UNSPECIFIED. */
export const OPERATION_TYPES: readonly OperationType[] = [
  OperationType.REBOOT,
  OperationType.REIMAGE,
  OperationType.ENTER_MAINTENANCE,
  OperationType.EXIT_MAINTENANCE,
];

/**
 * The CLI verb of an operation type, e.g. `enter-maintenance`.
 *
 * @param type Operation type.
 * @returns The verb.
 */
export function operationVerb(type: OperationType): string {
  switch (type) {
    case OperationType.REBOOT:
      return "reboot";
    case OperationType.REIMAGE:
      return "reimage";
    case OperationType.ENTER_MAINTENANCE:
      return "enter-maintenance";
    case OperationType.EXIT_MAINTENANCE:
      return "exit-maintenance";
    default:
      return `operation type ${type}`;
  }
}

const ALLOWED_PHASES: ReadonlyMap<OperationType, readonly MachinePhase[]> = new Map([
  [OperationType.REBOOT, [MachinePhase.READY, MachinePhase.MAINTENANCE]],
  [OperationType.REIMAGE, [MachinePhase.MAINTENANCE]],
  [OperationType.ENTER_MAINTENANCE, [
    MachinePhase.PHASE_UNSPECIFIED,
    MachinePhase.FACTORY_READY,
    MachinePhase.READY,
    MachinePhase.MAINTENANCE,
  ]],
  [OperationType.EXIT_MAINTENANCE, [MachinePhase.MAINTENANCE]],
]);

/**
 * Returns why an operation of `type` may not start on a machine in `phase`, or `undefined` when
 * it may. The message states the current phase and the requirement, as the original's does;
 * what to run instead is the client's hint (the `ErrorInfo` carries the phase).
 *
 * @param type Operation type.
 * @param machine The machine's id and phase.
 * @returns The refusal message or `undefined`.
 *
 * @example
 * ```ts
 * import { MachineStatus_Phase, Operation_OperationType } from "../gen/baremetal/v1/baremetal_pb.ts";
 * gateRefusal(Operation_OperationType.REIMAGE, { machineId: "machine-2", phase: MachineStatus_Phase.FACTORY_READY });
 * // 'machine "machine-2" is in phase FACTORY_READY; reimage requires MAINTENANCE'
 * ```
 */
export function gateRefusal(
  type: OperationType,
  machine: { machineId: string; phase: MachinePhase },
): string | undefined {
  const allowed = ALLOWED_PHASES.get(type);
  if (allowed === undefined || allowed.includes(machine.phase)) return undefined;
  const required = allowed.map((p) => MachinePhase[p]).join(" or ");
  return `machine "${machine.machineId}" is in phase ${MachinePhase[machine.phase]}; ${
    operationVerb(type)
  } requires ${required}`;
}

/** Why an operation was canceled. */
export type CancelCause = "user" | "shutdown";

/** How an operation ended. */
export type Outcome =
  | { phase: OperationPhase.SUCCEEDED }
  | { phase: OperationPhase.FAILED; error: OperationFailure }
  | { phase: OperationPhase.CANCELED; cause: CancelCause };

/** Why an operation failed: the content of its `ErrorStatus`. */
export interface OperationFailure {
  /** Stable code, e.g. `EXECUTION_FAILED`, `STEP_TIMEOUT`. */
  code: string;
  /** Human-readable message. */
  message: string;
  /** Whether running the operation again may succeed. */
  retryable: boolean;
  /** Extra facts, e.g. the failing step. */
  details: Record<string, string>;
}

/**
 * Error code of an operation that was PENDING or RUNNING when the server stopped without its
 * graceful shutdown (a crash): restart recovery fails it with this code, and its machine gets
 * NeedsIntervention with reason `OperationInterrupted`.
 */
export const INTERRUPTED = "INTERRUPTED";

/** Changes an outcome makes to its machine, applied atomically with the terminal transition. */
export interface MachineEffects {
  /** New phase, when the operation changes it. */
  phase?: MachinePhase;
  /** Conditions to upsert, in order. */
  conditions: ConditionUpdate[];
  /** Whether the machine was just seen reachable (sets `last_seen`). */
  seen: boolean;
}

/**
 * The effects an operation's outcome has on its machine (seed "Key Design Decisions" 3 and
 * reference 3.5): success clears NeedsIntervention and OperationCanceled, maintenance
 * operations set the phase, reimage sets Provisioned and InCustomerCluster, and a successful
 * reboot or reimage proves the machine Reachable. Failure sets NeedsIntervention; cancellation
 * sets OperationCanceled. Failures and cancellations never change the phase. A failure with code
 * {@linkcode INTERRUPTED} (restart recovery) uses the reason `OperationInterrupted`.
 *
 * @param type The operation's type.
 * @param outcome How it ended.
 * @returns The machine effects.
 */
export function outcomeEffects(type: OperationType, outcome: Outcome): MachineEffects {
  switch (outcome.phase) {
    case OperationPhase.FAILED:
      return {
        conditions: [{
          type: "NeedsIntervention",
          status: true,
          reason: outcome.error.code === INTERRUPTED ? "OperationInterrupted" : "OperationFailed",
          message: outcome.error.message,
        }],
        seen: false,
      };
    case OperationPhase.CANCELED:
      return {
        conditions: [{
          type: "OperationCanceled",
          status: true,
          reason: outcome.cause === "user" ? "UserCanceled" : "ServerShutdown",
          message: outcome.cause === "user"
            ? "Operation was canceled by user"
            : "Operation was canceled because the server shut down",
        }],
        seen: false,
      };
    case OperationPhase.SUCCEEDED:
      return successEffects(type);
  }
}

function successEffects(type: OperationType): MachineEffects {
  const conditions: ConditionUpdate[] = [
    { type: "NeedsIntervention", status: false, reason: "OperationSucceeded", message: "" },
    { type: "OperationCanceled", status: false, reason: "OperationSucceeded", message: "" },
  ];
  switch (type) {
    case OperationType.ENTER_MAINTENANCE:
      return { phase: MachinePhase.MAINTENANCE, conditions, seen: false };
    case OperationType.EXIT_MAINTENANCE:
      return { phase: MachinePhase.READY, conditions, seen: false };
    case OperationType.REBOOT:
      conditions.push(reachable("RebootComplete", "Machine came back online after reboot"));
      return { conditions, seen: true };
    case OperationType.REIMAGE:
      conditions.push(
        {
          type: "Provisioned",
          status: true,
          reason: "ReimageComplete",
          message: "Machine successfully reimaged",
        },
        {
          type: "InCustomerCluster",
          status: true,
          reason: "JoinVerified",
          message: "Node joined and verified in cluster",
        },
        reachable("ReimageComplete", "Machine booted the new image"),
      );
      return { conditions, seen: true };
    default:
      return { conditions, seen: false };
  }
}

function reachable(reason: string, message: string): ConditionUpdate {
  return { type: "Reachable", status: true, reason, message };
}
