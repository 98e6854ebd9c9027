/**
 * The `scan` scenario of `deno task bench`: filtered ListOperations over a large retained
 * history. It seeds a `--db` file directly through the SQLite store (fast and deterministic,
 * like `scripts/bench_recovery.ts`): machines `scan-<n>` and finished REBOOTs round-robin over
 * them, even ones SUCCEEDED and odd ones FAILED; then starts its own server on that file with
 * `--retain-operations` above the count, and measures:
 *
 * - ListOperations with filters that match nothing (phase, type, machine_id): latency;
 * - GetMachine latency idle, then while 4 clients (own connections) loop on those filtered
 *   lists with no pause, and the ratio of the p99s; as a control, GetMachine while 4 clients
 *   loop on GetMachine (the cost of the load itself, whatever the calls).
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { connectClient } from "../../lib/client/mod.ts";
import {
  MachineSchema,
  MachineService,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { createSqliteStore } from "../../lib/store/sqlite.ts";
import { type ServerProcess, spawnServer } from "../server_process.ts";
import { type Figure, figure, quantile } from "./stats.ts";
import { validateCreateRequest } from "../../lib/store/validation.ts";

/** Scale of the scenario. */
export interface ScanScale {
  /** Finished operations seeded (all retained). */
  operations: number;
  /** Machines they are spread over (an even count: machine parity is operation parity). */
  machines: number;
  /** Timed calls per measurement. */
  calls: number;
}

/** Full and small scales. */
export const SCAN_SCALES: Readonly<Record<"full" | "small", ScanScale>> = {
  full: { operations: 100_000, machines: 1000, calls: 2000 },
  small: { operations: 2000, machines: 20, calls: 200 },
};

/** Filters that match nothing in the seeded history. */
export const NO_MATCH_FILTERS: readonly string[] = [
  "phase=RUNNING",
  "phase=CANCELED",
  "type=REIMAGE",
  "machine_id=scan-none",
  "machine_id=scan-1 AND phase=FAILED",
];

const LOOPERS = 4;

/** What the scenario measured. */
export interface ScanResult {
  /** Figures for the table. */
  figures: Figure[];
  /** Raw numbers for the JSON report. */
  details: Record<string, unknown>;
}

/**
 * Seeds `path` with the scale's machines and finished operations.
 *
 * @param path The database file (created).
 * @param scale How much.
 * @returns Time taken in milliseconds.
 */
export function seedScanDatabase(path: string, scale: ScanScale): number {
  const start = performance.now();
  using store = createSqliteStore(path);
  const BATCH = 1000;
  store.transaction(() => {
    for (let m = 1; m <= scale.machines; m++) {
      store.registerMachine(create(MachineSchema, {
        machineId: `scan-${m}`,
        spec: { provider: "fake" },
        labels: { role: "worker" },
        status: { phase: MachinePhase.READY },
      }));
    }
  });
  for (let i = 0; i < scale.operations; i += BATCH) {
    store.transaction(() => {
      for (let j = i; j < Math.min(i + BATCH, scale.operations); j++) {
        const { operation } = store.createOperation(validateCreateRequest({
          machineId: `scan-${(j % scale.machines) + 1}`,
          requestId: `scan-${j}`,
          type: OperationType.REBOOT,
        }));
        store.markRunning(operation.operationId);
        store.finishOperation(
          operation.operationId,
          j % 2 === 0 ? { phase: OperationPhase.SUCCEEDED } : {
            phase: OperationPhase.FAILED,
            error: { code: "EXECUTION_FAILED", message: "seeded", retryable: true, details: {} },
          },
        );
      }
    });
  }
  return performance.now() - start;
}

async function timed(count: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await fn(i);
    latencies.push(performance.now() - start);
  }
  return latencies;
}

/**
 * Times GetMachine calls while {@linkcode LOOPERS} clients, each on its own connection, call
 * `loop` with no pause.
 */
