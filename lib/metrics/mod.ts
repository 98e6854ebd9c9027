/**
 * Prometheus metrics of the server: the engine's (operations, steps, machines), the gRPC
 * surface's (calls by method and code, watchers) and the process's (memory, event-loop lag),
 * exposed as text at `/metrics` by the HTTP surface. Names, labels and buckets are documented in
 * `docs/metrics.md`.
 *
 * The exposition library is `prom-client` (registry, counters, gauges, histograms, the text
 * format): it runs under Deno 2.9.3 and in `deno bundle` output unchanged. Its default Node
 * process metrics are not used (see `process_metrics.ts`), nor its metric classes on the call
 * path (see `call_table.ts`).
 *
 * Modules: `engine_metrics.ts` (operations, steps, machines), `grpc_metrics.ts` and
 * `call_table.ts` (calls, watchers), `process_metrics.ts` (memory, event-loop lag),
 * `http_route.ts` (the `/metrics` route).
 *
 * Neither the engine nor the gRPC layer knows this folder: the engine's events are read through
 * `engine.events.listen`, and the gRPC layer calls the observer it is given
 * (`ServerOptions.callObserver`), whose shape is written out in `grpc_metrics.ts`.
 *
 * May import: `lib/engine/`, `lib/store/` (queries), `lib/model/`, `lib/gen/`, npm packages.
 * Never `lib/grpc/`, `lib/cli/` or a wire package (checked by `test/architecture_test.ts`).
 *
 * @module
 */

import { Registry } from "prom-client";
import type { Engine } from "../engine/mod.ts";
import { engineMetrics, type EngineMetricsOptions } from "./engine_metrics.ts";
import { grpcMetrics, type GrpcObserver } from "./grpc_metrics.ts";
import { type HttpRoute, metricsRoute } from "./http_route.ts";
import { type LagProbeOptions, processMetrics } from "./process_metrics.ts";

export { EXPOSITION_CONTENT_TYPE, type HttpRoute, metricsRoute } from "./http_route.ts";
export type { CallRecorder, GrpcObserver, ObservedMethod } from "./grpc_metrics.ts";

/** Options of {@linkcode createMetrics}. */
export interface MetricsOptions extends EngineMetricsOptions {
  /** The event-loop lag probe. @default a sample every 500 ms */
  eventLoop?: LagProbeOptions;
}

/** The server's metrics. */
export interface Metrics extends Disposable {
  /** `/metrics` for the HTTP surface (GET, token, text exposition 0.0.4). */
  readonly route: HttpRoute;
  /** The hook to pass to the gRPC server as `callObserver`. */
  readonly grpcObserver: GrpcObserver;
  /**
   * Counts a watcher outside gRPC (a dashboard event stream) in `bmdemo_watchers` until the
   * handle is disposed.
   */
  trackWatcher(): Disposable;
  /** The exposition text, collected now. */
  render(): Promise<string>;
  /** Stops listening to the engine and stops the lag probe; idempotent. */
  close(): void;
}

/**
 * Creates the server's metrics on an engine. Create them before the server starts (before
 * `engine.recover()`), so the operations recovery fails are counted.
 *
 * @param engine The engine observed.
 * @param options Steps known in advance and the lag probe.
 * @returns The metrics; `close()` them at shutdown.
 *
 * @example
 * ```ts
 * import { createEngine } from "../engine/mod.ts";
 *
 * await using engine = createEngine({ timing: "zero" });
 * using metrics = createMetrics(engine);
 * const text = await metrics.render(); // "# HELP bmdemo_operations_total ..."
 * ```
 */
export function createMetrics(engine: Engine, options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const unlisten = engineMetrics(engine, registry, options);
  const grpc = grpcMetrics(registry);
  const probe = processMetrics(registry, options.eventLoop);
  let closed = false;
  function close(): void {
    if (closed) return;
    closed = true;
    unlisten();
    probe[Symbol.dispose]();
  }
  return {
    route: metricsRoute(registry),
    grpcObserver: grpc.observer,
    trackWatcher: grpc.trackWatcher,
    render: () => registry.metrics(),
    close,
    [Symbol.dispose]: close,
  };
}
