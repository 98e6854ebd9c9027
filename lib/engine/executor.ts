/**
 * The executor: runs operations. One task per operation walks its plan's steps, calling the
 * provider with one `AbortSignal` that fires on user cancel, step timeout or shutdown; retries a
 * failed step with capped exponential backoff and jitter; keeps `current_stage` current; and
 * ends the operation through the store's compare-and-set, so exactly one outcome wins and
 * exactly one terminal event is published, after the machine already reflects it.
 *
 * A bound on concurrently running operations queues the rest (FIFO), so a burst of thousands
 * of operations cannot exhaust the process.
 *
 * Shutdown rule: every PENDING and RUNNING operation is CANCELED (condition OperationCanceled,
 * reason ServerShutdown) and its running step aborted; `shutdown()` resolves once every task has
 * settled. Operations are canceled rather than left to finish because a step is not known to be
 * safe to interrupt halfway or to repeat; the machine is left flagged for an operator.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { ShuttingDownError } from "../model/errors.ts";
import type { EventFeed } from "./events.ts";
import type { LogJournal } from "./log_journal.ts";
import {
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import type { CancelCause, OperationFailure } from "../model/lifecycle.ts";
import { BUILTIN_PLANS, errorText, type Plan, planFor } from "./plans.ts";
import type { LogStream, Provider } from "../provider/mod.ts";
import type { Store } from "../store/mod.ts";
import {
  startedChange,
  stepFailedChange,
  stepStartedChange,
  stepSucceededChange,
} from "./operation_events.ts";
import { defaultBackoff, runStep } from "./step_attempts.ts";
import { finish, type TerminalDeps } from "./terminal.ts";

const logger = getLogger(["bmdemo", "executor"]);

/** What the executor works with. */
export interface ExecutorDeps {
  /** Where operations and machines live. */
  store: Store;
  /** Performs the hardware actions. */
  provider: Provider;
  /** Receives one event per operation transition. */
  events: EventFeed;
  /** Receives every log line. */
  logs: LogJournal;
}

/** Options of {@linkcode createExecutor}. */
export interface ExecutorOptions {
  /** Operations running at once; the rest wait in FIFO order. @default 1024 */
  maxConcurrent?: number;
  /** Delay in ms before retry number `retry` (1-based); tests pass `() => 0`. @default {@linkcode defaultBackoff} */
  backoff?: (retry: number) => number;
  /** Plan of each operation type. @default {@linkcode BUILTIN_PLANS} */
  plans?: ReadonlyMap<OperationType, Plan>;
}

/**
 * Creates an executor.
 *
 * @param deps Store, provider and feeds.
 * @param options Concurrency bound, backoff and plans.
 * @returns The executor.
 * @throws {RangeError} When `maxConcurrent` is not a positive integer.
 */
export function createExecutor(deps: ExecutorDeps, options: ExecutorOptions = {}): Executor {
  return new Executor(deps, options);
}

/** Why an operation's task was aborted. */
class OperationCanceledError extends Error {
  /** Who canceled: read by providers (structurally) that undo work on a user's cancel. */
  readonly cancelCause: CancelCause;

  constructor(operationId: string, cause: CancelCause) {
    super(`operation ${operationId} was canceled (${cause})`);
    this.name = "OperationCanceledError";
    this.cancelCause = cause;
  }
}

/** Runs operations; see the module documentation for the rules. */
export class Executor {
  readonly #store: Store;
  readonly #provider: Provider;
  readonly #events: EventFeed;
  readonly #logs: LogJournal;
  readonly #maxConcurrent: number;
  readonly #backoff: (retry: number) => number;
  readonly #plans: ReadonlyMap<OperationType, Plan>;
  readonly #queued = new Set<string>();
  readonly #running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  #closing = false;
  #idle = Promise.withResolvers<void>();
  /** What ending an operation touches (see `terminal.ts`). */
  readonly #terminal: TerminalDeps;

  /**
   * @param deps Store, provider and feeds.
   * @param options Concurrency bound, backoff and plans.
   */
  constructor(deps: ExecutorDeps, options: ExecutorOptions = {}) {
    this.#store = deps.store;
    this.#provider = deps.provider;
    this.#events = deps.events;
    this.#logs = deps.logs;
    this.#terminal = { store: deps.store, events: deps.events, logs: deps.logs };
    this.#maxConcurrent = options.maxConcurrent ?? 1024;
    if (!Number.isInteger(this.#maxConcurrent) || this.#maxConcurrent < 1) {
      throw new RangeError(
        `Executor maxConcurrent must be a positive integer: got ${this.#maxConcurrent}`,
      );
    }
    this.#backoff = options.backoff ?? ((retry) => defaultBackoff(retry));
    this.#plans = options.plans ?? BUILTIN_PLANS;
    this.#idle.resolve();
  }

  /** Operations running now. */
  get runningCount(): number {
    return this.#running.size;
  }

  /** Operations waiting for a slot. */
  get queuedCount(): number {
    return this.#queued.size;
  }

  /** Whether `shutdown()` was called. */
  get closing(): boolean {
    return this.#closing;
  }

  /**
   * Whether an operation is queued or running here.
   *
   * @param operationId The operation.
   * @returns `true` while the executor holds it.
   */
  holds(operationId: string): boolean {
    return this.#queued.has(operationId) || this.#running.has(operationId);
  }

  /**
   * Schedules a PENDING operation. Idempotent: an operation already queued or running is not
   * scheduled twice, and one that is no longer PENDING is ignored when its turn comes.
   *
   * @param operationId The operation.
   * @throws {ShuttingDownError} After `shutdown()`.
   */
  submit(operationId: string): void {
    if (this.#closing) {
      throw new ShuttingDownError(
        `Cannot run operation ${operationId}: the server is shutting down`,
        { metadata: { operationId } },
      );
    }
    if (this.holds(operationId)) return;
    if (this.#running.size === 0 && this.#queued.size === 0) {
      this.#idle = Promise.withResolvers<void>();
    }
    this.#queued.add(operationId);
    this.#pump();
  }

  /**
   * Cancels an operation on a user's request: it becomes CANCELED with its machine effects, its
   * running step is aborted, and one `Operation canceled` event is published. Cancelling a
   * CANCELED operation returns it and changes nothing.
   *
   * @param operationId The operation.
   * @returns The operation, CANCELED.
   * @throws {NotFoundError} `OPERATION_NOT_FOUND`.
   * @throws {FailedPreconditionError} `OPERATION_FINISHED` when it SUCCEEDED or FAILED.
   */
  cancel(operationId: string): Operation {
    return this.#cancel(operationId, "user");
  }

  #cancel(operationId: string, cause: CancelCause): Operation {
    const ended = finish(this.#terminal, operationId, { phase: OperationPhase.CANCELED, cause });
    // A cancel that changes nothing found the operation CANCELED already, and returns it.
    if (!ended.changed) return ended.operation!;
    this.#queued.delete(operationId);
    this.#running.get(operationId)?.controller.abort(
      new OperationCanceledError(operationId, cause),
    );
    this.#checkIdle();
    return ended.operation;
  }

