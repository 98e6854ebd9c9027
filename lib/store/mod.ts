/**
 * The Store contract: where machines, operations, the idempotency index and (in a durable store)
 * the operations' log lines live, and the rules every implementation must enforce atomically.
 * Implementations: `memory.ts` (in memory; also the cache of the SQLite store) and `sqlite.ts`;
 * the contract tests in `test/store_contract.ts` run against any implementation unchanged.
 *
 * Every method is synchronous and atomic: a store call is one critical section with no `await`
 * inside it, so no other call can interleave with it. Values returned are immutable snapshots
 * (deeply frozen): a caller that wants to change something asks the store to.
 *
 * The folder owns persistence and the rules enforced inside a store call: queries (`query.ts`),
 * request limits (`limits.ts`), snapshot encodings (`snapshot_encoding.ts`), the helpers the
 * implementations share (`records.ts`, `validation.ts`, `refusals.ts`).
 *
 * May import: `lib/model/`, `lib/gen/`, npm packages. Never `lib/engine/`, `lib/provider/`,
 * `lib/grpc/`, `lib/cli/` (checked by `test/architecture_test.ts`).
 *
 * @module
 */

import type {
  LogChunk,
  Machine,
  MachineSpec,
  Operation,
  Operation_OperationType as OperationType,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import type { CancelCause, Outcome } from "../model/lifecycle.ts";
import type { ListQuery, Page } from "./query.ts";

/** Which finished operations a store keeps. */
export interface RetentionPolicy {
  /** Finished operations kept, newest (by creation) first. */
  maxOperations: number;
  /** How long a finished operation is kept after it finished, in milliseconds. */
  maxAgeMs: number;
}

/** Durable storage of journal lines; the engine's log journal appends
 * every line to it, trims it with its per-operation bound, and loads a journal it does not hold
 * from it. */
export interface LogJournalBacking {
  /** Stores one line (its `operationId` and `seq` identify it). */
  append(chunk: LogChunk): void;
  /** Forgets an operation's lines before `firstSeq`. */
  trim(operationId: string, firstSeq: number): void;
  /** An operation's stored lines in ascending `seq` (empty when none). */
  load(operationId: string): LogChunk[];
}

/** Input of {@linkcode Store.createOperation}. */
export interface CreateOperationRequest {
  /** Machine to act on. */
  machineId: string;
  /** Client idempotency key, unique per machine. */
  requestId: string;
  /** Operation type; UNSPECIFIED or unknown values are refused. */
  type: OperationType;
  /** Parameters, already normalised (defaults filled in). */
  params?: Record<string, string>;
}

declare const validated: unique symbol;

/**
 * A {@linkcode CreateOperationRequest} that passed `validateCreateRequest` (`validation.ts`):
 * fields present, within the limits, a known type. The only way to make one is that check, run
 * once where a request enters the domain; the store trusts it and checks only what must be
 * checked atomically.
 */
export type ValidCreateRequest = Readonly<CreateOperationRequest> & { readonly [validated]: true };

/** Result of {@linkcode Store.createOperation}. */
export interface CreateOperationResult {
  /** The new operation, or the original one on a replay. */
  operation: Operation;
  /** `false` when the request was a replay of an earlier one. */
  created: boolean;
}

/** Result of {@linkcode Store.registerMachine}. */
export interface RegisterMachineResult {
  /** The machine as stored. */
  machine: Machine;
  /** `false` when the id existed and only spec and labels were updated. */
  created: boolean;
}

/** Result of {@linkcode Store.cancelOperation}. */
export interface CancelOperationResult {
  /** The operation, CANCELED. */
  operation: Operation;
  /** `false` when it was already CANCELED (nothing changed). */
  changed: boolean;
}

/** Client-owned machine fields {@linkcode Store.updateMachine} may replace. */
export interface MachinePatch {
  /** New spec; unchanged when `undefined`. */
  spec?: MachineSpec;
  /** New labels; unchanged when `undefined`. */
  labels?: Record<string, string>;
}

/**
 * Entry counts of a store's in-memory structures (for tests and diagnostics): with retention
 * they stay bounded by the policy, whatever the history. Index counts include entries that
 * are no longer live but not yet compacted away.
 */
export interface StoreSizes {
  /** Machines. */
  machines: number;
  /** Operations held (active and finished). */
  operations: number;
  /** Finished operations held. */
  finished: number;
  /** Active (PENDING or RUNNING) operations. */
  active: number;
  /** Idempotency keys. */
  requestKeys: number;
  /** Machines with an entry in the per-machine operation index. */
  indexedMachines: number;
  /** Entries of every operation index together (creation order, machine, phase, type). */
  indexEntries: number;
}

/** Persistence of machines and operations with atomic lifecycle transitions. */
export interface Store {
  /**
   * Creates a machine, or updates the spec and labels of an existing one (never its status).
   * A new machine starts in `status.phase` FACTORY_READY (default) or READY.
   * @throws {InvalidArgumentError} For any other initial phase.
   */
  registerMachine(machine: Machine): RegisterMachineResult;
  /** Returns a machine. @throws {NotFoundError} `MACHINE_NOT_FOUND`. */
  getMachine(machineId: string): Machine;
  /** Lists machines in registration order. @throws {InvalidArgumentError} For a bad filter or token. */
  listMachines(query: ListQuery): Page<Machine>;
  /** Replaces spec and/or labels, nothing else. @throws {NotFoundError} `MACHINE_NOT_FOUND`. */
  updateMachine(machineId: string, patch: MachinePatch): Machine;
  /**
   * Creates an operation atomically: idempotency lookup first (a replay returns the original
   * whatever happened since), then machine existence, phase gate, single active operation, then
   * insert and mark the machine busy. The request's shape was checked before (see
   * {@linkcode ValidCreateRequest}).
   * @throws {InvalidArgumentError} `REQUEST_ID_REUSED`.
   * @throws {NotFoundError} `MACHINE_NOT_FOUND`.
   * @throws {FailedPreconditionError} `PHASE_PRECONDITION` or `MACHINE_BUSY`.
   */
  createOperation(request: ValidCreateRequest): CreateOperationResult;
  /** Returns an operation. @throws {NotFoundError} `OPERATION_NOT_FOUND`. */
  getOperation(operationId: string): Operation;
  /** Lists operations in creation order. @throws {InvalidArgumentError} For a bad filter or token. */
  listOperations(query: ListQuery): Page<Operation>;
  /** Every PENDING or RUNNING operation, in creation order. */
  activeOperations(): Operation[];
  /** Moves PENDING to RUNNING (compare-and-set); `undefined` if it was not PENDING. */
  markRunning(operationId: string): Operation | undefined;
  /** Sets `current_stage` of a RUNNING operation; `undefined` if it is not RUNNING. */
  setStage(operationId: string, stage: string): Operation | undefined;
  /**
   * Moves an active operation to its terminal phase and applies the outcome's effects to its
   * machine in the same step; `undefined` when the operation was already terminal (another
   * outcome won the race; terminal phases never change).
   */
  finishOperation(operationId: string, outcome: Outcome): Operation | undefined;
  /**
   * Cancels an operation: PENDING or RUNNING becomes CANCELED with its machine effects; an
   * already CANCELED one is returned unchanged.
   * @throws {NotFoundError} `OPERATION_NOT_FOUND`.
   * @throws {FailedPreconditionError} `OPERATION_FINISHED` for SUCCEEDED or FAILED.
   */
  cancelOperation(operationId: string, cause: CancelCause): CancelOperationResult;
  /**
   * Removes at most `limit` finished operations that fall outside `policy` (beyond the newest
   * `maxOperations` finished ones, or finished more than `maxAgeMs` ago by the store's clock),
   * oldest first, with their idempotency keys and (in a durable store) their log lines. Active
   * operations are never removed. A replay of a removed operation's request id creates a new
   * operation; a page token issued before stays valid.
   *
   * @returns The removed operations.
   */
  pruneOperations(policy: RetentionPolicy, limit: number): Operation[];
  /** Entry counts of the in-memory structures (see {@linkcode StoreSizes}). */
  sizes(): StoreSizes;
  /**
   * Durable storage for the operations' log journals, when the store persists them (the SQLite
   * store does); absent, logs live in memory only.
   */
  readonly logBacking?: LogJournalBacking;
}
