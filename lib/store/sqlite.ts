/**
 * The SQLite {@linkcode Store} (`node:sqlite`, built into Deno): machines, operations, the
 * idempotency index and operation logs survive a restart.
 *
 * Design: a write-through cache. The in-memory store (`memory.ts`) keeps the whole state
 * and enforces every rule, so the contract holds exactly as it does in memory and reads never
 * touch the database. Each mutating call runs inside one SQLite transaction (BEGIN … COMMIT):
 * the memory store writes the changed rows through its persistence hook before it replaces the
 * values in memory, so a failing statement rolls the transaction back and leaves both sides
 * unchanged (the caller gets the error). At open, every row is loaded (ordered by seq) into a
 * fresh memory store.
 *
 * Fail stop: when SQLite fails after the memory state changed (COMMIT, a log line write, a
 * ROLLBACK that itself fails), memory and disk disagree and the process cannot go on
 * consistently. The store then throws {@linkcode StoreFatalError} from this call and every later
 * one, and calls `onFatal` (the server logs it and exits with code 1); a restart reloads the last
 * committed state and recovery fails what was active.
 *
 * Durability: WAL journal with `synchronous=NORMAL`. A commit is atomic and survives a process
 * crash; on a power loss or OS crash the last few commits (those not yet checkpointed or synced)
 * may be lost, never half-applied. Use `synchronous=FULL` for power-loss durability at the cost
 * of one fsync per transition.
 *
 * Schema: a `schema_version` table and the ordered {@linkcode MIGRATIONS}, applied in one
 * transaction at open. A database whose version is newer than {@linkcode SCHEMA_VERSION} is
 * refused ({@linkcode SchemaVersionError}).
 *
 * Retention: pruned operations are deleted with their log lines in the transaction of their
 * batch (`pruneOperations`). The file uses `auto_vacuum=INCREMENTAL`: freed pages are reused by
 * later writes, and once more than {@linkcode FREE_PAGES_KEPT} are free a few are returned to
 * the file system after each batch (`incremental_vacuum` in small steps), so the file stops
 * growing once the retention limit is reached. A file created before (auto_vacuum off) is
 * rewritten once at open (migration 2, see `convertToIncrementalVacuum`). At open, finished
 * operations beyond `retention.maxOperations` are deleted before anything is loaded, so a
 * restart loads only the retained rows.
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { LogJournalBacking } from "./mod.ts";
import {
  type Machine,
  MachineSchema,
  type Operation,
  OperationSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { createMemoryStore } from "./memory.ts";
import { sqliteLogBacking } from "./sqlite_log_lines.ts";
import {
  AUTO_VACUUM_INCREMENTAL,
  convertToIncrementalVacuum,
  migrate,
  openConfigured,
  pruneAtOpen,
} from "./sqlite_schema.ts";
import { type MemoryStorePersistence } from "./memory_persistence.ts";
import type { RetentionPolicy } from "./mod.ts";
import type { Store, StoreSizes } from "./mod.ts";

/** Free pages a file keeps for reuse; beyond it, pruning gives pages back in small steps. */
export const FREE_PAGES_KEPT = 1024;
/** Pages one incremental vacuum step gives back (4 KiB each): a short write. */
const VACUUM_STEP_PAGES = 256;

/**
 * SQLite failed after the in-memory state changed: the process must stop (see the module
 * documentation). Every later call of the store throws it too.
 */
