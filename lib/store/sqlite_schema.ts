/**
 * The SQLite store's file: opening it with the pragmas the store relies on, the schema and its
 * migrations (a file written by a newer bmdemo is refused), the one-time switch to incremental
 * auto-vacuum, and the retention pass at open.
 *
 * @module
 */

import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { Operation_Phase as OperationPhase } from "../gen/baremetal/v1/baremetal_pb.ts";

/** One schema change. */
export interface Migration {
  /** The version the database has once it is applied (1, 2, … without gaps). */
  version: number;
  /** What it changes. */
  description: string;
  /** The statements. */
  sql: string;
}

/** Every migration, in order; the last one's version is {@linkcode SCHEMA_VERSION}. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "machines, operations (with the idempotency key) and log lines",
    sql: `
      CREATE TABLE machines (
        seq INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL UNIQUE,
        data BLOB NOT NULL
      );
      CREATE TABLE operations (
        seq INTEGER PRIMARY KEY,
        operation_id TEXT NOT NULL UNIQUE,
        machine_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        phase INTEGER NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (machine_id, request_id)
      );
      CREATE TABLE log_lines (
        operation_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (operation_id, seq)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    // The mode of a non-empty file changes only by rewriting it, which cannot happen in the
    // migration's transaction: the open does it right after (it checks the mode at every open,
    // so a crash in between is caught up later).
    description: "auto_vacuum=INCREMENTAL: pages freed by pruning are reused and given back " +
      "(a file from version 1 is rewritten once at open)",
    sql: "PRAGMA auto_vacuum = INCREMENTAL;",
  },
];

/** auto_vacuum mode 2. */
export const AUTO_VACUUM_INCREMENTAL = 2;

/** The schema version this code writes. */
export const SCHEMA_VERSION: number = MIGRATIONS[MIGRATIONS.length - 1].version;

/** A database this code cannot use (written by a newer bmdemo). */
export class SchemaVersionError extends Error {
  /**
   * @param path The database.
   * @param found Its schema version.
   */
  constructor(path: string, found: number) {
    super(
      `database "${path}" has schema version ${found}, but this bmdemo knows versions up to ` +
        `${SCHEMA_VERSION}: it was written by a newer bmdemo; run that version, or use another --db`,
    );
    this.name = "SchemaVersionError";
  }
}

/**
 * Opens a database file with the pragmas the store relies on: WAL, synchronous NORMAL, a busy
 * timeout, a WAL size limit, and incremental auto-vacuum (on a new file).
 *
 * @param path The file.
 * @returns The open database.
 */
export function openConfigured(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  try {
    // Takes effect on a new, empty file only; an existing one is converted at open.
    db.exec("PRAGMA auto_vacuum = INCREMENTAL");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec("PRAGMA busy_timeout = 5000");
    // The WAL file is reused after each checkpoint; this truncates it back after a large burst.
    db.exec("PRAGMA journal_size_limit = 16777216");
  } catch (error) {
    db.close();
    throw error;
  }
  return db;
}

/**
 * Rewrites a file whose auto_vacuum is off into one with incremental auto-vacuum, the work of
 * `VACUUM` (which Deno's `node:sqlite` refuses without --allow-all: it needs an attached
 * database): same schema and rows copied into a new file, which then replaces the old one by a
 * rename, so a crash leaves either file whole. Closes `db`; returns the converted file opened.
 */
export function convertToIncrementalVacuum(db: DatabaseSync, path: string): DatabaseSync {
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  const tmp = `${path}.converting`;
  try {
    // Left over by a conversion that crashed: the original is still whole.
    Deno.removeSync(tmp);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const out = new DatabaseSync(tmp);
  try {
    out.exec("PRAGMA auto_vacuum = INCREMENTAL");
    out.exec("BEGIN");
    const objects = db.prepare(
      "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'",
    ).all() as { type: string; name: string; sql: string }[];
    const tables = objects.filter((o) => o.type === "table");
    for (const table of tables) {
      out.exec(table.sql);
      const columns = (db.prepare(`PRAGMA table_info("${table.name}")`).all() as {
        name: string;
      }[]).map((c) => `"${c.name}"`);
      const insert = out.prepare(
        `INSERT INTO "${table.name}" (${columns.join(", ")}) VALUES (${
          columns.map(() => "?").join(", ")
        })`,
      );
      for (const row of db.prepare(`SELECT ${columns.join(", ")} FROM "${table.name}"`).iterate()) {
        insert.run(...Object.values(row as Record<string, SQLInputValue>));
      }
    }
    for (const other of objects.filter((o) => o.type !== "table")) out.exec(other.sql);
    out.exec("COMMIT");
  } finally {
    out.close();
  }
  db.close();
  Deno.renameSync(tmp, path);
  return openConfigured(path);
}

/** Deletes finished operations beyond the newest `keep` with their logs; returns how many. */
export function pruneAtOpen(db: DatabaseSync, keep: number): number {
  if (!Number.isInteger(keep) || keep < 1) {
    throw new RangeError(`retention.maxOperations must be a positive integer: got ${keep}`);
  }
  const beyond = `SELECT seq FROM operations WHERE phase >= ${OperationPhase.SUCCEEDED} ` +
    `ORDER BY seq DESC LIMIT -1 OFFSET ${keep}`;
  db.exec("BEGIN IMMEDIATE");
  try {
    db.exec(
      `DELETE FROM log_lines WHERE operation_id IN (SELECT operation_id FROM operations WHERE seq IN (${beyond}))`,
    );
    const { changes } = db.prepare(`DELETE FROM operations WHERE seq IN (${beyond})`).run();
    db.exec("COMMIT");
    return Number(changes);
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

/**
 * Brings a database to {@linkcode SCHEMA_VERSION} in one transaction.
 *
 * @param db The database.
 * @param path Its name, for errors.
 * @returns The version before migrating.
 */
export function migrate(db: DatabaseSync, path: string): number {
  db.exec("BEGIN IMMEDIATE");
  try {
    db.exec(
      "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
    );
    const row = db.prepare("SELECT MAX(version) AS version FROM schema_version").get() as
      | { version: number | null }
      | undefined;
    const current = Number(row?.version ?? 0);
    if (current > SCHEMA_VERSION) throw new SchemaVersionError(path, current);
    const record = db.prepare(
      "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
    );
    for (const migration of MIGRATIONS) {
      if (migration.version <= current) continue;
      db.exec(migration.sql);
      record.run(migration.version, migration.description, new Date().toISOString());
    }
    db.exec("COMMIT");
    return current;
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}
