/**
 * The rich error model on the wire: every failed call carries a `google.rpc.Status` in the
 * `grpc-status-details-bin` trailer, with one `google.rpc.ErrorInfo` detail whose `reason` is a
 * stable UPPER_SNAKE code (`MACHINE_NOT_FOUND`, `MACHINE_BUSY`, …), `domain` is `bmdemo`, and
 * `metadata` names the ids involved (e.g. `activeOperationId`). Clients branch on the reason
 * instead of parsing messages.
 *
 * @module
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
// Types only: clients (the CLI) read error details without loading grpc-js.
import type * as grpc from "@grpc/grpc-js";
import { type ErrorInfo, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.ts";
import { StatusSchema } from "../gen/google/rpc/status_pb.ts";

/** The `ErrorInfo.domain` of every bmdemo error. */
export const ERROR_DOMAIN = "bmdemo";

/** The trailer that carries the binary `google.rpc.Status`. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** What a failed call says about itself. */
export interface ErrorDetails {
  /** gRPC status code. */
  code: grpc.status;
  /** The status message. */
  message: string;
  /** Stable UPPER_SNAKE reason. */
  reason: string;
  /** Ids and values involved. */
  metadata: Readonly<Record<string, string>>;
}

/**
 * Encodes a status with its `ErrorInfo`: the value of the `grpc-status-details-bin` trailer.
 *
 * @param details Code, message, reason and metadata.
 * @returns The binary `google.rpc.Status`.
 *
 * @example
 * ```ts
 * statusDetailsBytes({ code: 5, message: "gone", reason: "MACHINE_NOT_FOUND", metadata: {} });
 * ```
 */
export function statusDetailsBytes(details: ErrorDetails): Uint8Array {
  const info = create(ErrorInfoSchema, {
    reason: details.reason,
    domain: ERROR_DOMAIN,
    metadata: { ...details.metadata },
  });
  const status = create(StatusSchema, {
    code: details.code,
    message: details.message,
    details: [anyPack(ErrorInfoSchema, info)],
  });
  return toBinary(StatusSchema, status);
}

/**
 * Reads the `ErrorInfo` of a failed call, if the server sent one.
 *
 * @param error What a client call rejected with (a grpc-js `ServiceError`).
 * @returns The error info, or `undefined` when the error carries none (or is not a gRPC error).
 *
 * @example
 * ```ts ignore
 * try { await client.getMachine({ machineId: "x" }); } catch (error) {
 *   if (errorInfoOf(error)?.reason === "MACHINE_NOT_FOUND") console.log("register it first");
 * }
 * ```
 */
export function errorInfoOf(error: unknown): ErrorInfo | undefined {
  // Duck-typed: grpc-js's Metadata and our client's ResponseMetadata both have `get`.
  const metadata = (error as { metadata?: { get?: unknown } } | null)?.metadata;
  if (typeof metadata?.get !== "function") return undefined;
  const [raw] = (metadata.get as (key: string) => unknown[]).call(metadata, STATUS_DETAILS_KEY);
  if (!(raw instanceof Uint8Array)) return undefined;
  try {
    const status = fromBinary(StatusSchema, raw);
    for (const detail of status.details) {
      const info = anyUnpack(detail, ErrorInfoSchema);
      if (info) return info;
    }
  } catch {
    // A malformed trailer from some other server: no details rather than a crash.
  }
  return undefined;
}
