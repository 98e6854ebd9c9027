/**
 * How the in-memory store hands its changes to a durable store and is loaded from one: the
 * SQLite store (`sqlite.ts`) uses the memory store as its write-through cache.
 *
 * @module
 */

import type { Machine, Operation } from "../gen/baremetal/v1/baremetal_pb.ts";

/**
 * Where a durable store writes what the memory store changes (internal: the SQLite store uses
 * it as a write-through cache). Each method is called inside the mutating store call, after
 * validation and before the new value replaces the old one in memory, so a write that throws
 * leaves the memory state unchanged. Records are identified by their creation sequence number.
 */
export interface MemoryStorePersistence {
  /** Writes (inserts or replaces) a machine. */
  machine(seq: number, machine: Machine): void;
  /** Writes (inserts or replaces) an operation; its idempotency key is its machine and request id. */
  operation(seq: number, operation: Operation): void;
  /** Deletes a pruned operation with its idempotency key and its log lines. */
  removeOperation(seq: number, operation: Operation): void;
}

/** Records a memory store starts with (internal: loaded from a durable store). */
export interface MemoryStoreInitial {
  /** Machines with their sequence numbers, in ascending order. */
  machines: Iterable<{ seq: number; machine: Machine }>;
  /** Operations with their sequence numbers, in ascending order. */
  operations: Iterable<{ seq: number; operation: Operation }>;
}
