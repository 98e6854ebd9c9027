/**
 * What every scenario of the benchmark (`scripts/bench.ts`) shares: the context a scenario runs
 * in (clients, scale, the figures, details and notes it adds to), the scales, and the helpers the
 * scenarios have in common (a bounded call pool, the name of a failure, machine ids).
 *
 * @module
 */

import { type Client, ConnectError, statusName } from "../../lib/client/mod.ts";
import type { MachineService, OperationService } from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import type { Figure } from "./stats.ts";

/** Every scenario, in the order the suite runs them. */
export const SCENARIOS = [
  "register",
  "get",
  "list",
  "burst",
  "watch",
  "logs",
  "cli",
  "memory",
  "scan",
  "soak",
  "fanout",
  "metrics",
] as const;
/** One scenario's name. */
export type Scenario = typeof SCENARIOS[number];

/** Simulated provider work of one REIMAGE with the default ("normal") timings, in ms. */
export const SIMULATED_REIMAGE_MS = 3350;
/** Calls in flight at once where a scenario does not measure concurrency itself. */
export const IN_FLIGHT = 50;

/** How big a run is: machines, calls, repeats and watchers. */
export interface BenchScale {
  /** Machines registered (and read by get and list). */
  machines: number;
  /** Register rounds, one rate each. */
  registerChunks: number;
  /** GetMachine calls per mode. */
  getCalls: number;
  /** Get rounds, one rate each. */
  getRepeats: number;
  /** Full listings timed. */
  listRepeats: number;
  /** REIMAGEs in the burst, one per machine. */
  burst: number;
  /** Watchers of the burst when `watch` runs. */
  watchers: number;
  /** Timed CLI runs per variant. */
  cliRuns: number;
  /** `metrics`: GetMachine calls per round, per server and mode. */
  metricsCalls: number;
  /** `metrics`: rounds per mode. */
  metricsRounds: number;
}

/** The `--scale` choices. */
export const BENCH_SCALES: Readonly<Record<"full" | "small", BenchScale>> = {
  full: {
    machines: 10_000,
    registerChunks: 5,
    getCalls: 20_000,
    getRepeats: 4,
    listRepeats: 10,
    burst: 1000,
    watchers: 10,
    cliRuns: 15,
    metricsCalls: 5000,
    metricsRounds: 6,
  },
  small: {
    machines: 100,
    registerChunks: 2,
    getCalls: 1000,
    getRepeats: 2,
    listRepeats: 3,
    burst: 100,
    watchers: 2,
    cliRuns: 3,
    metricsCalls: 300,
    metricsRounds: 2,
  },
};

/** What a scenario runs with and reports into. */
export interface BenchContext {
  /** `host:port` of the measured server. */
  address: string;
  /** Unique per run: request ids and machine ids of one run never meet another's. */
  run: string;
  /** How big the run is. */
  scale: BenchScale;
  /** The scenarios asked for (burst reports watch figures only when `watch` is one of them). */
  selected: ReadonlySet<Scenario>;
  /** MachineService client of the measured server. */
  machines: Client<typeof MachineService>;
  /** OperationService client of the measured server. */
  operations: Client<typeof OperationService>;
  /** The table's rows, in order. */
  figures: Figure[];
  /** Per scenario, everything the JSON report keeps. */
  details: Record<string, unknown>;
  /** Lines printed under the table. */
  notes: string[];
  /** Machines registered so far (`bench-1` … `bench-<registered>`). */
  registered: number;
  /** Samples the server's memory under `label` (null when the server is not ours). */
  sampleMemory(label: string): void;
}

/**
 * Writes a progress line on stderr.
 *
 * @param message The line.
 */
export function log(message: string): void {
  console.error(`[bench] ${message}`);
}

/**
 * The status name of an RPC failure, or the first line of any other error.
 *
 * @param error What was thrown.
 * @returns A short name for the report.
 */
export function codeName(error: unknown): string {
  if (error instanceof ConnectError) return statusName(error.code);
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

/**
 * Runs `fn(0..count-1)` with at most `inFlight` calls pending.
 *
 * @param count Calls to make.
 * @param inFlight Calls pending at most.
 * @param fn One call.
 * @returns Each call's latency, in ms.
 */
export async function pool(
  count: number,
  inFlight: number,
  fn: (i: number) => Promise<unknown>,
): Promise<number[]> {
  const latencies = new Array<number>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const start = performance.now();
      await fn(i);
      latencies[i] = performance.now() - start;
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
  return latencies;
}

/**
 * Waits `ms` milliseconds.
 *
 * @param ms How long.
 * @returns When the time has passed.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The id of bench machine `n`.
 *
 * @param n From 1.
 * @returns `bench-<n>`.
 */
export function machineId(n: number): string {
  return `bench-${n}`;
}
