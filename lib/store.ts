/**
 * The Store contract: where machines, operations and the idempotency index live, and the rules
 * every implementation must enforce atomically. The in-memory implementation is in
 * `memory_store.ts`; the contract tests in `test/store_contract.ts` run against any
 * implementation unchanged.
 *
 * Every method is synchronous and atomic: a store call is one critical section with no `await`
 * inside it, so no other call can interleave with it. Values returned are immutable snapshots
 * (deeply frozen): a caller that wants to change something asks the store to.
 *
 * This module also holds the pure helpers implementations share (request validation, the
 * idempotency fingerprint, applying an outcome's effects to a machine). It knows nothing of gRPC.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "./errors.ts";
import {
  type Machine,
  MachineSchema,
  type MachineSpec,
  MachineStatus_Phase as MachinePhase,
  MachineStatusSchema,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "./gen/baremetal/v1/baremetal_pb.ts";
import { newMachineId } from "./ids.ts";
import {
  type CancelCause,
  effectiveState,
  gateRefusal,
  type MachineEffects,
  OPERATION_TYPES,
  operationVerb,
  type Outcome,
  setCondition,
} from "./lifecycle.ts";
import {
  checkLabels,
  checkLength,
  checkMachineId,
  checkMachineSize,
  checkSpec,
  LIMITS,
} from "./limits.ts";
import type { ListQuery, Page } from "./query.ts";
import type { RetentionPolicy } from "./retention.ts";

export type { ListQuery, Page } from "./query.ts";
export { freezeSnapshot } from "./immutable.ts";
export {
  checkLabels,
  checkMachineId,
  checkOperationId,
  LABEL_KEY_PATTERN,
  LIMITS,
  MACHINE_ID_PATTERN,
} from "./limits.ts";

/** Input of {@linkcode Store.createOperation}. */
export interface CreateOperationRequest {
  /** Machine to act on. */
  machineId: string;
  /** Client idempotency key, unique per machine. */
  requestId: string;
  /** Operation type; UNSPECIFIED or unknown values are refused. */
  type: OperationType;
  /** Parameters, already normalised (defaults filled in). */
  params?: Record<string, string>;
}

/** Result of {@linkcode Store.createOperation}. */
export interface CreateOperationResult {
  /** The new operation, or the original one on a replay. */
  operation: Operation;
  /** `false` when the request was a replay of an earlier one. */
  created: boolean;
}

/** Result of {@linkcode Store.registerMachine}. */
export interface RegisterMachineResult {
  /** The machine as stored. */
  machine: Machine;
  /** `false` when the id existed and only spec and labels were updated. */
  created: boolean;
}

/** Result of {@linkcode Store.cancelOperation}. */
export interface CancelOperationResult {
  /** The operation, CANCELED. */
  operation: Operation;
  /** `false` when it was already CANCELED (nothing changed). */
  changed: boolean;
}

/** Client-owned machine fields {@linkcode Store.updateMachine} may replace. */
export interface MachinePatch {
  /** New spec; unchanged when `undefined`. */
  spec?: MachineSpec;
  /** New labels; unchanged when `undefined`. */
  labels?: Record<string, string>;
}

/**
 * Entry counts of a store's in-memory structures (for tests and diagnostics): with retention
 * they stay bounded by the policy, whatever the history. Index counts include entries that
 * are no longer live but not yet compacted away.
 */
export interface StoreSizes {
  /** Machines. */
  machines: number;
  /** Operations held (active and finished). */
  operations: number;
  /** Finished operations held. */
  finished: number;
  /** Active (PENDING or RUNNING) operations. */
  active: number;
  /** Idempotency keys. */
  requestKeys: number;
  /** Machines with an entry in the per-machine operation index. */
  indexedMachines: number;
  /** Entries of every operation index together (creation order, machine, phase, type). */
  indexEntries: number;
}

