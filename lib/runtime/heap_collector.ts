/**
 * Keeps the server's resident memory near its live data. V8 lets its old generation grow to a
 * multiple of the live heap before it collects (a burst of 1,000 reimages grew a ~35 MB live heap
 * to ~140 MB), and Deno never runs V8's idle-time memory reducer, so that garbage stays resident
 * until the next burst. This collector checks the heap once a second and runs a full collection
 * when it grew more than a slack (16 MiB, or half the heap the last collection left, whichever is
 * larger) since the last one, or 4 MiB once the heap stopped growing (the end of a burst): at most
 * one collection a second, each ~50-120 ms at the bench's
 * 35 MB of live heap. It collects as V8 does when memory runs out ("last-resort"), which also
 * hands the freed pages back to the system; V8's regular collections keep them resident. A heap
 * over 128 MiB is left to V8 (see {@linkcode HeapCollectorOptions.maxHeapBytes}).
 *
 * It needs V8's `gc()` (`--v8-flags=--expose-gc`, in SERVER_V8_FLAGS of
 * scripts/server_process.ts); without it the server runs as before.
 *
 * @module
 */

/** What {@linkcode createHeapCollector} needs from the runtime; tests pass fakes. */
export interface HeapCollectorOptions {
  /** Runs a full garbage collection (V8's `gc`). */
  gc: () => void;
  /** Bytes of the heap in use now. @default `Deno.memoryUsage().heapUsed` */
  heapUsed?: () => number;
  /** Growth that never triggers a collection, in bytes. @default 16 MiB */
  minSlackBytes?: number;
  /**
   * Above this heap the collector leaves collecting to V8: a forced collection stops the world
   * for longer the larger the heap (~100 ms at 35 MB), and V8's own incremental collections keep
   * the garbage of a large heap proportionally small. @default 128 MiB
   */
  maxHeapBytes?: number;
}

/** A heap collector: {@linkcode HeapCollector.check} collects when the heap grew too much. */
export interface HeapCollector {
  /** Collects if the heap grew past the slack since the last collection; returns whether. */
  check(): boolean;
  /** Collections run so far. */
  readonly collections: number;
}

const MIB = 1024 * 1024;
/** Heap growth between two checks under which the process counts as quiet. */
const QUIET_BYTES = MIB;
/** Growth since the last collection that a quiet process still collects. */
const QUIET_SLACK_BYTES = 4 * MIB;

/**
 * Creates a collector with an explicit `gc`; {@linkcode startHeapCollector} runs one on a timer.
 *
 * @param options The collection function and heap reading.
 * @returns The collector.
 *
 * @example
 * ```ts
 * let used = 10 * 1024 * 1024;
 * const collector = createHeapCollector({ gc: () => (used = 10 * 1024 * 1024), heapUsed: () => used });
 * used += 20 * 1024 * 1024;
 * collector.check(); // true: collected, back to 10 MiB
 * collector.check(); // false
 * ```
 */
export function createHeapCollector(options: HeapCollectorOptions): HeapCollector {
  const heapUsed = options.heapUsed ?? (() => Deno.memoryUsage().heapUsed);
  const minSlack = options.minSlackBytes ?? 16 * MIB;
  const maxHeap = options.maxHeapBytes ?? 128 * MIB;
  let baseline = heapUsed();
  let previous = baseline;
  let collections = 0;
  return {
    check(): boolean {
      const used = heapUsed();
      // Quiet: the heap stood still since the last check, e.g. after a burst. Then even a little
      // growth is collected, so what stays resident while nothing happens is the live data.
      const quiet = Math.abs(used - previous) < QUIET_BYTES;
      previous = used;
      if (used > maxHeap) {
        // Counted again from here once V8 brought the heap back under the ceiling.
        baseline = used;
        return false;
      }
      const slack = quiet ? QUIET_SLACK_BYTES : Math.max(minSlack, baseline / 2);
      if (used - baseline <= slack) return false;
      options.gc();
      collections++;
      baseline = previous = heapUsed();
      return true;
    },
    get collections(): number {
      return collections;
    },
  };
}

/**
 * Runs {@linkcode createHeapCollector} every `periodMs` with V8's `gc`, if the process has it
 * (`--v8-flags=--expose-gc`); the timer never keeps the process alive.
 *
 * @param periodMs How often the heap is checked. @default 1000
 * @returns A handle that stops it, or undefined when `gc` is not exposed.
 */
export function startHeapCollector(periodMs = 1000): Disposable | undefined {
  const gc = (globalThis as { gc?: (options?: Record<string, string>) => void }).gc;
  if (typeof gc !== "function") return undefined;
  // "last-resort" collects until nothing more is freed and hands the freed pages back to the
  // system; a regular full collection frees as much heap but keeps its pages resident.
  const collector = createHeapCollector({
    gc: () => gc({ type: "major", execution: "sync", flavor: "last-resort" }),
  });
  const timer = setInterval(() => collector.check(), periodMs);
  Deno.unrefTimer(timer);
  return { [Symbol.dispose]: () => clearInterval(timer) };
}
