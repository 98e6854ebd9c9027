/**
 * The benchmark's `fanout` scenario (`scripts/bench.ts`): many watchers that read every event
 * while a burst of REIMAGEs runs. Each watcher has its own connection, as separate clients would;
 * every event's delivery latency (its `ts`, stamped by the server when published, to when the
 * watcher has it decoded) goes into one histogram. Reports whether every watcher got every
 * event, the latency percentiles, and the time from the first REIMAGE call until every watcher
 * saw every operation end, against the simulated work. Targets are reported, never asserted.
 *
 * Needs a bmdemo server (watchers synchronise on the `send_initial_snapshot` marker, which the
 * original server does not send).
 *
 * @module
 */

import { cpuUsage } from "node:process";
import { connectClient } from "../../lib/client/mod.ts";
import {
  MachineService,
  Operation_Phase as OperationPhase,
  OperationEvent_Kind as EventKind,
  OperationService,
} from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type Figure, textFigure } from "./stats.ts";
import { succeededEventCount } from "../load_checks.ts";
import { Operation_OperationType as OperationType } from "../../lib/gen/baremetal/v1/baremetal_pb.ts";

/** Options of {@linkcode runFanout}. */
export interface FanoutOptions {
  /** `host:port` of the server. */
  address: string;
  /** REIMAGEs in the burst, one per machine. */
  machines: number;
  /** Watchers reading every event. */
  watchers: number;
  /** Prefix of the machine ids this run registers, unique per run. */
  prefix: string;
  /** Simulated provider work of one REIMAGE, in ms (the all-terminal target is +25 %). */
  simulatedMs: number;
  /** How long to wait for every watcher to see every operation end. @default 180 s */
  timeoutMs?: number;
  /** The server's process id, to report its CPU time (Linux `/proc`). @default not reported */
  serverPid?: number;
}

/** What {@linkcode runFanout} measured. */
export interface FanoutResult {
  machines: number;
  watchers: number;
  simulatedMs: number;
  /** Events each watcher should get: every event of every REIMAGE. */
  expectedEventsPerWatcher: number;
  /** Events each watcher got, and the error that ended it early, if any. */
  perWatcher: { events: number; terminal: number; error: string | null }[];
  /** Delivery latency in ms: median, p99, max, over every event of every watcher. */
  latencyMs: { median: number | null; p99: number | null; max: number | null; n: number };
  /** First REIMAGE call until every watcher saw every operation end. */
  allTerminalMs: number;
  /** All REIMAGE calls answered. */
  acceptedMs: number;
  timedOut: boolean;
  /**
   * CPU seconds from the first REIMAGE call until every watcher saw every end: the server's
   * (null when unknown) and this benchmark client's, which decodes every delivered event.
   */
  cpuSeconds: { server: number | null; client: number };
}

/** Latency histogram resolution: 1 ms buckets up to a minute (later lands in the last). */
const BUCKETS = 60_001;

function quantileOf(histogram: Uint32Array, total: number, q: number): number | null {
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let ms = 0; ms < histogram.length; ms++) {
    seen += histogram[ms];
    if (seen >= rank) return ms;
  }
  return histogram.length - 1;
}

/**
 * Runs the scenario; see the module documentation.
 *
 * @param options Server, burst size, watcher count.
 * @returns The figures' raw material.
 */
export async function runFanout(options: FanoutOptions): Promise<FanoutResult> {
  const { address, machines: count, watchers: watcherCount, prefix } = options;
  const machines = connectClient(MachineService, address);
  const ids = Array.from({ length: count }, (_, i) => `${prefix}-${i + 1}`);
  const histogram = new Uint32Array(BUCKETS);
  let samples = 0;
  const clients = Array.from(
    { length: watcherCount },
    () => connectClient(OperationService, address),
  );
  const stop = new AbortController();
  const perWatcher = clients.map(() => ({ events: 0, terminal: 0, error: null as string | null }));
  let everyoneDone: (() => void) | undefined;
  let done = 0;
  try {
    await pool(count, 50, (i) => machines.registerMachine({ machine: { machineId: ids[i] } }));
    const entered = await pool(
      count,
      50,
      (i) => machines.enterMaintenance({ machineId: ids[i], requestId: `${prefix}-enter` }),
    );
    await untilTerminal(address, entered);

    // Only this run's REIMAGEs; each watcher is live once it read the snapshot marker.
    const filter = `type=REIMAGE`;
    const mine = new Set(ids);
    const streams = clients.map((client) =>
      client.watchOperations({ filter, sendInitialSnapshot: true }, { signal: stop.signal })
    );
    for (const stream of streams) {
      for (;;) {
        const first = await stream.next();
        if (first.done) throw new Error("a watch ended before its snapshot marker");
        if (first.value.kind === EventKind.SNAPSHOT_COMPLETE) break;
      }
    }
    const reading = streams.map(async (stream, w) => {
      const seen = perWatcher[w];
      try {
        for await (const event of stream) {
          const ts = event.ts;
          if (ts) {
            const ms = Date.now() - (Number(ts.seconds) * 1000 + ts.nanos / 1e6);
            histogram[Math.min(BUCKETS - 1, Math.max(0, Math.round(ms)))]++;
            samples++;
          }
          const op = event.snapshot;
          if (!op || !mine.has(op.machineId)) continue;
          seen.events++;
          if (op.phase >= OperationPhase.SUCCEEDED && ++seen.terminal === count) {
            if (++done === watcherCount) everyoneDone?.();
          }
        }
      } catch (error) {
        if (!stop.signal.aborted) {
          seen.error = error instanceof Error ? error.message : String(error);
        }
        if (++done === watcherCount) everyoneDone?.();
      }
    });

    const allSeen = new Promise<boolean>((resolve) => {
      everyoneDone = () => resolve(true);
      setTimeout(() => resolve(false), options.timeoutMs ?? 180_000);
    });
    const serverCpu = cpuSecondsOf(options.serverPid);
    const clientCpu = cpuUsage();
    const start = performance.now();
    await Promise.all(
      ids.map((machineId) =>
        machines.reimageMachine({ machineId, requestId: `${prefix}-reimage` })
      ),
    );
    const acceptedMs = performance.now() - start;
    const finished = await allSeen;
    const allTerminalMs = performance.now() - start;
    const serverCpuEnd = cpuSecondsOf(options.serverPid);
    const clientCpuUsed = cpuUsage(clientCpu);
    stop.abort();
    await Promise.all(reading);
    return {
      machines: count,
      watchers: watcherCount,
      simulatedMs: options.simulatedMs,
      expectedEventsPerWatcher: count * succeededEventCount(OperationType.REIMAGE),
      perWatcher,
      latencyMs: {
        median: quantileOf(histogram, samples, 0.5),
        p99: quantileOf(histogram, samples, 0.99),
        max: quantileOf(histogram, samples, 1),
        n: samples,
      },
      allTerminalMs,
      acceptedMs,
      timedOut: !finished,
      cpuSeconds: {
        server: serverCpu === null || serverCpuEnd === null ? null : serverCpuEnd - serverCpu,
        client: (clientCpuUsed.user + clientCpuUsed.system) / 1e6,
      },
    };
  } finally {
    stop.abort();
    machines.close();
    for (const client of clients) client.close();
  }
}