  /**
   * Resolves when nothing is queued or running (immediately if that is already so).
   *
   * @returns A promise.
   */
  idle(): Promise<void> {
    return this.#idle.promise;
  }

  /**
   * Stops accepting operations, cancels every queued and running one (reason ServerShutdown),
   * and resolves once every task has settled. Idempotent.
   *
   * @returns A promise that resolves when every task has settled.
   */
  async shutdown(): Promise<void> {
    this.#closing = true;
    for (const operationId of [...this.#queued, ...this.#running.keys()]) {
      try {
        this.#cancel(operationId, "shutdown");
      } catch (error) {
        // Already finished between listing and cancelling: nothing to do.
        logger.debug("Operation {operationId} finished before shutdown could cancel it: {error}", {
          operationId,
          error: errorText(error),
        });
      }
    }
    await Promise.all([...this.#running.values()].map((task) => task.done));
    await this.idle();
  }

  #pump(): void {
    while (this.#running.size < this.#maxConcurrent && this.#queued.size > 0) {
      const operationId: string = this.#queued.values().next().value!;
      this.#queued.delete(operationId);
      const controller = new AbortController();
      const done = this.#task(operationId, controller.signal).finally(() => {
        this.#running.delete(operationId);
        this.#pump();
        this.#checkIdle();
      });
      this.#running.set(operationId, { controller, done });
    }
  }

  #checkIdle(): void {
    if (this.#running.size === 0 && this.#queued.size === 0) this.#idle.resolve();
  }

  async #task(operationId: string, signal: AbortSignal): Promise<void> {
    // Let submit() return before any work happens, so the caller's response goes out first.
    await Promise.resolve();
    const operation = this.#store.markRunning(operationId);
    if (!operation) return;
    try {
      await this.#execute(operation, signal);
    } catch (error) {
      // Only a bug gets here (plans and steps report failures as values); never lose the task.
      logger.error("Operation {operationId} crashed: {error}", {
        operationId,
        error: error instanceof Error ? error.stack ?? error.message : String(error),
      });
      this.#fail(operationId, {
        code: "INTERNAL",
        message: `internal error: ${errorText(error)}`,
        retryable: false,
        details: {},
      });
    }
  }

  #log(operationId: string, line: string, stream: LogStream = "stdout"): void {
    this.#logs.append(operationId, line, stream);
  }

  async #execute(operation: Operation, signal: AbortSignal): Promise<void> {
    const id = operation.operationId;
    this.#events.publish(operation, startedChange());
    this.#log(id, `=== Starting operation ${id} (type: ${OperationType[operation.type]}) ===`);
    const params = Object.keys(operation.params).sort();
    if (params.length > 0) {
      this.#log(id, `Parameters: ${params.map((k) => `${k}=${operation.params[k]}`).join(", ")}`);
    }
    let plan: Plan;
    try {
      plan = planFor(operation.type, this.#plans);
    } catch (error) {
      this.#fail(id, { code: "NO_PLAN", message: errorText(error), retryable: false, details: {} });
      return;
    }
    const machine = this.#store.getMachine(operation.machineId);
    for (const [index, step] of plan.steps.entries()) {
      if (signal.aborted) return;
      const staged = this.#store.setStage(id, step.name);
      if (!staged) return;
      const position = { step: step.name, stepIndex: index + 1, stepCount: plan.steps.length };
      this.#log(id, `--- Step ${index + 1}/${plan.steps.length}: ${step.name} ---`);
      this.#events.publish(staged, stepStartedChange(position));
      const result = await runStep(step, {
        operation: staged,
        machine,
        provider: this.#provider,
        signal,
        backoff: this.#backoff,
        log: (line, stream) => this.#log(id, line, stream),
      });
      // Canceled meanwhile: the canceller already ended the operation and told everyone.
      if (!result || signal.aborted) return;
      if (!result.ok) {
        this.#events.publish(
          this.#store.getOperation(id),
          stepFailedChange(position, { attempt: result.attempt, message: result.failure.message }),
        );
        this.#fail(id, result.failure);
        return;
      }
      this.#events.publish(
        this.#store.getOperation(id),
        stepSucceededChange(position, result.attempt),
      );
    }
    finish(this.#terminal, id, { phase: OperationPhase.SUCCEEDED });
  }

  #fail(operationId: string, error: OperationFailure): void {
    finish(this.#terminal, operationId, { phase: OperationPhase.FAILED, error });
  }
}
