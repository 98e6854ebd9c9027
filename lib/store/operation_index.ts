/**
 * The in-memory store's operations and their indexes, kept consistent in one place: creation
 * order, by id, machine, type and phase, and the finished ones (what retention prunes). Each
 * index is a {@linkcode SeqIndex}, so a record that leaves one costs amortised O(1).
 *
 * @module
 */

import type {
  Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { isActivePhase } from "../model/lifecycle.ts";
import { SeqIndex, type Slot } from "./seq_index.ts";

/** Every operation a memory store holds, indexed for lists and retention. */
export class OperationIndex {
  /** Operations in creation order. */
  readonly all: SeqIndex<Operation> = new SeqIndex<Operation>();
  /** Operations by id. */
  readonly byId: Map<string, Slot<Operation>> = new Map();
  /** Operations of each machine, in creation order. */
  readonly byMachine: Map<string, SeqIndex<Operation>> = new Map();
  /** Operations of each type, in creation order. */
  readonly byType: Map<OperationType, SeqIndex<Operation>> = new Map();
  /** Operations in each phase, in creation order. */
  readonly byPhase: Map<OperationPhase, SeqIndex<Operation>> = new Map();
  /** Finished operations in creation order: what retention prunes, oldest first. */
  readonly finished: SeqIndex<Operation> = new SeqIndex<Operation>();

  /**
   * Adds a new operation to every index.
   *
   * @param slot The operation's slot.
   */
  add(slot: Slot<Operation>): void {
    const operation = slot.value;
    this.all.add(slot);
    this.byId.set(operation.operationId, slot);
    let perMachine = this.byMachine.get(operation.machineId);
    if (!perMachine) {
      perMachine = new SeqIndex();
      this.byMachine.set(operation.machineId, perMachine);
    }
    perMachine.add(slot);
    let perType = this.byType.get(operation.type);
    if (!perType) {
      perType = new SeqIndex();
      this.byType.set(operation.type, perType);
    }
    perType.add(slot);
    this.#phaseIndex(operation.phase).add(slot);
    if (!isActivePhase(operation.phase)) this.finished.add(slot);
  }

  /**
   * Replaces an operation's value, moving it between phase indexes when its phase changed.
   *
   * @param slot The operation's slot.
   * @param value Its new value.
   */
  setValue(slot: Slot<Operation>, value: Operation): void {
    const before = slot.value.phase;
    slot.value = value;
    if (before === value.phase) return;
    this.#phaseIndex(before).drop();
    this.#phaseIndex(value.phase).add(slot);
  }

  /**
   * Takes a finished operation out of every index.
   *
   * @param slot The operation's slot.
   */
  remove(slot: Slot<Operation>): void {
    const operation = slot.value;
    slot.removed = true;
    this.byId.delete(operation.operationId);
    this.all.drop();
    this.finished.drop();
    this.#phaseIndex(operation.phase).drop();
    this.byType.get(operation.type)?.drop();
    const perMachine = this.byMachine.get(operation.machineId);
    perMachine?.drop();
    if (perMachine?.size === 0) this.byMachine.delete(operation.machineId);
  }

  #phaseIndex(phase: OperationPhase): SeqIndex<Operation> {
    let index = this.byPhase.get(phase);
    if (!index) {
      index = new SeqIndex((slot) => !slot.removed && slot.value.phase === phase);
      this.byPhase.set(phase, index);
    }
    return index;
  }
}
