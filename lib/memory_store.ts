/**
 * The in-memory {@linkcode Store}: the default store, for demos and tests (a restart starts
 * clean). Records are immutable snapshots replaced on every change, so a reader holding one is
 * never affected by a later write and reads cost no copy.
 *
 * It is also the cache of the SQLite store (`sqlite_store.ts`): with `persistence`, every change
 * is written through before it replaces the value in memory, and `initial` loads stored records.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import {
  ErrorStatusSchema,
  type Machine,
  MachineSchema,
  type Operation,
  Operation_Phase as OperationPhase,
  OperationSchema,
} from "./gen/baremetal/v1/baremetal_pb.ts";
import { newOperationId } from "./ids.ts";
import { LIMITS } from "./limits.ts";
import { elementSize } from "./snapshot_encoding.ts";
import { isActivePhase, isTerminalPhase, outcomeEffects } from "./lifecycle.ts";
import type { CancelCause, Outcome } from "./lifecycle.ts";
import {
  decodePageToken,
  encodePageToken,
  type Filter,
  type ListQuery,
  type Page,
  parseMachineFilter,
  parseOperationFilter,
  resolvePageSize,
} from "./query.ts";
import {
  applyEffects,
  type CancelOperationResult,
  checkMachineId,
  checkOperationId,
  checkReplay,
  type CreateOperationRequest,
  type CreateOperationResult,
  freezeSnapshot,
  machineBusy,
  machineNotFound,
  type MachinePatch,
  newMachine,
  operationFinished,
  operationNotFound,
  phasePrecondition,
  type RegisterMachineResult,
  stamp,
  type Store,
  validateCreateRequest,
  validateMachine,
  validatePatch,
  validateUpdated,
  withEffectiveState,
} from "./store.ts";

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
}

/** Records a memory store starts with (internal: loaded from a durable store). */
export interface MemoryStoreInitial {
  /** Machines with their sequence numbers, in ascending order. */
  machines: Iterable<{ seq: number; machine: Machine }>;
  /** Operations with their sequence numbers, in ascending order. */
  operations: Iterable<{ seq: number; operation: Operation }>;
}

/** Options of {@linkcode createMemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock for timestamps. @default () => new Date() */
  now?: () => Date;
  /** Write-through persistence of every change. @default none */
  persistence?: MemoryStorePersistence;
  /** Records to start with (their seqs, idempotency index and active set are rebuilt). */
  initial?: MemoryStoreInitial;
}

interface Slot<T> {
  /** 1-based creation sequence number; page tokens point at it. */
  seq: number;
  value: T;
}

