/**
 * One plan step run to its end: its attempts, each aborted by its own timeout or by the
 * operation's signal, with a backoff delay between them. A failure is returned as a value
 * (never thrown) so that the executor ends the operation through its one terminal path.
 *
 * @module
 */

import { abortableDelay, untilAborted } from "../model/abort.ts";
import type { Machine, Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { OperationFailure } from "../model/lifecycle.ts";
import { errorText, type PlanStep } from "./plans.ts";
import { type LogStream, type Provider, ProviderError } from "../provider/mod.ts";

/**
 * The default retry delay: 500 ms doubled per retry (500 ms, 1 s, 2 s, …) capped at 10 s, with
 * "equal jitter" (half fixed, half random) so that retries of many operations spread out.
 *
 * @param retry Retry number, starting at 1.
 * @param random Source of randomness in [0, 1).
 * @returns Delay in milliseconds.
 *
 * @example
 * ```ts
 * defaultBackoff(1, () => 0); // 250
 * defaultBackoff(1, () => 0.999); // ~500
 * ```
 */
export function defaultBackoff(retry: number, random: () => number = Math.random): number {
  const ceiling = Math.min(10_000, 500 * 2 ** Math.max(0, retry - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * Formats a delay for log lines: `750ms`, `1s`, `1.5s`.
 *
 * @param ms Milliseconds.
 * @returns The text.
 */
export function formatDelay(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  return `${Number((ms / 1000).toFixed(3))}s`;
}

/** Why a step attempt was aborted by its own timeout. */
class StepTimeoutError extends Error {
  constructor(step: PlanStep) {
    super(`step ${step.name} timed out after ${formatDelay(step.timeoutMs)}`);
    this.name = "StepTimeoutError";
  }
}

/** What a step runs with. */
export interface StepRun {
  /** The operation, as staged for this step. */
  operation: Operation;
  /** Its machine. */
  machine: Machine;
  /** Performs the hardware actions. */
  provider: Provider;
  /** Aborts the step (cancel, shutdown). */
  signal: AbortSignal;
  /** Delay in ms before retry number `retry` (1-based). */
  backoff: (retry: number) => number;
  /** Writes a line to the operation's log. */
  log: (line: string, stream?: LogStream) => void;
}

/** How a step ended when it was not aborted. */
export type StepResult =
  | { ok: true; attempt: number }
  | { ok: false; attempt: number; failure: OperationFailure };

/**
 * Runs one step with its retries.
 *
 * @param step The step.
 * @param run The operation, machine, provider, signal, backoff and log.
 * @returns Success or the failure with the attempt that ended it; `undefined` once `signal` is
 * aborted (the canceller ends the operation).
 */
export async function runStep(step: PlanStep, run: StepRun): Promise<StepResult | undefined> {
  const { operation, machine, signal, log } = run;
  const id = operation.operationId;
  const retries = Math.max(0, step.maxRetries);
  let message = "";
  let timedOut = false;
  let attempts = retries + 1;
  for (let attempt = 1; attempt <= retries + 1; attempt++) {
    if (attempt > 1) {
      const delay = run.backoff(attempt - 1);
      log(`Retry ${attempt - 1}/${retries} after ${formatDelay(delay)}...`);
      try {
        await abortableDelay(delay, signal);
      } catch {
        return undefined;
      }
    }
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new StepTimeoutError(step)), step.timeoutMs);
    const attemptSignal = AbortSignal.any([signal, timeout.signal]);
    try {
      // Raced against the signal so that a provider ignoring its signal cannot wedge the task.
      await untilAborted(
        step.run({
          provider: run.provider,
          machine,
          operation,
          call: { operationId: id, signal: attemptSignal, log },
        }),
        attemptSignal,
      );
      return { ok: true, attempt };
    } catch (error) {
      if (signal.aborted) return undefined;
      timedOut = timeout.signal.aborted;
      message = timedOut ? errorText(timeout.signal.reason) : errorText(error);
      log(`Step failed: ${message}`, "stderr");
      if (!timedOut && error instanceof ProviderError && error.permanent) {
        log("Not retried: the failure is permanent");
        attempts = attempt;
        break;
      }
    } finally {
      clearTimeout(timer);
    }
  }
  return {
    ok: false,
    attempt: attempts,
    failure: {
      code: timedOut ? "STEP_TIMEOUT" : "EXECUTION_FAILED",
      message,
      retryable: true,
      details: { step: step.name, attempts: String(attempts) },
    },
  };
}
