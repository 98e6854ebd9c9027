/**
 * The engine: one object that wires the store, the provider, the feeds and the executor, and
 * offers the operations the API needs. The gRPC layer only validates the wire shape and calls
 * this; tests drive it directly. It knows nothing of gRPC.
 *
 * The folder owns what happens to an operation: the engine facade (this module), the start
 * request's one check (`start_request.ts`), plans, the executor and its step attempts
 * (`step_attempts.ts`), the one way an operation ends (`terminal.ts`), restart recovery, the
 * retention driver, the event vocabulary (`operation_events.ts`), the event feed (`events.ts`,
 * `event_subscription.ts`) and the log journal (`log_journal.ts`). `createEngine` fills in the
 * defaults (in-memory store, fake provider); the engine is composed by `server.ts`, the demo and
 * tests, never by a surface. May import: `lib/store/`, `lib/provider/`, `lib/model/`,
 * `lib/gen/`, npm packages. Never `lib/grpc/`, `lib/cli/` or a wire package (checked by
 * `test/architecture_test.ts`).
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { InvalidArgumentError, ShuttingDownError } from "../model/errors.ts";
import { createFakeProvider } from "../provider/fake.ts";
import type { TimingProfile } from "../provider/fake_timing.ts";
import { EventFeed, type EventFeedOptions } from "./events.ts";
import { LogJournal, type LogJournalOptions } from "./log_journal.ts";
import { type LogJournalBacking } from "../store/mod.ts";
import {
  type LogChunk,
  type Machine,
  type Operation,
  Operation_Phase as OperationPhase,
  type OperationEvent,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { createExecutor, type Executor, type ExecutorOptions } from "./executor.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";
import { createMemoryStore } from "../store/memory.ts";
import { type StartOperationRequest, validateStartRequest } from "./start_request.ts";
import type { Provider } from "../provider/mod.ts";
import { parseOperationFilter } from "../store/query.ts";
import { createdChange, snapshotCompleteEvent, snapshotEvent } from "./operation_events.ts";
import { recoverInterrupted, type RecoveryResult } from "./recovery.ts";
import { Retention, type RetentionOptions } from "./retention.ts";
import type {
  CreateOperationResult,
  MachinePatch,
  RegisterMachineResult,
  Store,
} from "../store/mod.ts";
import type { ListQuery, Page } from "../store/query.ts";

const logger = getLogger(["bmdemo", "engine"]);

/** Options of {@linkcode createEngine}. */
export interface EngineOptions {
  /** Where data lives. @default a new in-memory store */
  store?: Store;
  /** Hardware provider. @default the fake provider with `timing` */
  provider?: Provider;
  /** Timing profile of the default fake provider. @default "normal" */
  timing?: TimingProfile;
  /** Executor options (concurrency bound, backoff, plans). */
  executor?: ExecutorOptions;
  /** Event feed options (per-watcher queue bound). */
  events?: EventFeedOptions;
  /** Log journal options (lines kept per operation). */
  logs?: LogJournalOptions;
  /**
   * Durable copy of the operation logs. @default the store's
   * {@linkcode Store.logBacking} (the SQLite store has one), else none
   */
  logBacking?: LogJournalBacking;
  /**
   * Which finished operations are kept (with their logs and idempotency keys), and the period
   * of the age sweep. @default 10,000 operations, 168 h, no periodic sweep
   */
  retention?: RetentionOptions;
}

export { operationParams, type StartOperationRequest } from "./start_request.ts";
export { SNAPSHOT_COMPLETE } from "./operation_events.ts";

/** Options of {@linkcode Engine.watch}. */
export interface WatchOptions {
  /** Filter with the ListOperations grammar. */
  filter?: string;
  /**
   * First yield one `Snapshot` event per matching active operation, then one
   * {@linkcode SNAPSHOT_COMPLETE} event without an operation.
   */
  sendInitialSnapshot?: boolean;
  /** Stops the watch when aborted. */
  signal?: AbortSignal;
}

/**
 * Creates an engine.
 *
 * @param options Store, provider, and options of the parts.
 * @returns The engine; dispose it (or call `shutdown()`) to stop its operations.
 *
 * @example
 * ```ts
 * await using engine = createEngine({ timing: "zero" });
 * ```
 */
export function createEngine(options: EngineOptions = {}): Engine {
  return new Engine(options);
}

/** The lifecycle engine; see the module documentation. */
export class Engine implements AsyncDisposable {
  /** Machines and operations. */
  readonly store: Store;
  /** Operation events. */
  readonly events: EventFeed;
  /** Operation logs. */
  readonly logs: LogJournal;
  /** Runs operations. */
  readonly executor: Executor;
  /** Prunes finished operations (after each one finishes, and by its sweep). */
  readonly retention: Retention;
  #shutdown?: Promise<void>;
  #recovery?: RecoveryResult;
  readonly #machineListeners = new Set<(machine: Machine) => void>();

