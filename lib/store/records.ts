/**
 * Machine records as a store keeps them: building a newly registered machine, recomputing its
 * effective state, applying a finished operation's effects, and the store's clock stamp. Pure
 * functions shared by the Store implementations.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "../model/errors.ts";
import {
  type Machine,
  MachineSchema,
  MachineStatus_Phase as MachinePhase,
  MachineStatusSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { newMachineId } from "../model/ids.ts";
import { effectiveState, type MachineEffects, setCondition } from "../model/lifecycle.ts";
import { validateMachine } from "./validation.ts";

/**
 * Builds the stored form of a newly registered machine: the client's spec and labels, a
 * server-owned status with the permitted initial phase.
 *
 * @param input The machine from the request.
 * @param now Current time (unused today; kept so every constructor takes the clock).
 * @returns The machine to store, not yet frozen.
 * @throws {InvalidArgumentError} When the initial phase is not FACTORY_READY or READY.
 */
export function newMachine(input: Machine, now: Timestamp): Machine {
  void now;
  const requested = input.status?.phase ?? MachinePhase.PHASE_UNSPECIFIED;
  const phase = requested === MachinePhase.PHASE_UNSPECIFIED
    ? MachinePhase.FACTORY_READY
    : requested;
  validateMachine(input);
  const machineId = input.machineId === "" ? newMachineId() : input.machineId;
  if (phase !== MachinePhase.FACTORY_READY && phase !== MachinePhase.READY) {
    throw new InvalidArgumentError(
      `Cannot register machine "${machineId}" in phase ${
        MachinePhase[phase] ?? phase
      }: a new machine starts in FACTORY_READY or READY`,
      { metadata: { machineId } },
    );
  }
  return withEffectiveState(create(MachineSchema, {
    machineId,
    spec: input.spec,
    labels: { ...input.labels },
    status: create(MachineStatusSchema, { phase, conditions: [], activeOperationId: "" }),
  }));
}

/**
 * Returns a copy of `machine` with `status.effective_state` recomputed from its other fields.
 *
 * @param machine A machine with a status.
 * @returns The updated copy.
 */
export function withEffectiveState(machine: Machine): Machine {
  const status = machine.status ?? create(MachineStatusSchema);
  return {
    ...machine,
    status: { ...status, effectiveState: effectiveState(status) },
  };
}

/**
 * Applies an outcome's machine effects: conditions, phase, `last_seen`, and clears the active
 * operation when it is the one that finished. Spec and labels are left as they are.
 *
 * @param machine The machine as stored now.
 * @param change The finished operation's id and the effects to apply.
 * @returns The updated machine, not yet frozen.
 */
export function applyEffects(
  machine: Machine,
  change: { operationId: string; effects: MachineEffects; now: Timestamp },
): Machine {
  const status = machine.status ?? create(MachineStatusSchema);
  let conditions = status.conditions;
  for (const update of change.effects.conditions) {
    conditions = setCondition(conditions, update, change.now);
  }
  return withEffectiveState({
    ...machine,
    status: {
      ...status,
      phase: change.effects.phase ?? status.phase,
      conditions,
      lastSeen: change.effects.seen ? change.now : status.lastSeen,
      activeOperationId: status.activeOperationId === change.operationId
        ? ""
        : status.activeOperationId,
    },
  });
}

/**
 * Converts a clock reading into a protobuf timestamp.
 *
 * @param now A clock.
 * @returns The current time as a timestamp.
 */
export function stamp(now: () => Date): Timestamp {
  return timestampFromDate(now());
}