export class StoreFatalError extends Error {
  /**
   * @param message What failed.
   * @param options The SQLite error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreFatalError";
  }
}

/** Options of {@linkcode createSqliteStore}. */
export interface SqliteStoreOptions {
  /** Clock for timestamps. @default () => new Date() */
  now?: () => Date;
  /** Called once with the error when the store fails stop (e.g. log it and exit). */
  onFatal?: (error: StoreFatalError) => void;
  /**
   * Count limit applied at open, before loading: finished operations beyond the newest
   * `maxOperations` are deleted with their logs (the age limit is left to the first sweep).
   * @default keep every row
   */
  retention?: Pick<RetentionPolicy, "maxOperations">;
  /** Scan budget of list calls (see `createMemoryStore`). @default SCAN_BUDGET */
  scanBudget?: number;
}

/** What was loaded at open. */
export interface SqliteStoreLoaded {
  /** Machines loaded. */
  machines: number;
  /** Operations loaded. */
  operations: number;
  /** Active (PENDING or RUNNING) operations among them: recovery's work. */
  active: number;
  /** Finished operations deleted at open by `retention.maxOperations`. */
  pruned: number;
  /** Time to open, migrate and load, in milliseconds. */
  ms: number;
}

/** A {@linkcode Store} in a SQLite file. */
export interface SqliteStore extends Store, Disposable {
  /** The database file. */
  readonly path: string;
  /** What the open loaded. */
  readonly loaded: SqliteStoreLoaded;
  /** Persistence of operation logs, for the engine's {@linkcode LogJournal}. */
  readonly logBacking: LogJournalBacking;
  /**
   * Runs `fn` (store calls) in one transaction: one commit for all of them (bulk loads).
   *
   * @param fn The calls.
   * @returns What `fn` returned.
   */
  transaction<T>(fn: () => T): T;
  /** Closes the database; later calls throw. Idempotent. */
  close(): void;
}

/**
 * Opens (creating it if needed) a SQLite store: migrates the schema and loads every record.
 *
 * @param path The database file.
 * @param options Clock and fail-stop handler.
 * @returns The store.
 * @throws {SchemaVersionError} For a database from a newer bmdemo.
 *
 * @example
 * ```ts ignore
 * using store = createSqliteStore("bmdemo.db");
 * ```
 */
export function createSqliteStore(path: string, options: SqliteStoreOptions = {}): SqliteStore {
  return openSqliteStore(path, options);
}

function openSqliteStore(path: string, options: SqliteStoreOptions): SqliteStore {
  const start = performance.now();
  let db = openConfigured(path);
  let pruned = 0;
  try {
    migrate(db, path);
    if (options.retention) pruned = pruneAtOpen(db, options.retention.maxOperations);
    const mode = Number(
      (db.prepare("PRAGMA auto_vacuum").get() as { auto_vacuum: number }).auto_vacuum,
    );
    if (mode !== AUTO_VACUUM_INCREMENTAL) {
      db = convertToIncrementalVacuum(db, path);
    } else if (pruned > 0) {
      db.prepare("PRAGMA incremental_vacuum").all();
    }
  } catch (error) {
    if (db.isOpen) db.close();
    throw error;
  }
  return new SqliteStoreImpl(db, path, { ...options, pruned, start });
}

class SqliteStoreImpl implements SqliteStore {
  readonly path: string;
  readonly loaded: SqliteStoreLoaded;
  readonly logBacking: LogJournalBacking;
  readonly #db: DatabaseSync;
  readonly #memory: Store;
  readonly #onFatal?: (error: StoreFatalError) => void;
  #fatal?: StoreFatalError;
  #closed = false;
  #depth = 0;
  readonly #freePages: StatementSync;
  readonly #vacuumStep: StatementSync;