/** Persistence of machines and operations with atomic lifecycle transitions. */
export interface Store {
  /**
   * Creates a machine, or updates the spec and labels of an existing one (never its status).
   * A new machine starts in `status.phase` FACTORY_READY (default) or READY.
   * @throws {InvalidArgumentError} For any other initial phase.
   */
  registerMachine(machine: Machine): RegisterMachineResult;
  /** Returns a machine. @throws {NotFoundError} `MACHINE_NOT_FOUND`. */
  getMachine(machineId: string): Machine;
  /** Lists machines in registration order. @throws {InvalidArgumentError} For a bad filter or token. */
  listMachines(query: ListQuery): Page<Machine>;
  /** Replaces spec and/or labels, nothing else. @throws {NotFoundError} `MACHINE_NOT_FOUND`. */
  updateMachine(machineId: string, patch: MachinePatch): Machine;
  /**
   * Creates an operation atomically: idempotency lookup first (a replay returns the original
   * whatever happened since), then machine existence, phase gate, single active operation, then
   * insert and mark the machine busy.
   * @throws {InvalidArgumentError} Missing fields, unknown type, or `REQUEST_ID_REUSED`.
   * @throws {NotFoundError} `MACHINE_NOT_FOUND`.
   * @throws {FailedPreconditionError} `PHASE_PRECONDITION` or `MACHINE_BUSY`.
   */
  createOperation(request: CreateOperationRequest): CreateOperationResult;
  /** Returns an operation. @throws {NotFoundError} `OPERATION_NOT_FOUND`. */
  getOperation(operationId: string): Operation;
  /** Lists operations in creation order. @throws {InvalidArgumentError} For a bad filter or token. */
  listOperations(query: ListQuery): Page<Operation>;
  /** Every PENDING or RUNNING operation, in creation order. */
  activeOperations(): Operation[];
  /** Moves PENDING to RUNNING (compare-and-set); `undefined` if it was not PENDING. */
  markRunning(operationId: string): Operation | undefined;
  /** Sets `current_stage` of a RUNNING operation; `undefined` if it is not RUNNING. */
  setStage(operationId: string, stage: string): Operation | undefined;
  /**
   * Moves an active operation to its terminal phase and applies the outcome's effects to its
   * machine in the same step; `undefined` when the operation was already terminal (another
   * outcome won the race; terminal phases never change).
   */
  finishOperation(operationId: string, outcome: Outcome): Operation | undefined;
  /**
   * Cancels an operation: PENDING or RUNNING becomes CANCELED with its machine effects; an
   * already CANCELED one is returned unchanged.
   * @throws {NotFoundError} `OPERATION_NOT_FOUND`.
   * @throws {FailedPreconditionError} `OPERATION_FINISHED` for SUCCEEDED or FAILED.
   */
  cancelOperation(operationId: string, cause: CancelCause): CancelOperationResult;
  /**
   * Removes at most `limit` finished operations that fall outside `policy` (beyond the newest
   * `maxOperations` finished ones, or finished more than `maxAgeMs` ago by the store's clock),
   * oldest first, with their idempotency keys and (in a durable store) their log lines. Active
   * operations are never removed. A replay of a removed operation's request id creates a new
   * operation; a page token issued before stays valid.
   *
   * @returns The removed operations.
   */
  pruneOperations(policy: RetentionPolicy, limit: number): Operation[];
  /** Entry counts of the in-memory structures (see {@linkcode StoreSizes}). */
  sizes(): StoreSizes;
}

/**
 * Builds the stored form of a newly registered machine: the client's spec and labels, a
 * server-owned status with the permitted initial phase.
 *
 * @param input The machine from the request.
 * @param now Current time (unused today; kept so every constructor takes the clock).
 * @returns The machine to store, not yet frozen.
 * @throws {InvalidArgumentError} When the initial phase is not FACTORY_READY or READY.
 */
export function newMachine(input: Machine, now: Timestamp): Machine {
  void now;
  const requested = input.status?.phase ?? MachinePhase.PHASE_UNSPECIFIED;
  const phase = requested === MachinePhase.PHASE_UNSPECIFIED
    ? MachinePhase.FACTORY_READY
    : requested;
  validateMachine(input);
  const machineId = input.machineId === "" ? newMachineId() : input.machineId;
  if (phase !== MachinePhase.FACTORY_READY && phase !== MachinePhase.READY) {
    throw new InvalidArgumentError(
      `Cannot register machine "${machineId}" in phase ${
        MachinePhase[phase] ?? phase
      }: a new machine starts in FACTORY_READY or READY`,
      { metadata: { machineId } },
    );
  }
  return withEffectiveState(create(MachineSchema, {
    machineId,
    spec: input.spec,
    labels: { ...input.labels },
    status: create(MachineStatusSchema, { phase, conditions: [], activeOperationId: "" }),
  }));
}

/**
 * Checks the client-owned fields of a machine a client registers: its id (when set; an empty
 * id gets a generated one), labels, spec and encoded size, against {@linkcode LIMITS}. Call it
 * before any change, for new and existing ids alike.
 *
 * @param input The machine from the request.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` or `INVALID_FORMAT`.
 */
export function validateMachine(input: Machine): void {
  if (input.machineId !== "") checkMachineId(input.machineId);
  checkLabels(input.labels, input.machineId);
  checkSpec(input.spec, input.machineId);
  checkMachineSize(input);
}

/**
 * Checks a patch of {@linkcode Store.updateMachine} (the id, the new labels and spec) before
 * any lookup.
 *
 * @param machineId The machine.
 * @param patch The patch.
 * @throws {InvalidArgumentError} `MISSING_FIELD`, `LIMIT_EXCEEDED` or `INVALID_FORMAT`.
 */
