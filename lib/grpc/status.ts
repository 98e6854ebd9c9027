/**
 * The one place where failures become gRPC statuses: every domain error code maps to a status
 * through an exhaustive table (a new code is a type error until it is mapped), an aborted call
 * becomes CANCELLED, and anything unknown becomes INTERNAL and is logged. Every status carries
 * a `google.rpc.Status` with an `ErrorInfo` (reason, domain `bmdemo`, ids) in its trailer.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { getLogger } from "@logtape/logtape";
import { BmdemoError, type ErrorCode } from "../model/errors.ts";
import { UnauthenticatedError } from "./auth.ts";
import { STATUS_DETAILS_KEY, statusDetailsBytes } from "./error_details.ts";
import type { GrpcStatus } from "./handler_status.ts";
import { MalformedRequestError } from "./service_definition.ts";

const logger = getLogger(["bmdemo", "grpc"]);

/** The gRPC status of each domain error code. */
export const GRPC_STATUS: Readonly<Record<ErrorCode, grpc.status>> = Object.freeze({
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  failed_precondition: grpc.status.FAILED_PRECONDITION,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  unavailable: grpc.status.UNAVAILABLE,
  internal: grpc.status.INTERNAL,
});

/**
 * Maps anything a handler throws to the status its call ends with.
 *
 * @param error What the handler threw.
 * @returns The status: the domain error's code and message; CANCELLED for an aborted call;
 * INTERNAL (logged with its stack) for anything else.
 *
 * @example
 * ```ts
 * import { NotFoundError } from "../model/errors.ts";
 * toGrpcStatus(new NotFoundError('machine "m" not found', { reason: "MACHINE_NOT_FOUND" }));
 * // { code: 5 (NOT_FOUND), details: 'machine "m" not found' }
 * ```
 */
export function toGrpcStatus(error: unknown): GrpcStatus {
  if (error instanceof BmdemoError) {
    return withDetails(GRPC_STATUS[error.code], error.message, error.reason, error.metadata);
  }
  if (error instanceof UnauthenticatedError) {
    return withDetails(grpc.status.UNAUTHENTICATED, error.message, error.reason, {});
  }
  if (error instanceof MalformedRequestError) {
    return withDetails(grpc.status.INVALID_ARGUMENT, error.message, "MALFORMED_REQUEST", {
      messageType: error.typeName,
    });
  }
  if (error instanceof DOMException && error.name === "AbortError") {
    return withDetails(grpc.status.CANCELLED, "the call was cancelled", "CANCELLED", {});
  }
  logger.error("Unexpected error in a handler: {error}", {
    error: error instanceof Error ? error.stack ?? error.message : String(error),
  });
  return withDetails(
    grpc.status.INTERNAL,
    `internal error: ${error instanceof Error ? error.message : String(error)}`,
    "INTERNAL",
    {},
  );
}

function withDetails(
  code: grpc.status,
  message: string,
  reason: string,
  metadata: Readonly<Record<string, string>>,
): GrpcStatus {
  const trailers = new grpc.Metadata();
  trailers.set(
    STATUS_DETAILS_KEY,
    Buffer.from(statusDetailsBytes({ code, message, reason, metadata })),
  );
  return { code, details: message, metadata: trailers };
}
