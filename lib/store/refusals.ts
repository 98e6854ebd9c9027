/**
 * The typed refusals a store answers with inside its atomic section: not found, busy, finished,
 * phase precondition, a request id reused for another request. One place for their reasons,
 * messages and metadata, shared by the Store implementations.
 *
 * @module
 */

import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../model/errors.ts";
import {
  type Machine,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { gateRefusal } from "../model/lifecycle.ts";
import type { ValidCreateRequest } from "./mod.ts";

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
 * The error for a machine id that is not registered.
 *
 * @param machineId The id.
 * @returns The error.
 */
export function machineNotFound(machineId: string): NotFoundError {
  return new NotFoundError(
    `machine "${machineId}" not found`,
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
    `operation "${operationId}" not found`,
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
    }, ${OperationPhase[active.phase]})`,
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
 * Checks that a replayed request asks for what the original asked for.
 *
 * @param original The operation the idempotency key points at.
 * @param request The new request with the same key.
 * @throws {InvalidArgumentError} `REQUEST_ID_REUSED` naming the original request.
 */
export function checkReplay(original: Operation, request: ValidCreateRequest): void {
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