export function validatePatch(machineId: string, patch: MachinePatch): void {
  if (machineId === "") throw missingField("machine_id", "machine_id is required");
  checkMachineId(machineId);
  if (patch.labels) checkLabels(patch.labels, machineId);
  checkSpec(patch.spec, machineId);
  checkMachineSize(create(MachineSchema, { machineId, spec: patch.spec, labels: patch.labels }));
}

/**
 * Checks the machine an update would store: the patch merged with the stored machine. The
 * patch itself passed {@linkcode validatePatch}, so what breaks a limit here is the part kept
 * from the stored machine (written before the limit existed, or too big next to the new part);
 * the refusal says so, and that the update must replace that part.
 *
 * @param updated The stored machine with the patch applied.
 * @param patch The patch.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` or `INVALID_FORMAT`, with the metadata of the
 * limit broken.
 */
export function validateUpdated(updated: Machine, patch: MachinePatch): void {
  try {
    validateMachine(updated);
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error;
    const kept = [patch.spec ? "" : "spec", patch.labels ? "" : "labels"].filter(Boolean);
    if (kept.length === 0) throw error;
    const part = kept.join(" and ");
    throw new InvalidArgumentError(
      `Cannot update machine "${updated.machineId}": with its stored ${part} kept it would break a limit (${error.message}); send new ${part} within the limits in this update (a machine stored before the limit existed is fixed this way)`,
      { reason: error.reason, metadata: { ...error.metadata, machineId: updated.machineId } },
    );
  }
}

/**
 * The error for a required field left empty.
 *
 * @param field The request field, e.g. `machine_id`.
 * @param message What is missing and how to fix it.
 * @param metadata Other ids involved.
 * @returns An {@linkcode InvalidArgumentError} with reason `MISSING_FIELD` and metadata `field`.
 */
export function missingField(
  field: string,
  message: string,
  metadata: Record<string, string> = {},
): InvalidArgumentError {
  return new InvalidArgumentError(message, {
    reason: "MISSING_FIELD",
    metadata: { ...metadata, field },
  });
}

/**
 * The phase gate as an error: `undefined` when an operation of `type` may start on `machine`,
 * else `PHASE_PRECONDITION` with metadata `machineId`, `phase`, `operationType` and
 * `requiredPhases` (comma-separated phase names).
 *
 * @param type The operation type.
 * @param machine The machine as stored.
 * @returns The error, or `undefined`.
 */
export function phasePrecondition(
  type: OperationType,
  machine: Machine,
): FailedPreconditionError | undefined {
  const phase = machine.status?.phase ?? MachinePhase.PHASE_UNSPECIFIED;
  const refusal = gateRefusal(type, { machineId: machine.machineId, phase });
  if (refusal === undefined) return undefined;
  const required = Object.values(MachinePhase)
    .filter((p): p is MachinePhase => typeof p === "number")
    .filter((p) =>
      p !== MachinePhase.PHASE_UNSPECIFIED &&
      gateRefusal(type, { machineId: machine.machineId, phase: p }) === undefined
    )
    .map((p) => MachinePhase[p]);
  return new FailedPreconditionError(refusal, {
    reason: "PHASE_PRECONDITION",
    metadata: {
      machineId: machine.machineId,
      phase: MachinePhase[phase] ?? String(phase),
      operationType: OperationType[type] ?? String(type),
      requiredPhases: required.join(","),
    },
  });
}

/**
 * Returns a copy of `machine` with `status.effective_state` recomputed from its other fields.
 *
 * @param machine A machine with a status.
 * @returns The updated copy.
 */
export function withEffectiveState(machine: Machine): Machine {
  const status = machine.status ?? create(MachineStatusSchema);
  return {
    ...machine,
    status: { ...status, effectiveState: effectiveState(status) },
  };
}

/**
 * Applies an outcome's machine effects: conditions, phase, `last_seen`, and clears the active
 * operation when it is the one that finished. Spec and labels are left as they are.
 *
 * @param machine The machine as stored now.
 * @param change The finished operation's id and the effects to apply.
 * @returns The updated machine, not yet frozen.
 */
export function applyEffects(
  machine: Machine,
  change: { operationId: string; effects: MachineEffects; now: Timestamp },
): Machine {
  const status = machine.status ?? create(MachineStatusSchema);
  let conditions = status.conditions;
  for (const update of change.effects.conditions) {
    conditions = setCondition(conditions, update, change.now);
  }
  return withEffectiveState({
    ...machine,
    status: {
      ...status,
      phase: change.effects.phase ?? status.phase,
      conditions,
      lastSeen: change.effects.seen ? change.now : status.lastSeen,
      activeOperationId: status.activeOperationId === change.operationId
        ? ""
        : status.activeOperationId,
    },
  });
}

