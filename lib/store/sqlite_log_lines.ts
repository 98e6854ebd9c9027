/**
 * The SQLite store's copy of the operations' log journals (table `log_lines`): the
 * {@linkcode LogJournalBacking} of the Store contract. Writes go through the store's fail-stop
 * guard, so a failed write stops the store like any other.
 *
 * @module
 */

import type { DatabaseSync } from "node:sqlite";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type LogChunk, LogChunkSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { LogJournalBacking } from "./mod.ts";

/** The store's fail-stop checks, which every log write goes through. */
export interface StoreGuard {
  /** Throws the store's fatal error once it has stopped. */
  check(): void;
  /** Stops the store after a failed write; returns the error to throw. */
  failStop(what: string, cause: unknown): Error;
}

/**
 * The log backing over a SQLite store's database.
 *
 * @param db The store's open database (its schema has `log_lines`).
 * @param guard The store's fail-stop checks.
 * @returns The backing the engine's log journal writes through.
 */
export function sqliteLogBacking(db: DatabaseSync, guard: StoreGuard): LogJournalBacking {
  const insert = db.prepare(
    "INSERT OR REPLACE INTO log_lines (operation_id, seq, data) VALUES (?, ?, ?)",
  );
  const trim = db.prepare("DELETE FROM log_lines WHERE operation_id = ? AND seq < ?");
  const load = db.prepare(
    "SELECT data FROM log_lines WHERE operation_id = ? ORDER BY seq",
  );
  return {
    append: (chunk: LogChunk) => {
      guard.check();
      try {
        insert.run(chunk.operationId, chunk.seq, toBinary(LogChunkSchema, chunk));
      } catch (error) {
        throw guard.failStop("writing a log line", error);
      }
    },
    trim: (operationId: string, firstSeq: number) => {
      guard.check();
      try {
        trim.run(operationId, firstSeq);
      } catch (error) {
        throw guard.failStop("trimming a log", error);
      }
    },
    load: (operationId: string) => {
      guard.check();
      return (load.all(operationId) as { data: Uint8Array }[]).map((row) =>
        fromBinary(LogChunkSchema, row.data)
      );
    },
  };
}
