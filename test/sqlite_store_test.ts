import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { toBinary } from "@bufbuild/protobuf";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../lib/model/errors.ts";
import { LogJournal } from "../lib/engine/log_journal.ts";
import {
  MachineSchema,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type ConditionType, getCondition } from "../lib/model/lifecycle.ts";
import { createSqliteStore, type SqliteStore, StoreFatalError } from "../lib/store/sqlite.ts";
import { MIGRATIONS, SCHEMA_VERSION, SchemaVersionError } from "../lib/store/sqlite_schema.ts";
import type { Store } from "../lib/store/mod.ts";
import { SANITIZE } from "./helpers.ts";
import { assertDomainError, machine, storeContract, testClock } from "./store_contract.ts";
import { validateCreateRequest } from "../lib/store/validation.ts";

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
    const enter = store.createOperation(validateCreateRequest({
      machineId: "machine-1",
      requestId: "enter",
      type: OperationType.ENTER_MAINTENANCE,
    })).operation;
    store.markRunning(enter.operationId);
    store.finishOperation(enter.operationId, { phase: OperationPhase.SUCCEEDED });
    const reboot = store.createOperation(validateCreateRequest({
      machineId: "machine-2",
      requestId: "boot",
      type: OperationType.REBOOT,
      params: { force: "true" },
    })).operation;
    store.markRunning(reboot.operationId);
    store.setStage(reboot.operationId, "reboot");
    store.finishOperation(reboot.operationId, {
      phase: OperationPhase.FAILED,
      error: { code: "EXECUTION_FAILED", message: "BMC down", retryable: true, details: {} },
    });
    const reimage = store.createOperation(validateCreateRequest({
      machineId: "machine-1",
      requestId: "img",
      type: OperationType.REIMAGE,
      params: { image_ref: "ubuntu" },
    })).operation;
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
    const replay = store.createOperation(validateCreateRequest({
      machineId: "machine-2",
      requestId: "boot",
      type: OperationType.REBOOT,
      params: { force: "true" },
    }));
    assert.equal(replay.created, false);
    assert.equal(replay.operation.operationId, ids.reboot);
    assertDomainError(
      () =>
        store.createOperation(validateCreateRequest({
          machineId: "machine-2",
          requestId: "boot",
          type: OperationType.REBOOT,
          params: {},
        })),
      InvalidArgumentError,
      "REQUEST_ID_REUSED",
    );
    assertDomainError(
      () =>
        store.createOperation(validateCreateRequest({
          machineId: "machine-1",
          requestId: "other",
          type: OperationType.REBOOT,
        })),
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

/** Runs `count` REBOOTs of machine-1 (READY) to SUCCEEDED, each with a few log lines. */
function rebootsWithLogs(store: SqliteStore, journal: LogJournal, count: number): string[] {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const { operation } = store.createOperation(validateCreateRequest({
      machineId: "machine-1",
      requestId: crypto.randomUUID(),
      type: OperationType.REBOOT,
    }));
    store.markRunning(operation.operationId);
    for (let line = 0; line < 5; line++) {
      journal.append(operation.operationId, `line ${line} ${"x".repeat(200)}`);
    }
    store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
    journal.end(operation.operationId);
    ids.push(operation.operationId);
  }
  return ids;
}

function countRows(path: string, sql: string, ...params: string[]): number {
  const raw = new DatabaseSync(path);
  try {
    return Number((raw.prepare(sql).get(...params) as { n: number }).n);
  } finally {
    raw.close();
  }
}

Deno.test("SqliteStore: pruning deletes the rows and log lines", SANITIZE, async (t) => {
  using db = tempDb(t);
  const policy = { maxOperations: 3, maxAgeMs: 3_600_000 };
  let ids: string[];
  {
    using store = createSqliteStore(db.path);
    store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
    const journal = new LogJournal({ backing: store.logBacking });
    ids = rebootsWithLogs(store, journal, 10);
    assert.equal(store.pruneOperations(policy, 100).length, 7);
  }
  await t.step("a reopened store has only the retained operations", () => {
    using store = createSqliteStore(db.path);
    assert.equal(store.loaded.operations, 3);
    assert.deepEqual(store.listOperations({}).items.map((o) => o.operationId), ids.slice(7));
  });
  await t.step("the pruned operations' log lines are gone, the others stay", () => {
    const lines = "SELECT COUNT(*) AS n FROM log_lines WHERE operation_id = ?";
    assert.equal(countRows(db.path, lines, ids[0]), 0);
    assert.equal(countRows(db.path, lines, ids[9]), 5);
    assert.equal(countRows(db.path, "SELECT COUNT(*) AS n FROM log_lines"), 15);
  });
});

