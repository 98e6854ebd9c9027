/**
 * The benchmark's `soak` scenario (`scripts/bench.ts --scenarios soak [--seconds 600] [--db]`):
 * a server process of its own (`--timing zero --retain-operations 5000`, and a fresh SQLite file
 * with `--db`) under a fixed-rate mixed load for `--seconds`, its RSS (and database size) sampled
 * every 10 s. Once the retention cap is reached memory must be flat: the figure of merit is RSS at
 * the end against RSS half-way (+10% allowed), and likewise for the database file.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { connectClient, ConnectError, statusName } from "../../lib/client/mod.ts";
import {
  MachineService,
  MachineStatus_Phase as MachinePhase,
  OperationService,
  RegisterMachineRequestSchema,
} from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type Figure, figure, textFigure } from "./stats.ts";
import { readRss } from "./memory.ts";
import { spawnServer } from "../server_process.ts";

/** Operations per second the soak sends, whatever the server's speed (open loop). */
export const SOAK_RATE = 100;
/** Finished operations the soak's server keeps (`--retain-operations`). */
export const SOAK_RETAIN_OPERATIONS = 5000;
/** Machines the load is spread over. */
const MACHINES = 1000;
/** Concurrent watchers reading every event. */
const WATCHERS = 3;
/** At most this many calls pending: a server that falls behind is not buried. */
const MAX_IN_FLIGHT = 500;
/** RSS is sampled this often (less in a run shorter than 40 s, so it still has 5 samples). */
const SAMPLE_MS = 10_000;
/** Allowed growth from the half-way sample to the end. */
const FLAT_TOLERANCE = 0.1;

/**
 * One in every 100 calls, in this order: the mix of the load. Lifecycle operations walk each
 * machine through ENTER_MAINTENANCE, REBOOT, REIMAGE, EXIT_MAINTENANCE, REBOOT (from READY), so
 * each is allowed in the phase the previous one left.
 */
const MIX: readonly Call[] = weighted([
  ["get", 40],
  ["operation", 30],
  ["listMachines", 5],
  ["listOperations", 10],
  ["logs", 10],
  ["register", 5],
]);

type Call = "get" | "operation" | "listMachines" | "listOperations" | "logs" | "register";

function weighted(entries: [Call, number][]): Call[] {
  const out: Call[] = [];
  const left = new Map(entries);
  // Interleaved, so a short run still sees every kind of call.
  while ([...left.values()].some((n) => n > 0)) {
    for (const [call, n] of left) {
      if (n > 0) {
        out.push(call);
        left.set(call, n - 1);
      }
    }
  }
  return out;
}

const CYCLE = ["enter", "reboot", "reimage", "exit", "reboot"] as const;

/** Options of {@linkcode runSoak}. */
export interface SoakOptions {
  /** How long the load runs. */
  seconds: number;
  /** Keep the server's state in a fresh SQLite file and sample its size too. */
  db: boolean;
  /** Extra `deno run` flags for the server process (the bench's `--server-flags`). */
  denoFlags: string[];
  /** Progress lines. */
  log(message: string): void;
}

/** One sample of the soak's server. */
export interface SoakSample {
  /** Seconds since the load started. */
  atS: number;
  /** Server VmRSS in MB, null when unreadable. */
  rssMb: number | null;
  /** SQLite file plus its WAL, in MB (with `--db`). */
  dbMb?: number;
}

/** What the soak measured. */
export interface SoakResult {
  /** Table rows. */
  figures: Figure[];
  /** JSON details. */
  details: {
    seconds: number;
    serverArgs: string[];
    samples: SoakSample[];
    calls: Record<string, number>;
    errors: Record<string, number>;
    skipped: number;
    watcherEvents: number[];
    watcherDrops: number;
    rssFlat: boolean | null;
    dbFlat?: boolean | null;
  };
}

/**
 * Runs the soak: starts its own server, registers the machines, then sends {@linkcode SOAK_RATE}
 * calls per second for `seconds`, sampling the server's memory.
 *
 * @param options Duration, store and server flags.
 * @returns The figures and details.
 */
