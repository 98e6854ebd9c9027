/**
 * The benchmark's `metrics` scenario (`scripts/bench.ts`): what the Prometheus metrics
 * (`lib/metrics/`) cost a GetMachine call. Two servers of this repository run side by side, one
 * collecting metrics (the default) and one started with `--no-metrics`; each round times the same
 * GetMachine walk on both, in alternating order, sequentially and with calls in flight. The
 * ratio of each round's two rates (on / off) is one sample: pairing the rounds cancels most of
 * the drift of a shared machine. So does the second figure, each server's CPU time per call
 * (from `/proc`), which other processes on the machine slow down far less than they slow the
 * rates. The target (within 5 %) is reported, never asserted.
 *
 * @module
 */

import { connectClient } from "../../lib/client/mod.ts";
import { MachineService } from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type ServerProcess, spawnServer } from "../server_process.ts";
import { cpuSecondsOf } from "./fanout.ts";
import { type Figure, figure } from "./stats.ts";
import { IN_FLIGHT, machineId, pool } from "./context.ts";
import { registerRequest } from "./register.ts";

/** Options of {@linkcode runMetricsCost}. */
export interface MetricsCostOptions {
  /** Machines registered on each server (the walk covers them all). */
  machines: number;
  /** GetMachine calls per round, per server and mode. */
  calls: number;
  /** Rounds per mode; each gives one rate per server and one ratio. */
  rounds: number;
  /** `deno run` flags for both servers. */
  denoFlags: string[];
  /** Progress lines. */
  log: (line: string) => void;
}

/** What {@linkcode runMetricsCost} measured, per mode (`sequential`, `50 in flight`). */
export interface MetricsCostResult {
  /** Calls/s of each round, per server. */
  rates: Record<string, { on: number[]; off: number[] }>;
  /** on / off of each round's rates. */
  ratios: Record<string, number[]>;
  /** Server CPU microseconds per call of each round, per server (empty without `/proc`). */
  cpuPerCallUs: Record<string, { on: number[]; off: number[] }>;
  /** on / off of each round's CPU per call. */
  cpuRatios: Record<string, number[]>;
}

/** The flags of the server that collects metrics, and of the one that does not. */
export const METRICS_SERVERS: Readonly<Record<"on" | "off", readonly string[]>> = {
  on: [],
  off: ["--no-metrics"],
};

/**
 * Runs the `metrics` scenario.
 *
 * @param options Scale, server flags and log.
 * @returns The figures for the table and the details for the JSON report.
 */
export async function runMetricsCost(
  options: MetricsCostOptions,
): Promise<{ figures: Figure[]; details: MetricsCostResult }> {
  const { machines: count, calls, rounds, log } = options;
  await using on = await spawnServer([...METRICS_SERVERS.on], { denoFlags: options.denoFlags });
  await using off = await spawnServer([...METRICS_SERVERS.off], { denoFlags: options.denoFlags });
  log(`metrics: on ${on.address} (pid ${on.pid}), off ${off.address} (pid ${off.pid})`);
  using onClient = connectClient(MachineService, on.address);
  using offClient = connectClient(MachineService, off.address);
  const servers = { on: onClient, off: offClient };
  const pick = (i: number): string => machineId(((i * 7919) % count) + 1);
  for (const client of [onClient, offClient]) {
    const requests = Array.from({ length: count }, (_, i) => registerRequest(i + 1));
    await pool(count, IN_FLIGHT, (i) => client.registerMachine(requests[i]));
    await pool(Math.min(calls, 2000), IN_FLIGHT, (i) => client.getMachine({ machineId: pick(i) }));
  }

  const result: MetricsCostResult = { rates: {}, ratios: {}, cpuPerCallUs: {}, cpuRatios: {} };
  const pids = { on: on.pid, off: off.pid };
  const figures: Figure[] = [];
  for (const inFlight of [1, IN_FLIGHT]) {
    const mode = inFlight === 1 ? "sequential" : `${inFlight} in flight`;
    const rates = { on: [] as number[], off: [] as number[] };
    const cpu = { on: [] as number[], off: [] as number[] };
    const ratios: number[] = [];
    const cpuRatios: number[] = [];
    for (let round = 0; round < rounds; round++) {
      // Alternate which server goes first, so neither always gets the warmer (or cooler) slot.
      const order: ("on" | "off")[] = round % 2 === 0 ? ["on", "off"] : ["off", "on"];
      const rate: Record<string, number> = {};
      const cpuUs: Record<string, number | null> = {};
      for (const which of order) {
        const client = servers[which];
        const cpuBefore = cpuSecondsOf(pids[which]);
        const start = performance.now();
        await pool(
          calls,
          inFlight,
          (i) => client.getMachine({ machineId: pick(round * calls + i) }),
        );
        rate[which] = calls / ((performance.now() - start) / 1000);
        rates[which].push(rate[which]);
        const cpuAfter = cpuSecondsOf(pids[which]);
        cpuUs[which] = cpuBefore === null || cpuAfter === null
          ? null
          : (cpuAfter - cpuBefore) / calls * 1e6;
        if (cpuUs[which] !== null) cpu[which].push(cpuUs[which]);
      }
      ratios.push(rate.on / rate.off);
      // Both measured and above the kernel's 10 ms resolution (a small run may be below it).
      if (cpuUs.on && cpuUs.off) cpuRatios.push(cpuUs.on / cpuUs.off);
    }
    result.rates[mode] = rates;
    result.ratios[mode] = ratios;
    result.cpuPerCallUs[mode] = cpu;
    result.cpuRatios[mode] = cpuRatios;
    const over = `${rounds} rounds of ${calls.toLocaleString("en-US")}`;
    figures.push(figure("metrics", `get calls/s, metrics on (${mode})`, "1/s", rates.on, over));
    figures.push(figure("metrics", `get calls/s, metrics off (${mode})`, "1/s", rates.off, over));
    figures.push(
      figure("metrics", `on/off ratio (${mode}; target >= 0.95)`, "", ratios, `${rounds} pairs`),
    );
    if (cpuRatios.length > 0) {
      figures.push(figure("metrics", `server CPU/call, on (${mode})`, "µs", cpu.on, over));
      figures.push(figure("metrics", `server CPU/call, off (${mode})`, "µs", cpu.off, over));
      figures.push(
        figure(
          "metrics",
          `CPU/call on/off ratio (${mode}; target <= 1.05)`,
          "",
          cpuRatios,
          `${cpuRatios.length} pairs`,
        ),
      );
    }
  }
  await stopBoth(on, off);
  return { figures, details: result };
}

/** Stops both servers gracefully (their disposal would SIGKILL them). */
async function stopBoth(on: ServerProcess, off: ServerProcess): Promise<void> {
  await Promise.all([on.stop(), off.stop()]);
}