Deno.test("SqliteStore: retention at open loads only the retained rows", SANITIZE, (t) => {
  using db = tempDb(t);
  let ids: string[];
  {
    using store = createSqliteStore(db.path);
    store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
    ids = rebootsWithLogs(store, new LogJournal({ backing: store.logBacking }), 20);
    store.createOperation(validateCreateRequest({
      machineId: "machine-1",
      requestId: "active",
      type: OperationType.REBOOT,
    }));
  }
  using store = createSqliteStore(db.path, { retention: { maxOperations: 4 } });
  assert.equal(store.loaded.pruned, 16);
  assert.equal(store.loaded.operations, 5);
  assert.equal(store.loaded.active, 1);
  assert.deepEqual(
    store.listOperations({ filter: "phase=SUCCEEDED" }).items.map((o) => o.operationId),
    ids.slice(16),
  );
  assert.equal(countRows(db.path, "SELECT COUNT(*) AS n FROM log_lines"), 4 * 5);
});

Deno.test(
  "SqliteStore: the file stops growing over repeated fill and prune cycles",
  SANITIZE,
  (t) => {
    using db = tempDb(t);
    using store = createSqliteStore(db.path);
    store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
    const journal = new LogJournal({ backing: store.logBacking });
    const policy = { maxOperations: 100, maxAgeMs: 3_600_000 };
    const raw = new DatabaseSync(db.path);
    const sizes: number[] = [];
    try {
      for (let cycle = 0; cycle < 8; cycle++) {
        store.transaction(() => rebootsWithLogs(store, journal, 300));
        while (store.pruneOperations(policy, 64).length > 0) { /* batches */ }
        // The main file's size, once the WAL is written back into it.
        raw.exec("PRAGMA wal_checkpoint(TRUNCATE)");
        sizes.push(Deno.statSync(db.path).size);
      }
    } finally {
      raw.close();
    }
    assert.equal(store.sizes().operations, 100);
    // The first cycles reach the steady state; later ones reuse the freed pages (page splits
    // leave a little slack: without pruning, each cycle adds ~25%).
    assert.ok(Math.max(...sizes.slice(3)) <= sizes[2] * 1.1, `file grew: ${sizes.join(", ")}`);
  },
);

Deno.test("SqliteStore: a version 1 file is migrated to incremental auto-vacuum", SANITIZE, (t) => {
  using db = tempDb(t);
  const raw = new DatabaseSync(db.path);
  raw.exec(MIGRATIONS[0].sql);
  raw.exec(
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
  );
  raw.prepare("INSERT INTO schema_version VALUES (1, ?, ?)").run(
    MIGRATIONS[0].description,
    new Date().toISOString(),
  );
  raw.prepare("INSERT INTO machines (seq, machine_id, data) VALUES (1, 'machine-1', ?)").run(
    toBinary(MachineSchema, machine("machine-1", { status: { phase: MachinePhase.READY } })),
  );
  const mode = () =>
    Number((raw.prepare("PRAGMA auto_vacuum").get() as { auto_vacuum: number }).auto_vacuum);
  assert.equal(mode(), 0);
  raw.close();
  {
    using store = createSqliteStore(db.path);
    assert.equal(store.getMachine("machine-1").machineId, "machine-1");
    rebootsWithLogs(store, new LogJournal({ backing: store.logBacking }), 3);
  }
  const after = new DatabaseSync(db.path);
  try {
    assert.equal(
      Number((after.prepare("PRAGMA auto_vacuum").get() as { auto_vacuum: number }).auto_vacuum),
      2,
    );
    assert.throws(() => Deno.statSync(`${db.path}.converting`), Deno.errors.NotFound);
    const versions = after.prepare("SELECT version FROM schema_version ORDER BY version").all()
      .map((row) => Number((row as { version: number }).version));
    assert.deepEqual(versions, MIGRATIONS.map((m) => m.version));
  } finally {
    after.close();
  }
});
