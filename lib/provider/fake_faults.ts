/**
 * Fault injection of the fake provider: the faults a verb can be given (fail N times, hang), the
 * hooks that hold a verb open, the per-verb attempt counters, and the session each verb's script
 * runs in (logging, abortable waits, the point where it fails).
 *
 * @module
 */

import { abortableDelay, untilAborted } from "../model/abort.ts";
import type { LogStream, ProviderCall, ProviderVerb } from "./mod.ts";

/**
 * A simulated fault of one verb.
 *
 * - `fail`: the verb logs its `ERROR` line on stderr and rejects with an `Error`, at the point the
 *   reference fails it; every attempt when `times` is unset, else only the first `times` calls.
 * - `hang`: the verb logs its first lines, then waits until `call.signal` aborts (a stuck BMC),
 *   which is how step timeouts are tested.
 */
export type Fault =
  | {
    kind: "fail";
    /** How many calls fail before the verb succeeds; every call fails when unset. */
    times?: number;
    /** Error message instead of the reference's, e.g. `simulated repave failure`. */
    message?: string;
  }
  | { kind: "hang" };

/** Fault injection options of the fake provider. */
export interface FaultOptions {
  /**
   * Faults to inject, per verb.
   *
   * @default {{}}
   */
  faults?: Partial<Record<ProviderVerb, Fault>>;
  /**
   * Awaited at the start of a verb, before its first log line, so a test can hold the verb open
   * (e.g. with `Promise.withResolvers`). The verb rejects with the signal's reason if the signal
   * aborts first.
   *
   * @default {{}}
   */
  hooks?: Partial<Record<ProviderVerb, (call: ProviderCall) => Promise<void>>>;
  /**
   * Waits `ms` (always > 0) milliseconds; tests pass a recorder to check how a verb splits its
   * time without waiting for it. It is raced against `signal`, so it need not watch it.
   *
   * @default {an abortable `setTimeout`}
   */
  delay?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** Default error message of each verb's `fail` fault; the reference has none for mint-join and ssh. */
const FAILURE_MESSAGES: Readonly<Record<ProviderVerb, string>> = {
  setNetboot: "simulated netboot failure",
  reboot: "simulated reboot failure",
  repave: "simulated repave failure",
  mintJoinMaterial: "simulated mint-join failure",
  joinNode: "simulated join failure",
  verifyInCluster: "simulated verify failure: node not in cluster",
  rma: "simulated RMA failure",
  executeSshCommand: "simulated ssh failure",
};

const VERBS: readonly ProviderVerb[] = Object.keys(FAILURE_MESSAGES) as ProviderVerb[];

/** One verb's call in progress: logging, abortable waits and its fault. */
export interface Session {
  /** Logs a line on stdout. */
  out(line: string): void;
  /** Waits `ms`, or forever when the verb hangs; rejects with the signal's reason on abort. */
  wait(ms: number): Promise<void>;
  /** When this attempt must fail: logs `line` on stderr and throws the fault's error. */
  failHere(line: string): void;
}

/** Starts the calls of the verbs and counts them. */
export interface VerbCalls {
  /**
   * Counts the call, runs its hook, and returns the helpers the verb's script uses.
   *
   * @param verb The verb being called.
   * @param call The provider call's context.
   * @returns The session the verb's script runs in.
   */
  begin(verb: ProviderVerb, call: ProviderCall): Promise<Session>;
  /**
   * How many times `verb` has been called, failed and aborted calls included.
   *
   * @param verb The verb to count.
   * @returns The number of calls so far.
   */
  attempts(verb: ProviderVerb): number;
}

/**
 * Creates the attempt counters and the session factory of one fake provider.
 *
 * @param options Faults, hooks and delay.
 * @returns Fresh counters, all at zero.
 * @throws {RangeError} When a fault's `times` is not a non-negative integer.
 */
export function createVerbCalls(options: FaultOptions): VerbCalls {
  const faults = options.faults ?? {};
  validateFaults(faults);
  const hooks = options.hooks ?? {};
  const customDelay = options.delay;
  const delay = customDelay === undefined
    ? abortableDelay
    : (ms: number, signal: AbortSignal) => untilAborted(customDelay(ms, signal), signal);
  const counts = new Map<ProviderVerb, number>(VERBS.map((verb) => [verb, 0]));

  /** Counts the call, runs its hook, and returns the helpers the verb's script uses. */
  async function begin(verb: ProviderVerb, call: ProviderCall): Promise<Session> {
    const attempt = (counts.get(verb) ?? 0) + 1;
    counts.set(verb, attempt);
    const { signal } = call;
    signal.throwIfAborted();
    const hook = hooks[verb];
    if (hook !== undefined) await untilAborted(hook(call), signal);
    signal.throwIfAborted();

    const fault = faults[verb];
    const hangs = fault?.kind === "hang";
    const fails = fault?.kind === "fail" && (fault.times === undefined || attempt <= fault.times);
    const log = (line: string, stream: LogStream): void => call.log(line, stream);
    return {
      out: (line) => log(line, "stdout"),
      async wait(ms) {
        signal.throwIfAborted();
        if (hangs) return await waitForAbort(signal);
        // No timer for a zero wait, so the zero profile leaves nothing for test sanitizers to find.
        if (ms > 0) await delay(ms, signal);
      },
      failHere(line) {
        if (!fails) return;
        log(line, "stderr");
        throw new Error(
          fault?.kind === "fail" && fault.message !== undefined
            ? fault.message
            : FAILURE_MESSAGES[verb],
        );
      },
    };
  }

  return {
    begin,
    attempts(verb) {
      return counts.get(verb) ?? 0;
    },
  };
}

function validateFaults(faults: Partial<Record<ProviderVerb, Fault>>): void {
  for (const [verb, fault] of Object.entries(faults)) {
    if (fault?.kind !== "fail" || fault.times === undefined) continue;
    if (!Number.isSafeInteger(fault.times) || fault.times < 0) {
      throw new RangeError(
        `Cannot create fake provider as "faults.${verb}.times" must be a non-negative integer: current value is ${fault.times}`,
      );
    }
  }
}

/**
 * Rejects with `signal.reason` once it aborts; never resolves.
 *
 * @param signal The signal to wait for.
 * @returns A promise that only rejects.
 */
export function waitForAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}