async function underLoad(
  address: string,
  scale: ScanScale,
  loop: (
    client: {
      machines: ReturnType<typeof connectClient<typeof MachineService>>;
      operations: ReturnType<typeof connectClient<typeof OperationService>>;
    },
    i: number,
  ) => Promise<void>,
): Promise<{ latencies: number[]; loopCalls: number }> {
  using machines = connectClient(MachineService, address);
  const stop = new AbortController();
  let loopCalls = 0;
  const loopers = Array.from({ length: LOOPERS }, async (_, n) => {
    using clientMachines = connectClient(MachineService, address);
    using clientOperations = connectClient(OperationService, address);
    const client = { machines: clientMachines, operations: clientOperations };
    for (let i = n; !stop.signal.aborted; i++) {
      await loop(client, i);
      loopCalls++;
    }
  });
  const latencies = await timed(
    scale.calls,
    (i) => machines.getMachine({ machineId: `scan-${((i * 7919) % scale.machines) + 1}` }),
  );
  stop.abort();
  await Promise.all(loopers);
  return { latencies, loopCalls };
}

/**
 * Runs the scenario with its own server.
 *
 * @param scale How much.
 * @param options `deno run` flags for the server, and a progress logger.
 * @returns Figures and details.
 */
export async function runScan(
  scale: ScanScale,
  options: { denoFlags?: string[]; log?: (message: string) => void } = {},
): Promise<ScanResult> {
  const log = options.log ?? (() => {});
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-bench-scan-" });
  let server: ServerProcess | undefined;
  try {
    const path = `${dir}/scan.db`;
    const seedMs = seedScanDatabase(path, scale);
    log(`scan: seeded ${scale.operations} operations in ${(seedMs / 1000).toFixed(1)} s`);
    server = await spawnServer(
      ["--db", path, "--retain-operations", String(scale.operations * 2)],
      { denoFlags: options.denoFlags },
    );
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);
    const retained = (await operations.listOperations({ pageSize: 1 })).operations.length;
    if (retained === 0) throw new Error("the seeded operations were not loaded");

    const pick = (i: number): string => `scan-${((i * 7919) % scale.machines) + 1}`;
    const filterOf = (i: number): string => NO_MATCH_FILTERS[i % NO_MATCH_FILTERS.length];
    await timed(100, (i) => operations.listOperations({ filter: filterOf(i), pageSize: 100 }));
    const noMatch = await timed(scale.calls, async (i) => {
      const page = await operations.listOperations({ filter: filterOf(i), pageSize: 100 });
      if (page.operations.length > 0) throw new Error(`"${filterOf(i)}" matched`);
    });
    await timed(100, (i) => machines.getMachine({ machineId: pick(i) }));
    const idle = await timed(scale.calls, (i) => machines.getMachine({ machineId: pick(i) }));

    // The same load with GetMachine loops instead: what 4 busy clients cost on their own.
    const control = await underLoad(server.address, scale, async (client) => {
      await client.machines.getMachine({ machineId: pick(0) });
    });
    const loaded = await underLoad(server.address, scale, async (client, i) => {
      await client.operations.listOperations({ filter: filterOf(i), pageSize: 100 });
    });
    const busy = loaded.latencies;
    const listCalls = loaded.loopCalls;
    const p99 = (samples: number[]) => quantile([...samples].sort((a, b) => a - b), 0.99) ?? 0;
    const ratio = p99(busy) / p99(idle);
    const over = `${scale.operations.toLocaleString("en-US")} retained operations`;
    return {
      figures: [
        figure("scan", "ListOperations, filter matching nothing", "ms", noMatch, over),
        figure("scan", "GetMachine idle", "ms", idle, `${idle.length} calls`),
        figure(
          "scan",
          `GetMachine while ${LOOPERS} clients loop on filtered lists`,
          "ms",
          busy,
          `${busy.length} calls`,
        ),
        figure("scan", "GetMachine p99 busy / idle", "x", [ratio]),
        figure(
          "scan",
          `control: GetMachine while ${LOOPERS} clients loop on GetMachine`,
          "ms",
          control.latencies,
          `${control.latencies.length} calls`,
        ),
      ],
      details: {
        operations: scale.operations,
        machines: scale.machines,
        seedMs,
        filters: NO_MATCH_FILTERS,
        noMatchP99: p99(noMatch),
        idleP99: p99(idle),
        busyP99: p99(busy),
        ratio,
        controlP99: p99(control.latencies),
        listCallsDuringBusy: listCalls,
      },
    };
  } finally {
    await server?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