  constructor(
    db: DatabaseSync,
    path: string,
    options: SqliteStoreOptions & { pruned: number; start: number },
  ) {
    this.#db = db;
    this.path = path;
    this.#onFatal = options.onFatal;
    this.#freePages = db.prepare("PRAGMA freelist_count");
    this.#vacuumStep = db.prepare(`PRAGMA incremental_vacuum(${VACUUM_STEP_PAGES})`);
    const removeOperation = db.prepare("DELETE FROM operations WHERE seq = ?");
    const removeLogs = db.prepare("DELETE FROM log_lines WHERE operation_id = ?");
    const putMachine = db.prepare(
      "INSERT INTO machines (seq, machine_id, data) VALUES (?, ?, ?) " +
        "ON CONFLICT (seq) DO UPDATE SET data = excluded.data",
    );
    const putOperation = db.prepare(
      "INSERT INTO operations (seq, operation_id, machine_id, request_id, phase, data) " +
        "VALUES (?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT (seq) DO UPDATE SET phase = excluded.phase, data = excluded.data",
    );
    const persistence: MemoryStorePersistence = {
      machine(seq, machine) {
        putMachine.run(seq, machine.machineId, toBinary(MachineSchema, machine));
      },
      operation(seq, operation) {
        putOperation.run(
          seq,
          operation.operationId,
          operation.machineId,
          operation.requestId,
          operation.phase,
          toBinary(OperationSchema, operation),
        );
      },
      removeOperation(seq, operation) {
        removeOperation.run(seq);
        removeLogs.run(operation.operationId);
      },
    };
    const machines = rows(db.prepare("SELECT seq, data FROM machines ORDER BY seq"))
      .map(({ seq, data }) => ({ seq, machine: fromBinary(MachineSchema, data) }));
    const operations = rows(db.prepare("SELECT seq, data FROM operations ORDER BY seq"))
      .map(({ seq, data }) => ({ seq, operation: fromBinary(OperationSchema, data) }));
    this.#memory = createMemoryStore({
      now: options.now,
      scanBudget: options.scanBudget,
      persistence,
      initial: {
        machines,
        operations,
      },
    });
    this.loaded = {
      machines: machines.length,
      operations: operations.length,
      active: this.#memory.activeOperations().length,
      pruned: options.pruned,
      ms: performance.now() - options.start,
    };
    this.logBacking = sqliteLogBacking(db, {
      check: () => this.#check(),
      failStop: (what, cause) => this.#failStop(what, cause),
    });
  }

  #check(): void {
    if (this.#fatal) throw this.#fatal;
    if (this.#closed) throw new Error(`the SQLite store "${this.path}" is closed`);
  }

  #failStop(what: string, cause: unknown): StoreFatalError {
    if (this.#fatal) return this.#fatal;
    this.#fatal = new StoreFatalError(
      `SQLite failed ${what} in "${this.path}" after the in-memory state changed: ${
        cause instanceof Error ? cause.message : String(cause)
      }; stopping (a restart reloads the last committed state)`,
      { cause },
    );
    try {
      this.#onFatal?.(this.#fatal);
    } catch {
      // The handler's own failure must not hide the fatal error.
    }
    return this.#fatal;
  }

  /** Runs one mutating call in a transaction (or in the caller's, when one is open). */
  #write<T>(fn: () => T): T {
    this.#check();
    if (this.#depth > 0) return fn();
    this.#db.exec("BEGIN IMMEDIATE");
    this.#depth++;
    let result: T;
    try {
      result = fn();
    } catch (error) {
      this.#depth--;
      // The memory store changes nothing when a call throws, so undoing the rows is enough.
      try {
        if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      } catch (rollback) {
        throw this.#failStop("rolling back", rollback);
      }
      throw error;
    }
    this.#depth--;
    try {
      this.#db.exec("COMMIT");
    } catch (error) {
      throw this.#failStop("committing", error);
    }
    return result;
  }

  transaction<T>(fn: () => T): T {
    return this.#write(fn);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
    this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  registerMachine(machine: Machine): ReturnType<Store["registerMachine"]> {
    return this.#write(() => this.#memory.registerMachine(machine));
  }

  getMachine(machineId: string): Machine {
    this.#check();
    return this.#memory.getMachine(machineId);
  }

  listMachines(query: Parameters<Store["listMachines"]>[0]): ReturnType<Store["listMachines"]> {
    this.#check();
    return this.#memory.listMachines(query);
  }

  updateMachine(machineId: string, patch: Parameters<Store["updateMachine"]>[1]): Machine {
    return this.#write(() => this.#memory.updateMachine(machineId, patch));
  }

  createOperation(
    request: Parameters<Store["createOperation"]>[0],
  ): ReturnType<Store["createOperation"]> {
    return this.#write(() => this.#memory.createOperation(request));
  }

  getOperation(operationId: string): Operation {
    this.#check();
    return this.#memory.getOperation(operationId);
  }

  listOperations(
    query: Parameters<Store["listOperations"]>[0],
  ): ReturnType<Store["listOperations"]> {
    this.#check();
    return this.#memory.listOperations(query);
  }

  activeOperations(): Operation[] {
    this.#check();
    return this.#memory.activeOperations();
  }

  markRunning(operationId: string): Operation | undefined {
    return this.#write(() => this.#memory.markRunning(operationId));
  }

  setStage(operationId: string, stage: string): Operation | undefined {
    return this.#write(() => this.#memory.setStage(operationId, stage));
  }

  finishOperation(
    operationId: string,
    outcome: Parameters<Store["finishOperation"]>[1],
  ): Operation | undefined {
    return this.#write(() => this.#memory.finishOperation(operationId, outcome));
  }

  cancelOperation(
    operationId: string,
    cause: Parameters<Store["cancelOperation"]>[1],
  ): ReturnType<Store["cancelOperation"]> {
    return this.#write(() => this.#memory.cancelOperation(operationId, cause));
  }

  pruneOperations(policy: RetentionPolicy, limit: number): Operation[] {
    const pruned = this.#write(() => this.#memory.pruneOperations(policy, limit));
    if (pruned.length > 0 && this.#depth === 0) this.#giveBackPages();
    return pruned;
  }

  /** Returns a few free pages to the file system once more than the reserve are free. */
  #giveBackPages(): void {
    const free = Number((this.#freePages.get() as { freelist_count: number }).freelist_count);
    if (free <= FREE_PAGES_KEPT) return;
    try {
      this.#vacuumStep.all();
    } catch (error) {
      // Nothing in memory depends on it: the pages stay free and are reused.
      void error;
    }
  }

  sizes(): StoreSizes {
    this.#check();
    return this.#memory.sizes();
  }
}

function rows(statement: StatementSync): { seq: number; data: Uint8Array }[] {
  return (statement.all() as { seq: number | bigint; data: Uint8Array }[])
    .map((row) => ({ seq: Number(row.seq), data: row.data }));
}
