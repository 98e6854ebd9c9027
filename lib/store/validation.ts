/**
 * The checks a store runs on what it is asked to write: a registered machine, a patch, a create
 * request, and whether a replayed request id matches its original. Each throws a typed
 * {@linkcode InvalidArgumentError} that names the field and the fix, before anything changes.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../model/errors.ts";
import {
  type Machine,
  MachineSchema,
  type Operation,
  Operation_OperationType as OperationType,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { OPERATION_TYPES, operationVerb } from "../model/lifecycle.ts";
import {
  checkLabels,
  checkLength,
  checkMachineId,
  checkMachineSize,
  checkSpec,
  LIMITS,
} from "./limits.ts";
import type { CreateOperationRequest, MachinePatch } from "./mod.ts";

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
