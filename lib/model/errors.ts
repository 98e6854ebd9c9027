/**
 * Typed domain errors. Every failure the domain reports to a caller is one of these values: a
 * closed `code` (mapped to a gRPC status in exactly one place, `lib/grpc/status.ts`), a stable
 * UPPER_SNAKE `reason` a client can branch on, and `metadata` naming the ids involved.
 *
 * This module knows nothing of gRPC.
 *
 * @module
 */

/** The closed set of error classes the domain can report. */
export type ErrorCode =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "unavailable"
  | "internal";

/** Stable, machine-readable reasons; each is documented in docs/api.md ("Errors"). */
export type ErrorReason =
  | "INVALID_ARGUMENT"
  | "MISSING_FIELD"
  | "LIMIT_EXCEEDED"
  | "INVALID_FORMAT"
  | "INVALID_FILTER"
  | "INVALID_PAGE_TOKEN"
  | "REQUEST_ID_REUSED"
  | "MACHINE_NOT_FOUND"
  | "OPERATION_NOT_FOUND"
  | "PHASE_PRECONDITION"
  | "MACHINE_BUSY"
  | "OPERATION_FINISHED"
  | "SUBSCRIBER_LAGGED"
  | "TOO_MANY_WATCHERS"
  | "SHUTTING_DOWN"
  | "INTERNAL";

/** Options shared by every {@linkcode BmdemoError}. */
export interface BmdemoErrorOptions extends ErrorOptions {
  /** Stable reason; defaults to the one that fits the class. */
  reason?: ErrorReason;
  /** Ids and values involved, e.g. `{ machineId: "machine-1" }`. */
  metadata?: Record<string, string>;
}

/** Base class of every domain error. */
export class BmdemoError extends Error {
  /** The error class, mapped to a gRPC status code at the edge. */
  readonly code: ErrorCode;
  /** Stable reason a client can branch on. */
  readonly reason: ErrorReason;
  /** Ids and values involved. */
  readonly metadata: Readonly<Record<string, string>>;

  /**
   * Creates an error with an explicit code and reason.
   *
   * @param code The error class.
   * @param message What happened and what to do about it.
   * @param options Reason, metadata and cause.
   */
  constructor(
    code: ErrorCode,
    message: string,
    options: BmdemoErrorOptions & { reason: ErrorReason },
  ) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.reason = options.reason;
    this.metadata = Object.freeze({ ...options.metadata });
  }
}

/** The request is malformed; retrying it unchanged can never succeed. */
export class InvalidArgumentError extends BmdemoError {
  /**
   * @param message What is wrong and how to fix it.
   * @param options Reason (default `INVALID_ARGUMENT`), metadata and cause.
   */
  constructor(message: string, options: BmdemoErrorOptions = {}) {
    super("invalid_argument", message, { reason: "INVALID_ARGUMENT", ...options });
  }
}

/** A named machine or operation does not exist. */
export class NotFoundError extends BmdemoError {
  /**
   * @param message Which entity is missing.
   * @param options Reason (`MACHINE_NOT_FOUND` or `OPERATION_NOT_FOUND`), metadata and cause.
   */
  constructor(
    message: string,
    options: BmdemoErrorOptions & { reason: "MACHINE_NOT_FOUND" | "OPERATION_NOT_FOUND" },
  ) {
    super("not_found", message, options);
  }
}

/** The system is not in a state that allows the request (phase gate, busy machine, finished operation). */
export class FailedPreconditionError extends BmdemoError {
  /**
   * @param message The current state and what to do first.
   * @param options Reason, metadata and cause.
   */
  constructor(
    message: string,
    options: BmdemoErrorOptions & {
      reason: "PHASE_PRECONDITION" | "MACHINE_BUSY" | "OPERATION_FINISHED";
    },
  ) {
    super("failed_precondition", message, options);
  }
}

/** A subscriber fell behind its bounded queue and was dropped. */
export class LaggedError extends BmdemoError {
  /**
   * @param message How far behind the subscriber was.
   * @param options Metadata and cause.
   */
  constructor(message: string, options: BmdemoErrorOptions = {}) {
    super("resource_exhausted", message, { reason: "SUBSCRIBER_LAGGED", ...options });
  }
}

/**
 * A server-wide limit on long-lived streams (watches, log streams) is reached; retrying once
 * another stream ended can succeed.
 */
export class TooManyWatchersError extends BmdemoError {
  /**
   * @param message The limit and how to raise it.
   * @param options Metadata and cause.
   */
  constructor(message: string, options: BmdemoErrorOptions = {}) {
    super("resource_exhausted", message, { reason: "TOO_MANY_WATCHERS", ...options });
  }
}

/** The engine is shutting down and accepts no new work. */
export class ShuttingDownError extends BmdemoError {
  /**
   * @param message What was refused.
   * @param options Metadata and cause.
   */
  constructor(message: string, options: BmdemoErrorOptions = {}) {
    super("unavailable", message, { reason: "SHUTTING_DOWN", ...options });
  }
}
