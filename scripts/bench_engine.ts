/**
 * Engine burst benchmark: registers N machines, moves them to MAINTENANCE, then starts N
 * REIMAGE operations at once and measures the time until all are terminal, the events a
 * subscriber received, and peak memory. No gRPC: this measures the engine alone.
 *
 * Usage: deno task bench:engine [--machines 1000] [--timing zero|normal] [--repeats 3]
 *
 * @module
 */

import { parseScriptArgs, usageError } from "./cli_args.ts";
import { create } from "@bufbuild/protobuf";
import { createEngine } from "../lib/engine/mod.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import { type TimingProfile, TIMINGS } from "../lib/provider/fake_timing.ts";
import {
  MachineSchema,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";

const PROGRAM = "deno task bench:engine";
const HELP = `usage: ${PROGRAM} [flags]

Engine burst benchmark, no gRPC: registers N machines, moves them to MAINTENANCE, starts N
REIMAGE operations at once and reports the time until all are terminal, the events a subscriber
received and the peak memory.

  --machines N                 machines in the burst (default 1000)
  --timing zero|normal|slow    fake provider timings (default zero)
  --repeats N                  bursts to run (default 3)
  -h, --help                   this help`;

const { values } = parseScriptArgs({
  options: {
    machines: { type: "string", default: "1000" },
    timing: { type: "string", default: "zero" },
    repeats: { type: "string", default: "3" },
  },
}, { program: PROGRAM, help: HELP });
const machines = Number(values.machines);
const repeats = Number(values.repeats);
const timing = values.timing as TimingProfile;
if (!Number.isInteger(machines) || machines < 1) {
  usageError(PROGRAM, `--machines must be a whole number of at least 1: got "${values.machines}"`);
}
if (!Number.isInteger(repeats) || repeats < 1) {
  usageError(PROGRAM, `--repeats must be a whole number of at least 1: got "${values.repeats}"`);
}
if (!Object.hasOwn(TIMINGS, timing)) {
  usageError(
    PROGRAM,
    `--timing must be one of ${Object.keys(TIMINGS).join(", ")}: got "${timing}"`,
  );
}

interface Result {
  ms: number;
  events: number;
  expectedEvents: number;
  succeeded: number;
  peakRssMb: number;
}

async function burst(): Promise<Result> {
  await using engine = createEngine({
    provider: createFakeProvider({ timing }),
    events: { capacity: 1_000_000 },
  });
  for (let i = 1; i <= machines; i++) {
    engine.registerMachine(create(MachineSchema, { machineId: `machine-${i}` }));
    engine.startOperation({
      machineId: `machine-${i}`,
      requestId: "enter",
      type: OperationType.ENTER_MAINTENANCE,
    });
  }
  await engine.executor.idle();
  let peakRss = Deno.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  }, 20);
  using subscription = engine.events.subscribe();
  let events = 0;
  let terminal = 0;
  const start = performance.now();
  for (let i = 1; i <= machines; i++) {
    engine.startOperation({
      machineId: `machine-${i}`,
      requestId: "reimage",
      type: OperationType.REIMAGE,
    });
  }
  for await (const event of subscription) {
    events++;
    if (
      event.message.startsWith("Operation ") && event.snapshot!.phase >= OperationPhase.SUCCEEDED
    ) {
      if (++terminal === machines) break;
    }
  }
  const ms = performance.now() - start;
  clearInterval(sampler);
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  const succeeded = engine.listOperations({
    filter: "type=REIMAGE AND phase=SUCCEEDED",
    pageSize: 1000,
  });
  let count = succeeded.items.length;
  let token = succeeded.nextPageToken;
  while (token !== "") {
    const page = engine.listOperations({
      filter: "type=REIMAGE AND phase=SUCCEEDED",
      pageSize: 1000,
      pageToken: token,
    });
    count += page.items.length;
    token = page.nextPageToken;
  }
  return {
    ms,
    events,
    // created, started, 5 × (step started, step succeeded), succeeded
    expectedEvents: machines * 13,
    succeeded: count,
    peakRssMb: peakRss / 2 ** 20,
  };
}

const simulatedMs = Object.entries(TIMINGS[timing])
  .filter(([k]) => !["rmaMs", "sshMs"].includes(k))
  .reduce((sum, [, v]) => sum + v, 0);
console.log(
  `burst of ${machines} REIMAGE operations, ${timing} timing (${simulatedMs} ms simulated work each), Deno ${Deno.version.deno}`,
);
const results: Result[] = [];
for (let r = 0; r < repeats; r++) {
  const result = await burst();
  results.push(result);
  console.log(
    `run ${r + 1}: ${
      result.ms.toFixed(0)
    } ms to all terminal, ${result.succeeded}/${machines} succeeded, ` +
      `${result.events}/${result.expectedEvents} events, peak RSS ${
        result.peakRssMb.toFixed(0)
      } MB`,
  );
}
const sorted = results.map((r) => r.ms).sort((a, b) => a - b);
console.log(
  `median ${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms` +
    (simulatedMs > 0
      ? ` (overhead ${
        ((sorted[Math.floor(sorted.length / 2)] / simulatedMs - 1) * 100).toFixed(1)
      }% over simulated work)`
      : "") +
    `, peak RSS ${Math.max(...results.map((r) => r.peakRssMb)).toFixed(0)} MB`,
);
