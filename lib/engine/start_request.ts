/**
 * A request to start an operation, as the API receives it, and its one check at the edge of the
 * domain: defaults filled in, then shape, limits and ids validated once
 * ({@linkcode validateStartRequest}), giving the typed value the store trusts.
 *
 * @module
 */

import { Operation_OperationType as OperationType } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { ValidCreateRequest } from "../store/mod.ts";
import { validateCreateRequest } from "../store/validation.ts";
import { DEFAULT_IMAGE_REF } from "./plans.ts";

/** A request to start an operation, as the API receives it. */
export interface StartOperationRequest {
  /** Machine to act on. */
  machineId: string;
  /** Idempotency key. */
  requestId: string;
  /** Operation type. */
  type: OperationType;
  /** REIMAGE: image to write; {@linkcode DEFAULT_IMAGE_REF} when empty. */
  imageRef?: string;
  /** REBOOT: power-cycle instead of a graceful reboot. */
  force?: boolean;
}

/**
 * The parameters an operation stores: REIMAGE always records its image (default filled in), a
 * forced REBOOT records `force=true`, other types have none. Defaults are filled in before the
 * idempotency check, so "no image" and the default image are the same request.
 *
 * @param request The request.
 * @returns The parameters.
 */
export function operationParams(request: StartOperationRequest): Record<string, string> {
  switch (request.type) {
    case OperationType.REIMAGE:
      return { image_ref: request.imageRef || DEFAULT_IMAGE_REF };
    case OperationType.REBOOT:
      return request.force ? { force: "true" } : {};
    default:
      return {};
  }
}

/**
 * Checks a start request once, where it enters the domain: ids present and well-formed, a known
 * type, every field within the limits.
 *
 * @param request The request.
 * @returns The store's create request, parameters normalised, typed as checked.
 * @throws {InvalidArgumentError} `MISSING_FIELD`, `LIMIT_EXCEEDED`, `INVALID_FORMAT`, or an
 * unknown type.
 */
export function validateStartRequest(request: StartOperationRequest): ValidCreateRequest {
  const params = operationParams(request);
  return validateCreateRequest({
    machineId: request.machineId,
    requestId: request.requestId,
    type: request.type,
    params,
  });
}
