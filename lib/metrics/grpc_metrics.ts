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

import { Counter, Gauge, Histogram, type Registry } from "prom-client";

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
  const requests = new Counter({
    name: "bmdemo_grpc_requests_total",
    help:
      "gRPC calls of MachineService and OperationService that ended, by method and status code.",
    labelNames: ["method", "code"] as const,
    registers: [registry],
  });
  const durations = new Histogram({
    name: "bmdemo_grpc_request_duration_seconds",
    help: "Time from a call's arrival to its status, by method (a stream's whole life).",
    labelNames: ["method"] as const,
    buckets: [...GRPC_DURATION_BUCKETS],
    registers: [registry],
  });
  const watchers = new Gauge({
    name: "bmdemo_watchers",
    help: "Open watch streams: WatchOperations and StreamOperationLogs calls, and dashboard " +
      "event streams.",
    registers: [registry],
  });

  function observer(info: ObservedMethod): CallRecorder {
    const method = info.method;
    // Bound once per method and code: a call costs two child lookups, no label object.
    const byCode = new Map<string, Counter.Internal>();
    const child = (code: string): Counter.Internal => {
      let counter = byCode.get(code);
      if (!counter) byCode.set(code, counter = requests.labels(method, code));
      return counter;
    };
    // The series exist from the start, so rate() sees the first call.
    child("OK").inc(0);
    durations.zero({ method });
    const histogram = durations.labels(method);
    const watcher = info.kind === "server_streaming";
    return {
      started(): void {
        if (watcher) watchers.inc();
      },
      ended(code: string, seconds: number): void {
        if (watcher) watchers.dec();
        child(code).inc();
        histogram.observe(seconds);
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