export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const dir = options.db ? await Deno.makeTempDir({ prefix: "bmdemo-soak-" }) : undefined;
  const dbPath = dir ? `${dir}/soak.db` : undefined;
  const serverArgs = ["--timing", "zero", "--retain-operations", String(SOAK_RETAIN_OPERATIONS)];
  if (dbPath) serverArgs.push("--db", dbPath);
  await using server = await spawnServer(serverArgs, { denoFlags: options.denoFlags });
  options.log(`soak: server.ts ${serverArgs.join(" ")} (pid ${server.pid}) on ${server.address}`);
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);
  const run = crypto.randomUUID().slice(0, 8);
  const id = (n: number): string => `soak-${n}`;

  const calls: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const count = (what: Record<string, number>, key: string): void => {
    what[key] = (what[key] ?? 0) + 1;
  };
  let registered = 0;
  const register = async (): Promise<void> => {
    // Past the pool size a register names an existing machine: ALREADY_EXISTS, by design.
    const n = registered < MACHINES ? ++registered : 1 + (registered++ % MACHINES);
    await machines.registerMachine(create(RegisterMachineRequestSchema, {
      machine: {
        machineId: id(n),
        spec: { provider: "fake", serial: `SN-SOAK-${n}`, rack: `rack-${n % 25}` },
        status: { phase: MachinePhase.FACTORY_READY },
        labels: { role: "worker" },
      },
    }));
  };
  while (registered < MACHINES) await register();

  const watcherEvents = Array.from({ length: WATCHERS }, () => 0);
  let watcherDrops = 0;
  let stopping = false;
  const watchers = watcherEvents.map(async (_, i) => {
    while (!stopping) {
      // Each watcher on its own connection, as separate clients would be.
      using client = connectClient(OperationService, server.address);
      const stream = client.watchOperations({ filter: "" });
      try {
        for await (const _ of stream) {
          watcherEvents[i]++;
          if (stopping) break;
        }
      } catch (error) {
        if (!stopping) {
          watcherDrops++;
          count(errors, `watch ${errorName(error)}`);
          // Reconnect as a client would, without spinning on a server that refuses.
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }
  });

  const recentOps: string[] = [];
  const step = new Map<number, number>();
  let nextMachine = 0;
  const operation = async (): Promise<void> => {
    const n = 1 + (nextMachine++ % MACHINES);
    const at = step.get(n) ?? 0;
    step.set(n, at + 1);
    const kind = CYCLE[at % CYCLE.length];
    const request = { machineId: id(n), requestId: `${run}-${n}-${at}` };
    const op = kind === "enter"
      ? await machines.enterMaintenance(request)
      : kind === "reboot"
      ? await machines.rebootMachine(request)
      : kind === "reimage"
      ? await machines.reimageMachine(request)
      : await machines.exitMaintenance(request);
    recentOps.push(op.operationId);
    if (recentOps.length > 100) recentOps.shift();
  };
  const perform: Record<Call, () => Promise<unknown>> = {
    get: () => machines.getMachine({ machineId: id(1 + Math.floor(Math.random() * MACHINES)) }),
    operation,
    listMachines: () => machines.listMachines({ pageSize: 100 }),
    listOperations: () =>
      operations.listOperations({
        pageSize: 50,
        filter: `machine_id=${id(1 + Math.floor(Math.random() * MACHINES))}`,
      }),
    logs: async () => {
      const operationId = recentOps[Math.floor(Math.random() * recentOps.length)];
      if (operationId === undefined) return;
      for await (const _ of operations.streamOperationLogs({ operationId })) { /* read all */ }
    },
    register,
  };

  const durationMs = options.seconds * 1000;
  const sampleMs = Math.min(SAMPLE_MS, durationMs / 4);
  const samples: SoakSample[] = [];
  const sample = async (atMs: number): Promise<void> => {
    const s: SoakSample = { atS: atMs / 1000, rssMb: readRss(server.pid)?.rssMb ?? null };
    if (dbPath) s.dbMb = (await fileBytes(dbPath) + await fileBytes(`${dbPath}-wal`)) / 2 ** 20;
    samples.push(s);
  };

  let inFlight = 0;
  let skipped = 0;
  const pending = new Set<Promise<void>>();
  const start = performance.now();
  await sample(0);
  let nextSample = sampleMs;
  for (let i = 0;; i++) {
    const due = start + (i * 1000) / SOAK_RATE;
    if (due - start >= durationMs) break;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (nextSample < durationMs && performance.now() - start >= nextSample) {
      await sample(nextSample);
      nextSample += sampleMs;
    }
    if (inFlight >= MAX_IN_FLIGHT) {
      skipped++;
      continue;
    }
    const call = MIX[i % MIX.length];
    count(calls, call);
    inFlight++;
    const p = perform[call]().then(
      () => {},
      (error) => count(errors, `${call} ${errorName(error)}`),
    ).finally(() => {
      inFlight--;
      pending.delete(p);
    });
    pending.add(p);
  }
  await Promise.all(pending);
  await sample(durationMs);
  stopping = true;
  // Ends the watch streams: one last operation wakes every watcher so it sees `stopping`.
  await machines.rebootMachine({ machineId: id(1), requestId: `${run}-stop` }).catch(() => {});
  await Promise.race([Promise.all(watchers), new Promise((r) => setTimeout(r, 2000))]);
  await server.stop();
  if (dir) await Deno.remove(dir, { recursive: true });

  const half = samples.reduce((best, s) =>
    Math.abs(s.atS - options.seconds / 2) < Math.abs(best.atS - options.seconds / 2) ? s : best
  );
  const first = samples[0];
  const last = samples[samples.length - 1];
  const figures: Figure[] = [];
  const flat = (key: "rssMb" | "dbMb", label: string): boolean | null => {
    const [a, b, c] = [first[key], half[key], last[key]];
    if (a == null || b == null || c == null) {
      figures.push(textFigure("soak", `${label} start / half-way / end`, "n/a"));
      return null;
    }
    figures.push(figure("soak", `${label} at start (0 s)`, "MB", [a]));
    figures.push(figure("soak", `${label} half-way (${half.atS} s)`, "MB", [b]));
    figures.push(figure("soak", `${label} at the end (${last.atS} s)`, "MB", [c]));
    const ok = c <= b * (1 + FLAT_TOLERANCE);
    figures.push(
      textFigure("soak", `${label} end <= half-way + 10%`, ok ? "pass" : "FAIL (grows)"),
    );
    return ok;
  };
  const rssFlat = flat("rssMb", "server RSS");
  const dbFlat = dbPath ? flat("dbMb", "SQLite file + WAL") : undefined;
  const sent = Object.values(calls).reduce((a, b) => a + b, 0);
  figures.push(figure("soak", "calls sent/s (fixed rate)", "1/s", [sent / options.seconds]));
  figures.push(
    textFigure(
      "soak",
      "errors by call and reason",
      Object.entries(errors).map(([k, v]) => `${k} ${v}`).join(", ") || "none",
    ),
  );
  return {
    figures,
    details: {
      seconds: options.seconds,
      serverArgs,
      samples,
      calls,
      errors,
      skipped,
      watcherEvents,
      watcherDrops,
      rssFlat,
      ...(dbPath ? { dbFlat } : {}),
    },
  };
}

function errorName(error: unknown): string {
  if (error instanceof ConnectError) return statusName(error.code);
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

async function fileBytes(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return 0;
  }
}
