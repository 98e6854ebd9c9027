/**
 * Process metrics of the server: resident memory, V8 heap, start time and event-loop lag.
 *
 * Written here rather than taken from prom-client's `collectDefaultMetrics`: under Deno several
 * of those report Node's internals that Deno does not have (`nodejs_gc_duration_seconds` stays
 * empty, `nodejs_active_handles` is always empty, `nodejs_version_info` shows Deno's Node
 * compatibility version), and its lag gauge is one `setImmediate` sample taken at scrape time,
 * which misses a loop blocked between scrapes.
 *
 * @module
 */

import { Gauge, Histogram, type Registry } from "prom-client";

/** Options of the event-loop lag probe. */
export interface LagProbeOptions {
  /** How often the probe timer is armed, in ms. @default 500 */
  intervalMs?: number;
  /** Called with each sample (seconds), after it is recorded; for tests. */
  onSample?: (seconds: number) => void;
}

/** Buckets of `bmdemo_event_loop_lag_seconds`. */
export const LAG_BUCKETS: readonly number[] = [
  0.001,
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
];

/**
 * Samples the event loop's lag: a timer armed every `intervalMs` records how late it fired.
 * Anything that holds the loop (a long synchronous task, a full collection) delays the timer by
 * as much as it delays every request. The timer is unref'd: it never keeps the process alive.
 *
 * @param record Called with each sample, in seconds.
 * @param options Interval.
 * @returns A handle that stops the probe.
 *
 * @example
 * ```ts
 * using probe = startLagProbe((seconds) => console.log(seconds), { intervalMs: 1000 });
 * ```
 */
export function startLagProbe(
  record: (seconds: number) => void,
  options: { intervalMs?: number } = {},
): Disposable {
  const intervalMs = options.intervalMs ?? 500;
  if (!(intervalMs > 0)) throw new RangeError(`intervalMs must be positive: got ${intervalMs}`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = (): void => {
    const armedAt = performance.now();
    const armed = setTimeout(() => {
      const late = performance.now() - armedAt - intervalMs;
      arm();
      record(Math.max(0, late) / 1000);
    }, intervalMs);
    Deno.unrefTimer(armed);
    timer = armed;
  };
  arm();
  return {
    [Symbol.dispose](): void {
      clearTimeout(timer);
    },
  };
}

/**
 * Registers the process metrics in `registry` and starts the lag probe.
 *
 * @param registry Where they are exposed.
 * @param options The lag probe's interval and sample hook.
 * @returns A handle that stops the probe.
 */
export function processMetrics(registry: Registry, options: LagProbeOptions = {}): Disposable {
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch, in seconds.",
    registers: [registry],
  }).set(Math.round((Date.now() - performance.now()) / 1000));
  new Gauge({
    name: "bmdemo_heap_used_bytes",
    help: "V8 heap in use, in bytes.",
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage().heapUsed);
    },
  });
  new Gauge({
    name: "bmdemo_heap_total_bytes",
    help: "V8 heap reserved, in bytes.",
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage().heapTotal);
    },
  });
  const lag = new Histogram({
    name: "bmdemo_event_loop_lag_seconds",
    help: "How late a timer armed every interval fired: the delay anything waiting for the " +
      "event loop (a request, a step) got then.",
    buckets: [...LAG_BUCKETS],
    registers: [registry],
  });
  const onSample = options.onSample;
  return startLagProbe((seconds) => {
    lag.observe(seconds);
    onSample?.(seconds);
  }, options);
}