  /**
   * @param options See {@linkcode EngineOptions}.
   */
  constructor(options: EngineOptions = {}) {
    this.store = options.store ?? createMemoryStore();
    this.events = new EventFeed(options.events);
    const backing = options.logBacking ?? this.store.logBacking;
    this.logs = new LogJournal({ ...options.logs, backing: options.logs?.backing ?? backing });
    this.executor = createExecutor({
      store: this.store,
      provider: options.provider ?? createFakeProvider({ timing: options.timing ?? "normal" }),
      events: this.events,
      logs: this.logs,
    }, options.executor);
    this.retention = new Retention(this.store, {
      ...options.retention,
      onPruned: (operations) => this.logs.forget(operations.map((op) => op.operationId)),
    });
    // Pruned after the finish is published, so every subscriber got the terminal event first.
    this.events.listen((event) => {
      if (event.snapshot && isTerminalPhase(event.snapshot.phase)) {
        queueMicrotask(() => this.retention.afterFinish());
      }
    });
  }

  /**
   * Restart recovery (see `recovery.ts`): fails every operation a previous process left PENDING
   * or RUNNING with code INTERRUPTED. Runs once; call it at start, before serving, after
   * subscribing whatever should see its events. Later calls return the first result.
   *
   * @returns The recovered operations and the time taken.
   */
  recover(): RecoveryResult {
    this.#recovery ??= (() => {
      const result = recoverInterrupted(this);
      if (result.operationIds.length > 0) {
        logger.warn(
          "Recovery: {count} operations were active when the previous server stopped; failed them as INTERRUPTED in {ms} ms",
          { count: result.operationIds.length, ms: result.ms.toFixed(1) },
        );
      }
      return result;
    })();
    return this.#recovery;
  }

  /**
   * Registers a machine or updates an existing one's spec and labels.
   *
   * @param machine The machine.
   * @returns The stored machine and whether it was created.
   * @throws {InvalidArgumentError} For a refused initial phase.
   */
  registerMachine(machine: Machine): RegisterMachineResult {
    const result = this.store.registerMachine(machine);
    this.#machineChanged(result.machine);
    return result;
  }

  /**
   * Calls `listener` synchronously after every registration or update of a machine (changes an
   * operation makes come with its events, see {@linkcode Engine.events}). It must not block; an
   * exception it throws is ignored.
   *
   * @param listener Called with the machine as stored.
   * @returns A function that removes the listener.
   */
  onMachineChange(listener: (machine: Machine) => void): () => void {
    this.#machineListeners.add(listener);
    return () => this.#machineListeners.delete(listener);
  }

  #machineChanged(machine: Machine): void {
    for (const listener of this.#machineListeners) {
      try {
        listener(machine);
      } catch {
        // An observer (e.g. the dashboard feed) must not fail the call that changed the machine.
      }
    }
  }

  /**
   * Returns a machine.
   *
   * @param machineId The machine.
   * @returns The machine.
   * @throws {NotFoundError} `MACHINE_NOT_FOUND`.
   */
  getMachine(machineId: string): Machine {
    return this.store.getMachine(machineId);
  }

  /**
   * Lists machines in registration order.
   *
   * @param query Page size, token and filter.
   * @returns One page.
   * @throws {InvalidArgumentError} For a bad filter, page size or token.
   */
  listMachines(query: ListQuery): Page<Machine> {
    return this.store.listMachines(query);
  }

  /**
   * Replaces a machine's spec and/or labels.
   *
   * @param machineId The machine.
   * @param patch New spec and/or labels.
   * @returns The machine.
   * @throws {NotFoundError} `MACHINE_NOT_FOUND`.
   */
  updateMachine(machineId: string, patch: MachinePatch): Machine {
    const machine = this.store.updateMachine(machineId, patch);
    this.#machineChanged(machine);
    return machine;
  }

  /**
   * Starts an operation (or returns the original on a replay of the same request id).
   *
   * @param request Machine, request id, type and parameters.
   * @returns The operation and whether it was created.
   * @throws {ShuttingDownError} During shutdown.
   * @throws {InvalidArgumentError} Missing fields, unknown type, `REQUEST_ID_REUSED`.
   * @throws {NotFoundError} `MACHINE_NOT_FOUND`.
   * @throws {FailedPreconditionError} `PHASE_PRECONDITION`, `MACHINE_BUSY`.
   */
  startOperation(request: StartOperationRequest): CreateOperationResult {
    if (this.executor.closing) {
      throw new ShuttingDownError(
        `Cannot start an operation on machine "${request.machineId}": the server is shutting down`,
        { metadata: { machineId: request.machineId } },
      );
    }
    // Checked once here, where the request enters the domain; the store trusts the result.
    const checked = validateStartRequest(request);
    const result = this.store.createOperation(checked);
    if (result.created) {
      this.events.publish(result.operation, createdChange());
      this.executor.submit(result.operation.operationId);
    } else if (result.operation.phase === OperationPhase.PENDING) {
      // A replay of an operation nobody holds (e.g. admitted by another process sharing the
      // store) is scheduled again; submit() ignores ones already queued or running.
      this.executor.submit(result.operation.operationId);
    }
    return result;
  }

  /**
   * Cancels an operation.
   *
   * @param operationId The operation.
   * @returns The operation, CANCELED.
   * @throws {NotFoundError} `OPERATION_NOT_FOUND`.
   * @throws {FailedPreconditionError} `OPERATION_FINISHED`.
   */
  cancelOperation(operationId: string): Operation {
    return this.executor.cancel(operationId);
  }

  /**
   * Returns an operation.
   *
   * @param operationId The operation.
   * @returns The operation.
   * @throws {NotFoundError} `OPERATION_NOT_FOUND`.
   */
  getOperation(operationId: string): Operation {
    return this.store.getOperation(operationId);
  }

  /**
   * Lists operations in creation order.
   *
   * @param query Page size, token and filter.
   * @returns One page.
   * @throws {InvalidArgumentError} For a bad filter, page size or token.
   */
  listOperations(query: ListQuery): Page<Operation> {
    return this.store.listOperations(query);
  }

  /**
   * Watches operation events. The filter is checked before anything is returned; with
   * `sendInitialSnapshot` the matching active operations come first (message `Snapshot`), then
   * one `Snapshot complete` event without an operation (a sync point: a caller that acts after
   * it sees every event its action causes), then live events, with no gap and no duplicate. A
   * watcher that falls more than the feed's capacity behind gets {@linkcode LaggedError}; one
   * open at shutdown gets {@linkcode ShuttingDownError}.
   *
   * @param options Filter, snapshot flag and signal.
   * @returns An async iterable of events.
   * @throws {InvalidArgumentError} `INVALID_FILTER`, synchronously.
   */
  watch(options: WatchOptions = {}): AsyncIterable<OperationEvent> & Disposable {
    const filter = parseOperationFilter(options.filter ?? "");
    // Subscribe and read the snapshot in one synchronous step: nothing can happen in between.
    const subscription = this.events.subscribe({
      filter: (op) => filter.matches(op),
      signal: options.signal,
    });
    const snapshot = options.sendInitialSnapshot
      ? this.store.activeOperations().filter((op) => filter.matches(op))
      : [];
    return {
      async *[Symbol.asyncIterator]() {
        try {
          if (options.sendInitialSnapshot) {
            for (const op of snapshot) yield snapshotEvent(op);
            // The sync point: everything that happens from here on arrives as a live event.
            yield snapshotCompleteEvent();
          }
          yield* subscription;
        } finally {
          subscription.close();
        }
      },
      [Symbol.dispose]() {
        subscription.close();
      },
    };
  }

  /**
   * Streams an operation's log: retained lines, then live ones, ending once the operation is
   * terminal and every line was read.
   *
   * @param operationId The operation.
   * @param options Signal to stop early.
   * @returns An async iterable of log chunks.
   * @throws {NotFoundError} `OPERATION_NOT_FOUND`, synchronously.
   */
  streamLogs(operationId: string, options: { signal?: AbortSignal } = {}): AsyncIterable<LogChunk> {
    if (operationId === "") {
      throw new InvalidArgumentError("operation_id is required", {
        reason: "MISSING_FIELD",
        metadata: { field: "operation_id" },
      });
    }
    const operation = this.store.getOperation(operationId);
    // An operation that ended without the executor ever holding it (e.g. recovered from a
    // previous run) has a complete journal already.
    if (isTerminalPhase(operation.phase) && !this.executor.holds(operationId)) {
      this.logs.end(operationId);
    }
    return this.logs.read(operationId, options);
  }

  /**
   * Stops accepting operations, cancels the active ones (see the executor's shutdown rule),
   * waits for every task to settle, then ends every watch with {@linkcode ShuttingDownError}
   * (after the events published before). Idempotent.
   *
   * @returns A promise that resolves when everything has stopped.
   */
  shutdown(): Promise<void> {
    this.#shutdown ??= (async () => {
      logger.info("Engine shutting down: {running} running, {queued} queued operations", {
        running: this.executor.runningCount,
        queued: this.executor.queuedCount,
      });
      await this.executor.shutdown();
      this.retention.stop();
      // An error, not the end of the stream: a watcher must reconnect, not conclude it is done.
      this.events.closeAll(
        new ShuttingDownError(
          "the server is shutting down: reconnect (with send_initial_snapshot) once it is back",
        ),
      );
    })();
    return this.#shutdown;
  }

  /** Same as {@linkcode Engine.shutdown}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}
