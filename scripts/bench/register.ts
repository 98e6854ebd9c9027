/**
 * The benchmark's `register` scenario (`scripts/bench.ts`): RegisterMachine of every bench
 * machine in rounds, with the rate of each round and every call's latency; and the registration
 * the other scenarios need before they run.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import {
  MachineStatus_Phase as MachinePhase,
  type RegisterMachineRequest,
  RegisterMachineRequestSchema,
} from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { figure } from "./stats.ts";
import { type BenchContext, IN_FLIGHT, machineId, pool } from "./context.ts";

/**
 * The RegisterMachine request of machine `n`, built as a message: the client sends a message it
 * is given as is, so requests built before a timed run cost the run only their encoding.
 */
export function registerRequest(n: number): RegisterMachineRequest {
  const hi = Math.floor(n / 256) % 256;
  const lo = n % 256;
  const hex = (v: number): string => v.toString(16).padStart(2, "0");
  return create(RegisterMachineRequestSchema, {
    machine: {
      machineId: machineId(n),
      spec: {
        provider: "fake",
        macAddresses: [`02:00:00:${hex(Math.floor(n / 65536) % 256)}:${hex(hi)}:${hex(lo)}`],
        serial: `SN-BENCH-${n}`,
        sshEndpoint: `10.${Math.floor(n / 65536) % 256}.${hi}.${Math.min(lo + 1, 254)}:22`,
        rack: `rack-${Math.floor(n / 40)}`,
      },
      status: { phase: MachinePhase.FACTORY_READY },
      labels: { role: "worker", bench: "true" },
    },
  });
}

/**
 * Registers machines up to `bench-<count>`, unless they are already.
 *
 * @param ctx The run.
 * @param count Machines needed.
 */
export async function ensureMachines(ctx: BenchContext, count: number): Promise<void> {
  const { machines } = ctx;
  if (ctx.registered >= count) return;
  const from = ctx.registered;
  const requests = Array.from({ length: count - from }, (_, i) => registerRequest(from + i + 1));
  await pool(requests.length, IN_FLIGHT, (i) => machines.registerMachine(requests[i]));
  ctx.registered = count;
}

/**
 * Runs the `register` scenario.
 *
 * @param ctx The run.
 */
export async function runRegister(ctx: BenchContext): Promise<void> {
  const { figures, details, machines, scale } = ctx;
  const chunk = Math.ceil(scale.machines / scale.registerChunks);
  const rates: number[] = [];
  const latencies: number[] = [];
  const start = performance.now();
  for (let from = 0; from < scale.machines; from += chunk) {
    const size = Math.min(chunk, scale.machines - from);
    const requests = Array.from({ length: size }, (_, i) => registerRequest(from + i + 1));
    const t = performance.now();
    latencies.push(...await pool(size, IN_FLIGHT, (i) => machines.registerMachine(requests[i])));
    rates.push(size / ((performance.now() - t) / 1000));
  }
  const total = performance.now() - start;
  ctx.registered = scale.machines;
  const over = `${rates.length} chunks of ${chunk.toLocaleString("en-US")}`;
  figures.push(figure("register", `machines/s (${IN_FLIGHT} in flight)`, "1/s", rates, over));
  figures.push(
    figure("register", "overall machines/s", "1/s", [scale.machines / (total / 1000)]),
  );
  figures.push(figure("register", "call latency", "ms", latencies, `${latencies.length} calls`));
  details.register = { machines: scale.machines, totalMs: total, ratesPerChunk: rates };
}
