/**
 * The benchmark's `get` scenario (`scripts/bench.ts`): GetMachine over a fixed pseudo-random walk
 * of the machines, sequential and with calls in flight, with rates and latencies.
 *
 * @module
 */

import { figure } from "./stats.ts";
import { type BenchContext, IN_FLIGHT, machineId, pool } from "./context.ts";
import { ensureMachines } from "./register.ts";

/**
 * Runs the `get` scenario.
 *
 * @param ctx The run.
 */
export async function runGet(ctx: BenchContext): Promise<void> {
  const { figures, details, machines, scale } = ctx;
  await ensureMachines(ctx, scale.machines);
  // A fixed pseudo-random walk over the machines (stride coprime with most counts).
  const pick = (i: number): string => machineId(((i * 7919) % scale.machines) + 1);
  await pool(200, IN_FLIGHT, (i) => machines.getMachine({ machineId: pick(i) })); // warm-up
  const per = Math.ceil(scale.getCalls / scale.getRepeats);
  const result: Record<string, unknown> = {};
  for (const inFlight of [1, IN_FLIGHT]) {
    const rates: number[] = [];
    const latencies: number[] = [];
    for (let r = 0; r < scale.getRepeats; r++) {
      const t = performance.now();
      latencies.push(
        ...await pool(
          per,
          inFlight,
          (i) => machines.getMachine({ machineId: pick(r * per + i) }),
        ),
      );
      rates.push(per / ((performance.now() - t) / 1000));
    }
    const mode = inFlight === 1 ? "sequential" : `${inFlight} in flight`;
    const over = `${scale.getRepeats} repeats of ${per.toLocaleString("en-US")}`;
    figures.push(figure("get", `calls/s (${mode})`, "1/s", rates, over));
    figures.push(
      figure("get", `latency (${mode})`, "ms", latencies, `${latencies.length} calls`),
    );
    result[mode] = { rates, calls: latencies.length };
  }
  details.get = result;
}