/**
 * Checks the shape of a create request before any lookup.
 *
 * @param request The request.
 * @throws {InvalidArgumentError} `MISSING_FIELD` for a missing machine_id or request_id,
 * `LIMIT_EXCEEDED` or `INVALID_FORMAT` for a field outside {@linkcode LIMITS}, or an unknown type.
 */
export function validateCreateRequest(request: CreateOperationRequest): void {
  if (request.machineId === "") throw missingField("machine_id", "machine_id is required");
  checkMachineId(request.machineId);
  const ids = { machineId: request.machineId };
  if (request.requestId === "") {
    throw missingField(
      "request_id",
      "request_id is required for idempotency: send a fresh UUID and reuse it only to retry",
      ids,
    );
  }
  checkLength(
    "request_id",
    request.requestId,
    LIMITS.requestIdLength,
    "use a shorter idempotency key, e.g. a UUID (36 characters)",
    ids,
  );
  if (!OPERATION_TYPES.includes(request.type)) {
    throw new InvalidArgumentError(
      `Cannot create an operation of type ${request.type}: use REBOOT, REIMAGE, ENTER_MAINTENANCE or EXIT_MAINTENANCE`,
      { metadata: { ...ids, field: "type" } },
    );
  }
  const imageRef = request.params?.image_ref;
  if (imageRef !== undefined) {
    checkLength(
      "image_ref",
      imageRef,
      LIMITS.imageRefLength,
      `use a shorter image reference for this ${operationVerb(request.type)}`,
      ids,
    );
  }
}

/**
 * Checks that a replayed request asks for what the original asked for.
 *
 * @param original The operation the idempotency key points at.
 * @param request The new request with the same key.
 * @throws {InvalidArgumentError} `REQUEST_ID_REUSED` naming the original request.
 */
export function checkReplay(original: Operation, request: CreateOperationRequest): void {
  const params = request.params ?? {};
  if (original.type === request.type && sameParams(original.params, params)) return;
  const described = Object.keys(original.params).length === 0
    ? "no parameters"
    : Object.keys(original.params).sort().map((k) => `${k}=${original.params[k]}`).join(", ");
  throw new InvalidArgumentError(
    `request_id "${request.requestId}" was used for a ${
      OperationType[original.type]
    } of ${original.machineId} with ${described}; use a new request_id for a different request`,
    {
      reason: "REQUEST_ID_REUSED",
      metadata: {
        machineId: original.machineId,
        requestId: request.requestId,
        operationId: original.operationId,
      },
    },
  );
}

function sameParams(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/**
 * The error for a machine id that is not registered.
 *
 * @param machineId The id.
 * @returns The error.
 */
export function machineNotFound(machineId: string): NotFoundError {
  return new NotFoundError(
    `machine "${machineId}" not found; list machines with bmdemo-cli list or register it first`,
    { reason: "MACHINE_NOT_FOUND", metadata: { machineId } },
  );
}

/**
 * The error for an operation id that does not exist.
 *
 * @param operationId The id.
 * @returns The error.
 */
export function operationNotFound(operationId: string): NotFoundError {
  return new NotFoundError(
    `operation "${operationId}" not found; list operations with bmdemo-cli ops`,
    { reason: "OPERATION_NOT_FOUND", metadata: { operationId } },
  );
}

/**
 * The error for a second operation on a busy machine.
 *
 * @param active The machine's active operation.
 * @returns The error.
 */
export function machineBusy(active: Operation): FailedPreconditionError {
  return new FailedPreconditionError(
    `machine "${active.machineId}" is busy with operation ${active.operationId} (${
      OperationType[active.type]
    }, ${
      OperationPhase[active.phase]
    }); wait for it to finish or cancel it (bmdemo-cli cancel ${active.operationId})`,
    {
      reason: "MACHINE_BUSY",
      metadata: { machineId: active.machineId, activeOperationId: active.operationId },
    },
  );
}

/**
 * The error for cancelling an operation that already SUCCEEDED or FAILED.
 *
 * @param operation The finished operation.
 * @returns The error.
 */
export function operationFinished(operation: Operation): FailedPreconditionError {
  return new FailedPreconditionError(
    `operation "${operation.operationId}" already finished with phase ${
      OperationPhase[operation.phase]
    }; there is nothing to cancel`,
    {
      reason: "OPERATION_FINISHED",
      metadata: { operationId: operation.operationId, phase: OperationPhase[operation.phase] },
    },
  );
}

/**
 * Converts a clock reading into a protobuf timestamp.
 *
 * @param now A clock.
 * @returns The current time as a timestamp.
 */
export function stamp(now: () => Date): Timestamp {
  return timestampFromDate(now());
}