/**
 * The table rows of a {@linkcode FanoutResult}.
 *
 * @param result The measurements.
 * @returns The figures of scenario `fanout`.
 */
export function fanoutFigures(result: FanoutResult): Figure[] {
  const { latencyMs, perWatcher, machines, watchers, simulatedMs } = result;
  const expected = result.expectedEventsPerWatcher;
  const short = perWatcher.filter((w) => w.events !== expected || w.error !== null);
  const overheadPct = (result.allTerminalMs / simulatedMs - 1) * 100;
  const latency: Figure = {
    scenario: "fanout",
    name: "event delivery latency (event ts → received)",
    unit: "ms",
    median: latencyMs.median,
    p99: latencyMs.p99,
    min: null,
    max: latencyMs.max,
    n: latencyMs.n,
    over: `${watchers} watchers × their events`,
  };
  const row = (name: string, unit: string, value: number): Figure => ({
    scenario: "fanout",
    name,
    unit,
    median: value,
    p99: value,
    min: value,
    max: value,
    n: 1,
  });
  return [
    latency,
    row(
      `first REIMAGE call → all ${machines} terminal at every watcher`,
      "ms",
      result.allTerminalMs,
    ),
    row(`overhead over ${simulatedMs} ms simulated work`, "%", overheadPct),
    row(`all ${machines} REIMAGE calls answered`, "ms", result.acceptedMs),
    textFigure(
      "fanout",
      "CPU until then: server / bench client",
      `${result.cpuSeconds.server?.toFixed(1) ?? "n/a"} s / ${
        result.cpuSeconds.client.toFixed(1)
      } s (the client decodes ${watchers} × ${expected} events)`,
    ),
    textFigure(
      "fanout",
      `every watcher got all ${expected} events`,
      short.length === 0
        ? `yes (${watchers}/${watchers})`
        : `no: ${short.length}/${watchers} short, e.g. ${short[0].events} events, ${
          short[0].error ?? "no error"
        }`,
    ),
    textFigure(
      "fanout",
      "targets (reported, not asserted)",
      `p99 ≤ 1000 ms: ${latencyMs.p99 !== null && latencyMs.p99 <= 1000 ? "met" : "missed"}; ` +
        `all terminal ≤ +25 %: ${overheadPct <= 25 ? "met" : "missed"}` +
        (result.timedOut ? " (timed out)" : ""),
    ),
  ];
}

/**
 * CPU seconds (user + system) a process used so far, from `/proc` through `cat`; null if unknown.
 *
 * @param pid The process.
 * @returns Its CPU seconds, at the kernel's 10 ms resolution.
 */
export function cpuSecondsOf(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const out = new Deno.Command("cat", {
      args: [`/proc/${pid}/stat`],
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!out.success) return null;
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    const text = new TextDecoder().decode(out.stdout);
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? ticks / 100 : null;
  } catch {
    return null;
  }
}

/** Runs `fn(0..count-1)` with at most `inFlight` pending; returns the results in order. */
async function pool<T>(
  count: number,
  inFlight: number,
  fn: (i: number) => Promise<T>,
): Promise<T[]> {
  const results = new Array<T>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      results[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
  return results;
}

/** Waits until every operation is terminal, polling GetOperation (no watcher is open yet). */
async function untilTerminal(
  address: string,
  started: readonly { operationId: string }[],
): Promise<void> {
  const operations = connectClient(OperationService, address);
  try {
    let pending = started.map((op) => op.operationId);
    while (pending.length > 0) {
      const phases = await pool(
        pending.length,
        50,
        async (i) => (await operations.getOperation({ operationId: pending[i] })).phase,
      );
      pending = pending.filter((_, i) => phases[i] < OperationPhase.SUCCEEDED);
      if (pending.length > 0) await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    operations.close();
  }
}
