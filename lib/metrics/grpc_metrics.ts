/**
 * The gRPC metrics: calls per method and status code, their durations, and the watchers gauge
 * (open WatchOperations and StreamOperationLogs streams, plus any other long-lived subscriber the
 * HTTP surface counts in). Fed by the one hook of `lib/grpc/` on the call path
 * (`ServiceHandlersOptions.observe`); this module does not import the gRPC layer: the observer's
 * shape is written out here and matches `CallObserver` of `lib/grpc/handler_contract.ts`.
 *
 * Label values are bounded: methods are the services' (13), codes gRPC's (17).
 *
 * @module
 */

import { Gauge, type Registry } from "prom-client";
import { CallTable } from "./call_table.ts";

/** What the observer reads of a call's method (a subset of lib/grpc's `CallInfo`). */
export interface ObservedMethod {
  /** Method name as in the `.proto` file, e.g. `GetMachine`. */
  readonly method: string;
  /** Server streams are watchers: counted in `bmdemo_watchers` while open. */
  readonly kind: "unary" | "server_streaming";
}

/** Told of each call of one method (matches lib/grpc's `MethodObserver`). */
export interface CallRecorder {
  /** A call started. */
  started(): void;
  /** The call ended with status `code` (a name such as `NOT_FOUND`) after `seconds`. */
  ended(code: string, seconds: number): void;
}

/** Asked once per method when the handlers are created (matches lib/grpc's `CallObserver`). */
export type GrpcObserver = (method: ObservedMethod) => CallRecorder;

/** The gRPC side of the metrics. */
export interface GrpcMetrics {
  /** The hook to give the gRPC server (`startServer`'s `callObserver`). */
  readonly observer: GrpcObserver;
  /**
   * Counts one more watcher until the returned handle is disposed (idempotent): for
   * subscribers outside gRPC, such as the dashboard's Server-Sent Events clients.
   */
  trackWatcher(): Disposable;
}

/** Buckets of `bmdemo_grpc_request_duration_seconds`: a unary call takes 0.1-10 ms here. */
export const GRPC_DURATION_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * Registers the gRPC metrics in `registry`.
 *
 * @param registry Where they are exposed.
 * @returns The call observer and the watcher tracker.
 */
export function grpcMetrics(registry: Registry): GrpcMetrics {
  const calls = new CallTable(registry, {
    counter: {
      name: "bmdemo_grpc_requests_total",
      help: "gRPC calls of MachineService and OperationService that ended, by method and " +
        "status code.",
    },
    histogram: {
      name: "bmdemo_grpc_request_duration_seconds",
      help: "Time from a call's arrival to its status, by method (a stream's whole life).",
    },
    buckets: GRPC_DURATION_BUCKETS,
  });
  const watchers = new Gauge({
    name: "bmdemo_watchers",
    help: "Open watch streams: WatchOperations and StreamOperationLogs calls, and dashboard " +
      "event streams.",
    registers: [registry],
  });

  function observer(info: ObservedMethod): CallRecorder {
    // Created now, so every method's OK count and histogram exist (at 0) from the start.
    const row = calls.row(info.method);
    if (info.kind !== "server_streaming") {
      return { started(): void {}, ended: (code, seconds) => row.record(code, seconds) };
    }
    return {
      started(): void {
        watchers.inc();
      },
      ended(code: string, seconds: number): void {
        watchers.dec();
        row.record(code, seconds);
      },
    };
  }

  function trackWatcher(): Disposable {
    watchers.inc();
    let open = true;
    return {
      [Symbol.dispose](): void {
        if (!open) return;
        open = false;
        watchers.dec();
      },
    };
  }

  return { observer, trackWatcher };
}
