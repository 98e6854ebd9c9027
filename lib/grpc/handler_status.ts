/**
 * The status a call ends with when its handler fails: the {@linkcode ToStatus} mapping a service
 * injects (the domain's is in `./status.ts`), its fallback {@linkcode defaultToStatus}, and the
 * funnel {@linkcode statusOf} that guarantees a failure is never reported as `OK`.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";

/** The status a failed call ends with. */
export interface GrpcStatus {
  /** The gRPC status code; never `OK` for a failure (it is replaced by `INTERNAL`). */
  code: grpc.status;
  /** The message the client receives as `details`. */
  details: string;
  /** Trailing metadata sent with the status. */
  metadata?: grpc.Metadata;
}

/** Turns anything a handler throws into the status its call ends with. */
export type ToStatus = (err: unknown) => GrpcStatus;

/**
 * Maps any thrown value to `INTERNAL`, with the error's message as details.
 *
 * @param err What the handler threw.
 * @returns `INTERNAL` with `err.message`, or a description of a thrown non-`Error` value.
 *
 * @example
 * ```ts ignore
 * defaultToStatus(new Error("boom")); // { code: grpc.status.INTERNAL, details: "boom" }
 * ```
 */
export function defaultToStatus(err: unknown): GrpcStatus {
  const details = err instanceof Error
    ? err.message
    : `Handler failed with a non-Error value: ${describeValue(err)}`;
  return { code: grpc.status.INTERNAL, details };
}

function describeValue(value: unknown): string {
  try {
    return typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    // e.g. an object whose toString throws, or a null-prototype object
    return typeof value;
  }
}

/**
 * The name of a status code, e.g. `NOT_FOUND`, for logs and metric labels.
 *
 * @param code A gRPC status code.
 * @returns Its name, or `UNKNOWN` for a number that is no status code.
 */
export function statusName(code: grpc.status): string {
  return grpc.status[code] ?? "UNKNOWN";
}

/**
 * The one place a thrown value becomes the status grpc-js sends.
 *
 * @param err What the handler threw.
 * @param toStatus The service's mapping; if it throws or answers `OK`, {@linkcode defaultToStatus}
 * is used instead.
 * @returns The status object grpc-js sends.
 */
export function statusOf(err: unknown, toStatus: ToStatus): grpc.StatusObject {
  let status: GrpcStatus;
  try {
    status = toStatus(err);
  } catch {
    status = defaultToStatus(err);
  }
  // Guards a mapping written without types: a failure must never be reported as OK.
  if (typeof status?.code !== "number" || status.code === grpc.status.OK) {
    status = defaultToStatus(err);
  }
  return {
    code: status.code,
    details: status.details,
    metadata: status.metadata ?? new grpc.Metadata(),
  };
}
