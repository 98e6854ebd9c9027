/**
 * The engine's metrics, from its event feed (`engine.events.listen`, synchronous, one call per
 * published event) and, at scrape time, from its store: operations by type and outcome, their
 * and their steps' durations, step retries, active operations and machines by phase and
 * effective state. The engine knows nothing of them: it already publishes every transition.
 *
 * @module
 */

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Engine } from "../engine/mod.ts";
import { BUILTIN_PLANS } from "../engine/plans.ts";
import {
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationEvent_Kind as EventKind,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { isTerminalPhase, OPERATION_TYPES } from "../model/lifecycle.ts";
import { MAX_PAGE_SIZE } from "../store/query.ts";

/** Options of {@linkcode engineMetrics}. */
export interface EngineMetricsOptions {
  /**
   * Step names whose series exist from the start (at 0), so `rate()` sees their first change.
   * @default the steps of the built-in plans
   */
  steps?: readonly string[];
  /**
   * Most distinct `step` label values; the steps seen beyond it are counted under `other`. Step
   * names come from plans, not from requests, so this only guards against a plan set gone wild.
   * @default 64
   */
  maxSteps?: number;
}

/** Buckets of `bmdemo_operation_duration_seconds`: from a zero-timing run to a slow reimage. */
export const OPERATION_DURATION_BUCKETS: readonly number[] = [
  0.01,
  0.05,
  0.1,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
  1800,
  3600,
];

/** Buckets of `bmdemo_step_duration_seconds`. */
export const STEP_DURATION_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
];

/** The label value of a step past {@linkcode EngineMetricsOptions.maxSteps}. */
export const OTHER_STEP = "other";

const OUTCOMES = [OperationPhase.SUCCEEDED, OperationPhase.FAILED, OperationPhase.CANCELED];
const MACHINE_PHASES = [MachinePhase.FACTORY_READY, MachinePhase.READY, MachinePhase.MAINTENANCE];
const EFFECTIVE_STATES = [
  EffectiveState.NEW,
  EffectiveState.IDLE,
  EffectiveState.BUSY,
  EffectiveState.MAINTENANCE_IDLE,
  EffectiveState.ATTENTION,
  EffectiveState.BLOCKED,
];

/**
 * Registers the engine's metrics in `registry` and starts listening to its events.
 *
 * @param engine The engine observed.
 * @param registry Where the metrics are exposed.
 * @param options Steps known in advance and the step label bound.
 * @returns A function that stops listening.
 */
export function engineMetrics(
  engine: Engine,
  registry: Registry,
  options: EngineMetricsOptions = {},
): () => void {
  const operations = new Counter({
    name: "bmdemo_operations_total",
    help: "Operations that ended, by type and outcome (SUCCEEDED, FAILED, CANCELED).",
    labelNames: ["type", "outcome"] as const,
    registers: [registry],
  });
  const operationDurations = new Histogram({
    name: "bmdemo_operation_duration_seconds",
    help: "Time from an operation's creation to its end (queueing included), by type.",
    labelNames: ["type"] as const,
    buckets: [...OPERATION_DURATION_BUCKETS],
    registers: [registry],
  });
  const stepDurations = new Histogram({
    name: "bmdemo_step_duration_seconds",
    help: "Time from a step's start to its success or final failure (retries and their " +
      "backoff included), by step.",
    labelNames: ["step"] as const,
    buckets: [...STEP_DURATION_BUCKETS],
    registers: [registry],
  });
  const retries = new Counter({
    name: "bmdemo_step_retries_total",
    help: "Attempts of a step after its first, counted when the step succeeds or fails, by step.",
    labelNames: ["step"] as const,
    registers: [registry],
  });
  new Gauge({
    name: "bmdemo_active_operations",
    help: "Operations PENDING or RUNNING.",
    registers: [registry],
    collect() {
      this.set(engine.store.activeOperations().length);
    },
  });
  new Gauge({
    name: "bmdemo_machines",
    help: "Machines by phase and effective state.",
    labelNames: ["phase", "effective_state"] as const,
    registers: [registry],
    collect() {
      for (const [key, count] of countMachines(engine)) {
        const [phase, state] = key.split(" ");
        this.set({ phase, effective_state: state }, count);
      }
    },
  });

  for (const type of OPERATION_TYPES) {
    for (const outcome of OUTCOMES) operations.inc(labels(type, outcome), 0);
    operationDurations.zero({ type: OperationType[type] });
  }
  const steps = new Set<string>();
  const maxSteps = options.maxSteps ?? 64;
  function stepLabel(step: string): string {
    if (steps.has(step)) return step;
    if (steps.size >= maxSteps) return OTHER_STEP;
    steps.add(step);
    retries.inc({ step }, 0);
    stepDurations.zero({ step });
    return step;
  }
  const known = options.steps ??
    [...BUILTIN_PLANS.values()].flatMap((plan) => plan.steps.map((step) => step.name));
  for (const step of known) stepLabel(step);

  // When the running step of each operation started; an entry lives from a step's start to its
  // end or to the operation's end, so there are at most as many as running operations.
  const stepStarts = new Map<string, number>();
  function onEvent(event: OperationEvent): void {
    const op = event.snapshot;
    if (!op || !event.ts) return;
    const id = op.operationId;
    switch (event.kind) {
      case EventKind.STEP_STARTED:
        stepStarts.set(id, timestampMs(event.ts));
        break;
      case EventKind.STEP_SUCCEEDED:
      case EventKind.STEP_FAILED: {
        const step = stepLabel(event.step);
        if (event.attempt > 1) retries.inc({ step }, event.attempt - 1);
        const start = stepStarts.get(id);
        stepStarts.delete(id);
        if (start !== undefined) {
          stepDurations.observe({ step }, seconds(timestampMs(event.ts) - start));
        }
        break;
      }
      case EventKind.TERMINAL:
        stepStarts.delete(id);
        if (!isTerminalPhase(op.phase)) break;
        operations.inc(labels(op.type, op.phase));
        if (op.createdAt && op.finishedAt) {
          operationDurations.observe(
            { type: OperationType[op.type] ?? "UNKNOWN" },
            seconds(timestampMs(op.finishedAt) - timestampMs(op.createdAt)),
          );
        }
        break;
    }
  }
  return engine.events.listen(onEvent);
}

function labels(type: OperationType, outcome: OperationPhase): { type: string; outcome: string } {
  return { type: OperationType[type] ?? "UNKNOWN", outcome: OperationPhase[outcome] ?? "UNKNOWN" };
}

function seconds(ms: number): number {
  return Math.max(0, ms) / 1000;
}

/**
 * Machines per `"<phase> <effective state>"`, every phase and state present (0 when none), read
 * page by page from the store at scrape time: exact, and nothing on the machines' own path.
 */
function countMachines(engine: Engine): Map<string, number> {
  const counts = new Map<string, number>();
  for (const phase of MACHINE_PHASES) {
    for (const state of EFFECTIVE_STATES) counts.set(key(phase, state), 0);
  }
  let pageToken = "";
  do {
    const page = engine.listMachines({ pageSize: MAX_PAGE_SIZE, pageToken });
    for (const machine of page.items) {
      const status = machine.status;
      const k = key(
        status?.phase ?? MachinePhase.PHASE_UNSPECIFIED,
        status?.effectiveState ?? EffectiveState.EFFECTIVE_UNSPECIFIED,
      );
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return counts;
}

function key(phase: MachinePhase, state: EffectiveState): string {
  return `${MachinePhase[phase] ?? "UNKNOWN"} ${EffectiveState[state] ?? "UNKNOWN"}`;
}