/**
 * Creates an empty in-memory store.
 *
 * @param options Clock.
 * @returns The store.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "./gen/baremetal/v1/baremetal_pb.ts";
 * const store = createMemoryStore();
 * store.registerMachine(create(MachineSchema, { machineId: "machine-1" }));
 * ```
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  const store = new MemoryStore(options.now ?? (() => new Date()), options.persistence);
  if (options.initial) store.load(options.initial);
  return store;
}

const NO_PERSISTENCE: MemoryStorePersistence = { machine() {}, operation() {} };

function requestKey(machineId: string, requestId: string): string {
  return `${machineId}\u0000${requestId}`;
}

class MemoryStore implements Store {
  readonly #now: () => Date;
  // Arrays in creation order (nothing is ever deleted), plus id indexes into them.
  readonly #machines: Slot<Machine>[] = [];
  readonly #machineById = new Map<string, Slot<Machine>>();
  readonly #operations: Slot<Operation>[] = [];
  readonly #operationById = new Map<string, Slot<Operation>>();
  readonly #operationsByMachine = new Map<string, Slot<Operation>[]>();
  // Idempotency index: `${machineId}\u0000${requestId}` -> operation id.
  readonly #requests = new Map<string, string>();
  // Active operation ids in creation order.
  readonly #active = new Set<string>();
  readonly #persist: MemoryStorePersistence;
  #nextMachineSeq = 1;
  #nextOperationSeq = 1;

  constructor(now: () => Date, persistence: MemoryStorePersistence = NO_PERSISTENCE) {
    this.#now = now;
    this.#persist = persistence;
  }

  /** Adds stored records (before any other call); see {@linkcode MemoryStoreInitial}. */
  load(initial: MemoryStoreInitial): void {
    for (const { seq, machine } of initial.machines) {
      if (seq < this.#nextMachineSeq) throw new RangeError(`machine seq ${seq} out of order`);
      const slot = { seq, value: freezeSnapshot(machine) };
      this.#machines.push(slot);
      this.#machineById.set(machine.machineId, slot);
      this.#nextMachineSeq = seq + 1;
    }
    for (const { seq, operation } of initial.operations) {
      if (seq < this.#nextOperationSeq) throw new RangeError(`operation seq ${seq} out of order`);
      const slot = { seq, value: freezeSnapshot(operation) };
      this.#operations.push(slot);
      this.#operationById.set(operation.operationId, slot);
      const perMachine = this.#operationsByMachine.get(operation.machineId);
      if (perMachine) perMachine.push(slot);
      else this.#operationsByMachine.set(operation.machineId, [slot]);
      this.#requests.set(
        requestKey(operation.machineId, operation.requestId),
        operation.operationId,
      );
      if (isActivePhase(operation.phase)) this.#active.add(operation.operationId);
      this.#nextOperationSeq = seq + 1;
    }
  }

  registerMachine(machine: Machine): RegisterMachineResult {
    validateMachine(machine);
    const existing = machine.machineId === ""
      ? undefined
      : this.#machineById.get(machine.machineId);
    if (existing) {
      const updated = freezeSnapshot({
        ...existing.value,
        spec: machine.spec,
        labels: { ...machine.labels },
      });
      this.#persist.machine(existing.seq, updated);
      existing.value = updated;
      return { machine: existing.value, created: false };
    }
    const stored = freezeSnapshot(newMachine(machine, stamp(this.#now)));
    const slot = { seq: this.#nextMachineSeq, value: stored };
    this.#persist.machine(slot.seq, stored);
    this.#nextMachineSeq++;
    this.#machines.push(slot);
    this.#machineById.set(stored.machineId, slot);
    return { machine: stored, created: true };
  }

  getMachine(machineId: string): Machine {
    if (machineId !== "") checkMachineId(machineId);
    const slot = this.#machineById.get(machineId);
    if (!slot) throw machineNotFound(machineId);
    return slot.value;
  }

  listMachines(query: ListQuery): Page<Machine> {
    const filter = parseMachineFilter(query.filter ?? "");
    return page(this.#machines, filter, query, "machines");
  }

  updateMachine(machineId: string, patch: MachinePatch): Machine {
    validatePatch(machineId, patch);
    const slot = this.#machineById.get(machineId);
    if (!slot) throw machineNotFound(machineId);
    const updated = freezeSnapshot({
      ...slot.value,
      spec: patch.spec ?? slot.value.spec,
      labels: patch.labels ? { ...patch.labels } : slot.value.labels,
    });
    validateUpdated(updated, patch);
    this.#persist.machine(slot.seq, updated);
    slot.value = updated;
    return slot.value;
  }

  createOperation(request: CreateOperationRequest): CreateOperationResult {
    validateCreateRequest(request);
    const key = requestKey(request.machineId, request.requestId);
    const replayed = this.#requests.get(key);
    if (replayed !== undefined) {
      const original = this.#operationById.get(replayed)!.value;
      checkReplay(original, request);
      return { operation: original, created: false };
    }
    const machineSlot = this.#machineById.get(request.machineId);
    if (!machineSlot) throw machineNotFound(request.machineId);
    const machine = machineSlot.value;
    const refusal = phasePrecondition(request.type, machine);
    if (refusal !== undefined) throw refusal;
    const activeId = machine.status?.activeOperationId ?? "";
    if (activeId !== "") throw machineBusy(this.#operationById.get(activeId)!.value);

    const operation = freezeSnapshot(create(OperationSchema, {
      operationId: newOperationId(),
      machineId: request.machineId,
      requestId: request.requestId,
      type: request.type,
      phase: OperationPhase.PENDING,
      params: { ...request.params },
      createdAt: stamp(this.#now),
    }));
    const slot = { seq: this.#nextOperationSeq, value: operation };
    const busy = freezeSnapshot(withEffectiveState({
      ...machine,
      status: { ...machine.status!, activeOperationId: operation.operationId },
    }));
    this.#persist.operation(slot.seq, operation);
    this.#persist.machine(machineSlot.seq, busy);
    this.#nextOperationSeq++;
    this.#operations.push(slot);
    this.#operationById.set(operation.operationId, slot);
    const perMachine = this.#operationsByMachine.get(operation.machineId);
    if (perMachine) perMachine.push(slot);
    else this.#operationsByMachine.set(operation.machineId, [slot]);
    this.#requests.set(key, operation.operationId);
    this.#active.add(operation.operationId);
    machineSlot.value = busy;
    return { operation, created: true };
  }

  getOperation(operationId: string): Operation {
    checkOperationId(operationId);
    const slot = this.#operationById.get(operationId);
    if (!slot) throw operationNotFound(operationId);
    return slot.value;
  }

  listOperations(query: ListQuery): Page<Operation> {
    const filter = parseOperationFilter(query.filter ?? "");
    const source = filter.machineId === undefined
      ? this.#operations
      : this.#operationsByMachine.get(filter.machineId) ?? [];
    return page(source, filter, query, "operations");
  }

  activeOperations(): Operation[] {
    return [...this.#active].map((id) => this.#operationById.get(id)!.value);
  }

  markRunning(operationId: string): Operation | undefined {
    const slot = this.#operationById.get(operationId);
    if (!slot || slot.value.phase !== OperationPhase.PENDING) return undefined;
    const running = freezeSnapshot({
      ...slot.value,
      phase: OperationPhase.RUNNING,
      startedAt: stamp(this.#now),
    });
    this.#persist.operation(slot.seq, running);
    slot.value = running;
    return slot.value;
  }

  setStage(operationId: string, stage: string): Operation | undefined {
    const slot = this.#operationById.get(operationId);
    if (!slot || slot.value.phase !== OperationPhase.RUNNING) return undefined;
    const staged = freezeSnapshot({ ...slot.value, currentStage: stage });
    this.#persist.operation(slot.seq, staged);
    slot.value = staged;
    return slot.value;
  }

  finishOperation(operationId: string, outcome: Outcome): Operation | undefined {
    const slot = this.#operationById.get(operationId);
    if (!slot || !isActivePhase(slot.value.phase)) return undefined;
    const now = stamp(this.#now);
    // The machine first: the terminal operation and the machine it changed become visible in
    // the same synchronous step, so nobody can observe one without the other.
    const machineSlot = this.#machineById.get(slot.value.machineId);
    const machine = machineSlot &&
      freezeSnapshot(applyEffects(machineSlot.value, {
        operationId,
        effects: outcomeEffects(slot.value.type, outcome),
        now,
      }));
    const finished = freezeSnapshot({
      ...slot.value,
      phase: outcome.phase,
      finishedAt: now,
      error: outcome.phase === OperationPhase.FAILED
        ? create(ErrorStatusSchema, outcome.error)
        : undefined,
    });
    if (machineSlot && machine) this.#persist.machine(machineSlot.seq, machine);
    this.#persist.operation(slot.seq, finished);
    if (machineSlot && machine) machineSlot.value = machine;
    slot.value = finished;
    this.#active.delete(operationId);
    return slot.value;
  }

  cancelOperation(operationId: string, cause: CancelCause): CancelOperationResult {
    checkOperationId(operationId);
    const slot = this.#operationById.get(operationId);
    if (!slot) throw operationNotFound(operationId);
    const current = slot.value;
    if (current.phase === OperationPhase.CANCELED) return { operation: current, changed: false };
    if (isTerminalPhase(current.phase)) throw operationFinished(current);
    const operation = this.finishOperation(operationId, {
      phase: OperationPhase.CANCELED,
      cause,
    })!;
    return { operation, changed: true };
  }
}

// What one listed item adds to its reply (ListMachinesResponse, ListOperationsResponse).
const ELEMENT_SIZE: Record<"machines" | "operations", (item: unknown) => number> = {
  machines: (machine) => elementSize(MachineSchema, machine as Machine),
  operations: (operation) => elementSize(OperationSchema, operation as Operation),
};

function page<T>(
  source: readonly Slot<T>[],
  filter: Filter<T>,
  query: ListQuery,
  list: "machines" | "operations",
): Page<T> {
  const size = resolvePageSize(query.pageSize);
  const after = decodePageToken(query.pageToken ?? "", { list, filter: filter.canonical });
  const items: T[] = [];
  let bytes = 0;
  let lastSeq = after;
  // Slots are sorted by seq; skip straight past the cursor.
  let i = lowerBound(source, after + 1);
  for (; i < source.length; i++) {
    const slot = source[i];
    if (!filter.matches(slot.value)) continue;
    // Cut by count, or by bytes so that no reply exceeds a client's message limit; a page
    // always holds one item. The size is the cached encoding the reply is later sent with.
    const itemBytes = items.length === size ? 0 : ELEMENT_SIZE[list](slot.value);
    if (items.length === size || (items.length > 0 && bytes + itemBytes > LIMITS.maxPageBytes)) {
      return {
        items,
        nextPageToken: encodePageToken({ list, after: lastSeq, filter: filter.canonical }),
      };
    }
    items.push(slot.value);
    bytes += itemBytes;
    lastSeq = slot.seq;
  }
  return { items, nextPageToken: "" };
}

function lowerBound<T>(slots: readonly Slot<T>[], seq: number): number {
  let lo = 0;
  let hi = slots.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (slots[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
