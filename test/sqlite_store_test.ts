import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../lib/errors.ts";
import { LogJournal } from "../lib/feeds.ts";
import {
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type ConditionType, getCondition } from "../lib/lifecycle.ts";
import {
  createSqliteStore,
  MIGRATIONS,
  SCHEMA_VERSION,
  SchemaVersionError,
  StoreFatalError,
} from "../lib/sqlite_store.ts";
import type { Store } from "../lib/store.ts";
import { SANITIZE } from "./helpers.ts";
import { assertDomainError, machine, storeContract, testClock } from "./store_contract.ts";

const dir = Deno.makeTempDirSync({ prefix: "bmdemo-sqlite-contract-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch {
    // Best effort.
  }
});
let count = 0;

storeContract(
  "SqliteStore",
  (options) => createSqliteStore(`${dir}/contract-${++count}.db`, options),
);

function tempDb(t: { name: string }): { path: string; [Symbol.dispose](): void } {
  const tmp = Deno.makeTempDirSync({ prefix: "bmdemo-sqlite-" });
  void t;
  return {
    path: `${tmp}/bmdemo.db`,
    [Symbol.dispose]() {
      Deno.removeSync(tmp, { recursive: true });
    },
  };
}

function condition(store: Store, machineId: string, type: ConditionType) {
  return getCondition(store.getMachine(machineId).status!.conditions, type);
}

Deno.test("SqliteStore: data survives close and reopen", SANITIZE, async (t) => {
  using db = tempDb(t);
  const clock = testClock();
  const ids: Record<string, string> = {};
  {
    using store = createSqliteStore(db.path, { now: clock.now });
    store.registerMachine(machine("machine-1", { labels: { role: "worker", rack: "r1" } }));
    store.registerMachine(machine("machine-2", { status: { phase: MachinePhase.READY } }));
    const enter = store.createOperation({
      machineId: "machine-1",
      requestId: "enter",
      type: OperationType.ENTER_MAINTENANCE,
    }).operation;
    store.markRunning(enter.operationId);
    store.finishOperation(enter.operationId, { phase: OperationPhase.SUCCEEDED });
    const reboot = store.createOperation({
      machineId: "machine-2",
      requestId: "boot",
      type: OperationType.REBOOT,
      params: { force: "true" },
    }).operation;
    store.markRunning(reboot.operationId);
    store.setStage(reboot.operationId, "reboot");
    store.finishOperation(reboot.operationId, {
      phase: OperationPhase.FAILED,
      error: { code: "EXECUTION_FAILED", message: "BMC down", retryable: true, details: {} },
    });
    const reimage = store.createOperation({
      machineId: "machine-1",
      requestId: "img",
      type: OperationType.REIMAGE,
      params: { image_ref: "ubuntu" },
    }).operation;
    Object.assign(ids, { enter: enter.operationId, reboot: reboot.operationId, reimage: "" });
    ids.reimage = reimage.operationId;
    const journal = new LogJournal({ backing: store.logBacking, maxLinesPerOperation: 8 });
    for (let i = 1; i <= 3; i++) journal.append(enter.operationId, `line ${i}`);
    journal.end(enter.operationId);
    for (let i = 1; i <= 20; i++) journal.append(reboot.operationId, `line ${i}`);
  }

  using store = createSqliteStore(db.path, { now: clock.now });
  await t.step("machines, operations and their order", () => {
    assert.deepEqual(store.loaded, { ...store.loaded, machines: 2, operations: 3, active: 1 });
    assert.deepEqual(
      store.listMachines({}).items.map((m) => m.machineId),
      ["machine-1", "machine-2"],
    );
    assert.deepEqual(store.getMachine("machine-1").labels, { role: "worker", rack: "r1" });
    assert.equal(store.getMachine("machine-1").status!.phase, MachinePhase.MAINTENANCE);
    assert.equal(store.getMachine("machine-1").status!.activeOperationId, ids.reimage);
    assert.deepEqual(
      store.listOperations({}).items.map((o) => o.operationId),
      [ids.enter, ids.reboot, ids.reimage],
    );
    const page = store.listOperations({ pageSize: 1 });
    assert.deepEqual(
      store.listOperations({ pageSize: 5, pageToken: page.nextPageToken }).items.map((o) =>
        o.operationId
      ),
      [ids.reboot, ids.reimage],
    );
    assert.deepEqual(store.activeOperations().map((o) => o.operationId), [ids.reimage]);
    const failed = store.getOperation(ids.reboot);
    assert.equal(failed.phase, OperationPhase.FAILED);
    assert.equal(failed.currentStage, "reboot");
    assert.equal(failed.error?.message, "BMC down");
    assert.deepEqual(failed.params, { force: "true" });
    assert.ok(Object.isFrozen(failed));
  });
  await t.step("conditions", () => {
    const flag = condition(store, "machine-2", "NeedsIntervention");
    assert.equal(flag?.status, true);
    assert.equal(flag?.reason, "OperationFailed");
    assert.equal(
      store.getMachine("machine-2").status!.effectiveState,
      EffectiveState.ATTENTION,
    );
  });
  await t.step("the idempotency index", () => {
    const replay = store.createOperation({
      machineId: "machine-2",
      requestId: "boot",
      type: OperationType.REBOOT,
      params: { force: "true" },
    });
    assert.equal(replay.created, false);
    assert.equal(replay.operation.operationId, ids.reboot);
    assertDomainError(
      () =>
        store.createOperation({
          machineId: "machine-2",
          requestId: "boot",
          type: OperationType.REBOOT,
          params: {},
        }),
      InvalidArgumentError,
      "REQUEST_ID_REUSED",
    );
    assertDomainError(
      () =>
        store.createOperation({
          machineId: "machine-1",
          requestId: "other",
          type: OperationType.REBOOT,
        }),
      FailedPreconditionError,
      "MACHINE_BUSY",
    );
  });
  await t.step("log lines, with the per-operation bound", async () => {
    const journal = new LogJournal({ backing: store.logBacking, maxLinesPerOperation: 8 });
    journal.end(ids.enter);
    const lines: string[] = [];
    for await (const chunk of journal.read(ids.enter)) {
      lines.push(`${chunk.seq} ${new TextDecoder().decode(chunk.data).trimEnd()}`);
    }
    assert.deepEqual(lines, ["1 line 1", "2 line 2", "3 line 3"]);
    const kept = store.logBacking.load(ids.reboot);
    assert.ok(kept.length <= 8, `kept ${kept.length} lines`);
    assert.equal(kept.at(-1)?.seq, 20n);
    // Appending goes on after the last stored line.
    assert.equal(journal.append(ids.reboot, "line 21")?.seq, 21n);
  });
  await t.step("new records continue the sequences", () => {
    store.registerMachine(machine("machine-3"));
    assert.deepEqual(
      store.listMachines({}).items.map((m) => m.machineId),
      ["machine-1", "machine-2", "machine-3"],
    );
  });
});

