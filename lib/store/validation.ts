/**
 * The checks of what a store is asked to write: a registered machine, a patch, and a create
 * request (checked by the engine before it reaches the store, see
 * {@linkcode ValidCreateRequest}). Each throws a typed
 * {@linkcode InvalidArgumentError} that names the field and the fix, before anything changes.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../model/errors.ts";
import { type Machine, MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
import { OPERATION_TYPES, operationVerb } from "../model/lifecycle.ts";
import {
  checkLabels,
  checkLength,
  checkMachineId,
  checkMachineSize,
  checkSpec,
  LIMITS,
  missingField,
} from "./limits.ts";
import type { CreateOperationRequest, MachinePatch, ValidCreateRequest } from "./mod.ts";

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
 * Checks the shape of a create request, once, where it enters the domain (before the shutdown
 * check passes it to the store); the store then trusts it.
 *
 * @param request The request, parameters normalised.
 * @returns The same request, typed as checked.
 * @throws {InvalidArgumentError} `MISSING_FIELD` for a missing machine_id or request_id,
 * `LIMIT_EXCEEDED` or `INVALID_FORMAT` for a field outside {@linkcode LIMITS}, or an unknown type.
 */
export function validateCreateRequest(request: CreateOperationRequest): ValidCreateRequest {
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
  return request as ValidCreateRequest;
}
