/**
 * Restart recovery benchmark: builds a SQLite database through the store API (N machines, M
 * operations, most of them terminal and A left RUNNING, as a crash leaves them), then times a
 * restart: open (migrate + load every row) and restart recovery (fail the active operations as
 * INTERRUPTED).
 *
 * Usage: deno task bench:recovery [--machines 10000] [--operations 100000] [--active 1000]
 *   [--db <file>] (default: a temporary file, removed at the end)
 *
 * @module
 */

import { parseScriptArgs, usageError } from "./cli_args.ts";
import { create } from "@bufbuild/protobuf";
import { createEngine } from "../lib/engine/mod.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import {
  MachineSchema,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { createSqliteStore } from "../lib/store/sqlite.ts";
import { validateCreateRequest } from "../lib/store/validation.ts";

const PROGRAM = "deno task bench:recovery";
const HELP = `usage: ${PROGRAM} [flags]

Restart recovery benchmark: builds a SQLite database (N machines, M operations, A of them left
RUNNING as a crash leaves them), then times a restart: open (migrate and load every row) and
recovery (the active operations fail as INTERRUPTED).

  --machines N      machines in the database (default 10000)
  --operations M    operations in the database (default 100000)
  --active A        operations left RUNNING (default 1000)
  --db <file>       database file (default: a temporary file, removed at the end)
  -h, --help        this help`;

const { values } = parseScriptArgs({
  options: {
    machines: { type: "string", default: "10000" },
    operations: { type: "string", default: "100000" },
    active: { type: "string", default: "1000" },
    db: { type: "string" },
  },
}, { program: PROGRAM, help: HELP });
const machines = Number(values.machines);
const operations = Number(values.operations);
const active = Number(values.active);
if (![machines, operations, active].every((n) => Number.isInteger(n) && n >= 0)) {
  usageError(PROGRAM, "--machines, --operations and --active must be whole numbers");
}
if (active > machines || active > operations) {
  usageError(PROGRAM, "--active cannot exceed --machines or --operations");
}
const tmp = values.db === undefined ? await Deno.makeTempDir({ prefix: "bmdemo-bench-" }) : "";
const path = values.db ?? `${tmp}/bench.db`;

try {
  let start = performance.now();
  {
    using store = createSqliteStore(path);
    const BATCH = 1000;
    for (let i = 0; i < machines; i += BATCH) {
      store.transaction(() => {
        for (let j = i; j < Math.min(i + BATCH, machines); j++) {
          store.registerMachine(create(MachineSchema, {
            machineId: `machine-${j + 1}`,
            spec: { provider: "fake", macAddresses: ["02:00:00:00:00:01"] },
            labels: { role: "worker", rack: `rack-${j % 40}` },
            status: { phase: MachinePhase.READY },
          }));
        }
      });
    }
    // Operations go round-robin over the machines; the last `active` ones stay RUNNING.
    for (let i = 0; i < operations; i += BATCH) {
      store.transaction(() => {
        for (let j = i; j < Math.min(i + BATCH, operations); j++) {
          const { operation } = store.createOperation(validateCreateRequest({
            machineId: `machine-${(j % machines) + 1}`,
            requestId: `req-${j}`,
            type: OperationType.REBOOT,
          }));
          store.markRunning(operation.operationId);
          store.setStage(operation.operationId, "reboot");
          if (j < operations - active) {
            store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
          }
        }
      });
    }
  }
  const buildMs = performance.now() - start;
  const size = Deno.statSync(path).size + (walSize(path));

  start = performance.now();
  using store = createSqliteStore(path);
  const openMs = performance.now() - start;
  await using engine = createEngine({ store, provider: createFakeProvider({ timing: "zero" }) });
  const recovery = engine.recover();
  const totalMs = performance.now() - start;
  console.log(
    `built ${machines} machines and ${operations} operations (${active} active) in ` +
      `${(buildMs / 1000).toFixed(1)} s; database ${(size / 1024 / 1024).toFixed(1)} MiB`,
  );
  console.log(
    `reopen: loaded ${store.loaded.machines} machines and ${store.loaded.operations} operations ` +
      `in ${openMs.toFixed(0)} ms`,
  );
  console.log(
    `recovery: ${recovery.operationIds.length} operations failed as INTERRUPTED in ` +
      `${recovery.ms.toFixed(0)} ms`,
  );
  console.log(`restart total (open + load + recovery): ${totalMs.toFixed(0)} ms`);
} finally {
  if (tmp !== "") await Deno.remove(tmp, { recursive: true });
}

function walSize(db: string): number {
  try {
    return Deno.statSync(`${db}-wal`).size;
  } catch {
    return 0;
  }
}