Deno.test("SqliteStore: migrations", SANITIZE, async (t) => {
  using db = tempDb(t);
  const versions = () => {
    const raw = new DatabaseSync(db.path);
    try {
      return raw.prepare("SELECT version, applied_at FROM schema_version ORDER BY version")
        .all() as { version: number; applied_at: string }[];
    } finally {
      raw.close();
    }
  };
  await t.step("a fresh database gets the latest version", () => {
    createSqliteStore(db.path).close();
    const rows = versions();
    assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
    assert.equal(rows.at(-1)!.version, SCHEMA_VERSION);
  });
  await t.step("reopening does not run them again", () => {
    const before = versions();
    createSqliteStore(db.path).close();
    assert.deepEqual(versions(), before);
  });
  await t.step("a database from a newer bmdemo is refused", () => {
    const raw = new DatabaseSync(db.path);
    raw.prepare("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)")
      .run(SCHEMA_VERSION + 1, "from the future", new Date().toISOString());
    raw.close();
    assert.throws(
      () => createSqliteStore(db.path),
      (error: unknown) =>
        error instanceof SchemaVersionError &&
        new RegExp(`schema version ${SCHEMA_VERSION + 1}.*up to ${SCHEMA_VERSION}.*newer bmdemo`)
          .test(error.message),
    );
  });
});

Deno.test("SqliteStore: WAL journal mode is on", SANITIZE, (t) => {
  using db = tempDb(t);
  using store = createSqliteStore(db.path);
  store.registerMachine(machine("machine-1"));
  const raw = new DatabaseSync(db.path);
  try {
    assert.deepEqual(
      { ...raw.prepare("PRAGMA journal_mode").get() },
      { journal_mode: "wal" },
    );
  } finally {
    raw.close();
  }
});

Deno.test("SqliteStore: write failures", SANITIZE, async (t) => {
  using db = tempDb(t);
  const fatal: Error[] = [];
  using store = createSqliteStore(db.path, { onFatal: (error) => fatal.push(error) });
  store.registerMachine(machine("machine-1"));
  const raw = new DatabaseSync(db.path);
  await t.step("a failing statement rolls back and changes nothing in memory", () => {
    raw.exec(
      "CREATE TRIGGER no_machines BEFORE INSERT ON machines BEGIN SELECT RAISE(ABORT, 'disk says no'); END",
    );
    assert.throws(() => store.registerMachine(machine("machine-2")), /disk says no/);
    assertDomainError(() => store.getMachine("machine-2"), NotFoundError, "MACHINE_NOT_FOUND");
    assert.equal(store.listMachines({}).items.length, 1);
    assert.deepEqual(fatal, []);
    raw.exec("DROP TRIGGER no_machines");
  });
  await t.step("a failure after memory changed stops the store", () => {
    raw.exec(
      "CREATE TRIGGER no_logs BEFORE INSERT ON log_lines BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    );
    const journal = new LogJournal({ backing: store.logBacking });
    assert.throws(() => journal.append("op-1", "hello"), StoreFatalError);
    assert.equal(fatal.length, 1);
    assert.throws(() => store.getMachine("machine-1"), StoreFatalError);
    assert.throws(() => store.registerMachine(machine("machine-3")), StoreFatalError);
  });
  raw.close();
});
