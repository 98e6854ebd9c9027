/**
 * The dashboard's numbered change feed: every machine and operation change the engine reports,
 * as a ready-to-send Server-Sent Event with an `id:`, kept in a bounded window of the engine's
 * shared {@linkcode EventLog} that every browser reads at its own cursor. A browser that comes
 * back with a `Last-Event-ID` inside the window gets exactly the events it missed; one that fell
 * out of it (or comes from another server run) gets a fresh snapshot instead of a stream with
 * gaps.
 *
 * @module
 */

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Engine } from "../engine/mod.ts";
import { EventLog } from "../engine/event_subscription.ts";
import { planFor } from "../engine/plans.ts";
import {
  type Machine,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { getCondition } from "../model/lifecycle.ts";

/** A machine as the dashboard shows it. */
export interface DashboardMachine {
  /** Machine id. */
  id: string;
  /** Phase: FACTORY_READY, READY or MAINTENANCE. */
  phase: string;
  /** Effective state: NEW, IDLE, BUSY, MAINTENANCE, ATTENTION or BLOCKED. */
  state: string;
  /** Condition Reachable. */
  reachable: boolean;
  /** Condition Provisioned. */
  provisioned: boolean;
  /** The PENDING or RUNNING operation; empty when idle. */
  activeOperationId: string;
}

/** An operation as the dashboard shows it. */
export interface DashboardOperation {
  /** Operation id. */
  id: string;
  /** Machine id. */
  machineId: string;
  /** REBOOT, REIMAGE, ENTER_MAINTENANCE or EXIT_MAINTENANCE. */
  type: string;
  /** PENDING, RUNNING, SUCCEEDED, FAILED or CANCELED. */
  phase: string;
  /** The step running now (or the last one run); empty for operations without steps. */
  stage: string;
  /** 1-based position of `stage` in the plan; 0 when there is none. */
  step: number;
  /** Steps of the plan. */
  steps: number;
  /** Milliseconds since the epoch; 0 when not reached. */
  createdAt: number;
  /** Milliseconds since the epoch; 0 when not reached. */
  startedAt: number;
  /** Milliseconds since the epoch; 0 when not reached. */
  finishedAt: number;
  /** Why it failed; empty otherwise. */
  error: string;
}

/** Options of {@linkcode DashboardFeed}. */
export interface DashboardFeedOptions {
  /**
   * Changes retained for reconnecting browsers; one further behind gets a snapshot.
   * @default 4096
   */
  window?: number;
  /** Recent operations a snapshot lists. @default 50 */
  recentOperations?: number;
  /** Run identifier in every event id (a resume from another run gets a snapshot). @default random */
  epoch?: string;
}

/** A snapshot: the event text and the cursor the live events continue from. */
export interface FeedSnapshot {
  /** The `snapshot` event, ready to send. */
  text: string;
  /** Cursor of the first change after it. */
  cursor: number;
}

const MACHINE_PHASES: Record<number, string> = {
  [MachinePhase.FACTORY_READY]: "FACTORY_READY",
  [MachinePhase.READY]: "READY",
  [MachinePhase.MAINTENANCE]: "MAINTENANCE",
};

const EFFECTIVE_STATES: Record<number, string> = {
  [EffectiveState.NEW]: "NEW",
  [EffectiveState.IDLE]: "IDLE",
  [EffectiveState.BUSY]: "BUSY",
  [EffectiveState.MAINTENANCE_IDLE]: "MAINTENANCE",
  [EffectiveState.ATTENTION]: "ATTENTION",
  [EffectiveState.BLOCKED]: "BLOCKED",
};

/**
 * A machine as the dashboard shows it.
 *
 * @param machine The machine as stored.
 * @returns Its dashboard form.
 */
export function dashboardMachine(machine: Machine): DashboardMachine {
  const status = machine.status;
  const conditions = status?.conditions ?? [];
  return {
    id: machine.machineId,
    phase: MACHINE_PHASES[status?.phase ?? 0] ?? "UNSPECIFIED",
    state: EFFECTIVE_STATES[status?.effectiveState ?? 0] ?? "UNSPECIFIED",
    reachable: getCondition(conditions, "Reachable")?.status ?? false,
    provisioned: getCondition(conditions, "Provisioned")?.status ?? false,
    activeOperationId: status?.activeOperationId ?? "",
  };
}

// Every event of an operation asks for its plan's step names: built once per type.
const STEP_NAMES = new Map<OperationType, readonly string[]>();

function stepNames(type: OperationType): readonly string[] {
  let names = STEP_NAMES.get(type);
  if (names === undefined) {
    try {
      names = planFor(type).steps.map((step) => step.name);
    } catch {
      // An operation type without a built-in plan shows its stage without a position.
      names = [];
    }
    STEP_NAMES.set(type, names);
  }
  return names;
}

/**
 * An operation as the dashboard shows it, with its step's position in the plan ("3/5").
 *
 * @param op The operation.
 * @returns Its dashboard form.
 */
export function dashboardOperation(op: Operation): DashboardOperation {
  const names = stepNames(op.type);
  const at = (ts: Operation["createdAt"]) => ts ? timestampMs(ts) : 0;
  return {
    id: op.operationId,
    machineId: op.machineId,
    type: OperationType[op.type] ?? String(op.type),
    phase: OperationPhase[op.phase] ?? String(op.phase),
    stage: op.currentStage,
    step: names.indexOf(op.currentStage) + 1,
    steps: names.length,
    createdAt: at(op.createdAt),
    startedAt: at(op.startedAt),
    finishedAt: at(op.finishedAt),
    error: op.error ? `${op.error.code}: ${op.error.message}` : "",
  };
}

/**
 * One Server-Sent Event.
 *
 * @param event Event name.
 * @param data JSON-serialisable payload (one `data:` line).
 * @param id The `id:` field, if any.
 * @returns The event text, ending with the blank line.
 *
 * @example
 * ```ts
 * sseEvent("end", { phase: "SUCCEEDED" }, "7"); // 'id: 7\nevent: end\ndata: {"phase":"SUCCEEDED"}\n\n'
 * ```
 */
export function sseEvent(event: string, data: unknown, id?: string): string {
  // JSON.stringify escapes newlines, so the payload is one data line whatever it holds.
  return `${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${
    JSON.stringify(data)
  }\n\n`;
}

/** The dashboard's change feed; see the module documentation. */
export class DashboardFeed implements Disposable {
  /** Identifies this server run in every event id. */
  readonly epoch: string;
  readonly #engine: Engine;
  readonly #log = new EventLog<string>();
  readonly #window: number;
  readonly #recentLimit: number;
  // The newest operations by creation, kept current from the events (insertion order = creation).
  readonly #recent = new Map<string, DashboardOperation>();
  readonly #unlisten: (() => void)[] = [];

  /**
   * Starts following the engine's changes.
   *
   * @param engine The engine served.
   * @param options Window, recent operations, epoch.
   */
  constructor(engine: Engine, options: DashboardFeedOptions = {}) {
    this.#engine = engine;
    this.#window = options.window ?? 4096;
    this.#recentLimit = options.recentOperations ?? 50;
    if (!Number.isInteger(this.#window) || this.#window < 1) {
      throw new RangeError(`DashboardFeed window must be a positive integer: got ${this.#window}`);
    }
    this.epoch = options.epoch ?? crypto.randomUUID().slice(0, 8);
    this.#loadRecent();
    this.#unlisten.push(
      engine.events.listen((event) => this.#onOperation(event)),
      engine.onMachineChange((machine) =>
        this.#push("machine", { machine: dashboardMachine(machine) })
      ),
    );
  }

  /** Cursor of the next change. */
  get next(): number {
    return this.#log.next;
  }

  /** Cursor of the oldest change still retained. */
  get first(): number {
    return this.#log.first;
  }

  /**
   * The current state as one `snapshot` event, and the cursor live changes continue from (read
   * in the same tick, so nothing is missed or sent twice).
   *
   * @returns The snapshot.
   */
  snapshot(): FeedSnapshot {
    const machines: DashboardMachine[] = [];
    let pageToken = "";
    do {
      const page = this.#engine.listMachines({ pageSize: 1000, pageToken });
      for (const machine of page.items) machines.push(dashboardMachine(machine));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    // The recent ones for the list, and every active one for the busy tiles' steps, by creation.
    const operations = new Map<string, DashboardOperation>();
    for (const op of this.#engine.store.activeOperations()) {
      operations.set(op.operationId, dashboardOperation(op));
    }
    for (const [id, op] of this.#recent) operations.set(id, op);
    const cursor = this.#log.next;
    const text = sseEvent("snapshot", {
      serverTime: Date.now(),
      machines,
      operations: [...operations.values()].sort((a, b) => a.createdAt - b.createdAt),
    }, this.#id(cursor));
    return { text, cursor };
  }

  /**
   * Where a browser resumes from its `Last-Event-ID`.
   *
   * @param lastEventId The header's value.
   * @returns The cursor after that event, or `undefined` when it is not one of this run's ids
   * or fell out of the window (the browser needs a snapshot).
   */
  resume(lastEventId: string | null): number | undefined {
    const match = /^([0-9a-f]{8})-(\d{1,15})$/.exec(lastEventId ?? "");
    if (!match || match[1] !== this.epoch) return undefined;
    const cursor = Number(match[2]);
    if (cursor < this.#log.first || cursor > this.#log.next) return undefined;
    return cursor;
  }

  /**
   * The changes from `cursor` on, at most `max` of them.
   *
   * @param cursor Where to read from.
   * @param max Most changes to return.
   * @returns The events' text and the cursor after them, or `undefined` when `cursor` fell out
   * of the window (the reader needs a snapshot).
   */
  read(cursor: number, max = 256): { text: string; cursor: number } | undefined {
    if (cursor < this.#log.first) return undefined;
    const end = Math.min(this.#log.next, cursor + max);
    let text = "";
    for (let seq = cursor; seq < end; seq++) text += this.#log.at(seq);
    return { text, cursor: end };
  }

  /** @returns A promise resolved at the next change. */
  changed(): Promise<void> {
    return this.#log.published();
  }

  /** Stops following the engine. */
  close(): void {
    for (const unlisten of this.#unlisten.splice(0)) unlisten();
    this.#log.wake();
  }

  /** Same as {@linkcode DashboardFeed.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #id(cursor: number): string {
    return `${this.epoch}-${cursor}`;
  }

  #push(event: string, data: Record<string, unknown>): void {
    const log = this.#log;
    // The id names the cursor after this change: what a browser that saw it resumes from.
    log.push(sseEvent(event, { serverTime: Date.now(), ...data }, this.#id(log.next + 1)));
    if (log.length > this.#window) log.trimTo(log.next - this.#window);
    log.wake();
  }

  #onOperation(event: OperationEvent): void {
    const op = event.snapshot;
    if (!op) return;
    const operation = dashboardOperation(op);
    this.#remember(operation);
    let machine: DashboardMachine | undefined;
    try {
      // Read now: the engine publishes after the machine reflects the change.
      machine = dashboardMachine(this.#engine.getMachine(op.machineId));
    } catch {
      // A machine that is gone is left out; the operation still changed.
    }
    this.#push("operation", { operation, machine, message: event.message });
  }

  #remember(operation: DashboardOperation): void {
    const recent = this.#recent;
    if (recent.has(operation.id)) {
      recent.set(operation.id, operation);
      return;
    }
    recent.set(operation.id, operation);
    if (recent.size > this.#recentLimit) recent.delete(recent.keys().next().value!);
  }

  #loadRecent(): void {
    let pageToken = "";
    do {
      const page = this.#engine.listOperations({ pageSize: 1000, pageToken });
      for (const op of page.items) this.#remember(dashboardOperation(op));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }
}
