/**
 * The gate that protects BMCs from bursts (`--bmc-concurrency`): at most N calls in flight per
 * BMC key, the others wait first in, first out in a bounded queue. A waiter whose signal aborts
 * leaves the queue at once; a full queue refuses the call with an error naming the limit.
 *
 * @example
 * ```ts
 * const gate = createBmcGate({ concurrency: 2 });
 * const answer = await gate.run("https://10.0.0.5:443", new AbortController().signal, () =>
 *   Promise.resolve("On"));
 * ```
 *
 * @module
 */

import type { BmcGate } from "./bmc.ts";
import { ProviderError } from "./mod.ts";

/** Options of {@linkcode createBmcGate}. */
export interface BmcGateOptions {
  /** Calls in flight per key. @default 4 */
  concurrency?: number;
  /** Calls that may wait per key; one more is refused. @default 1024 */
  maxQueue?: number;
}

/** The gate with what it holds now, for tests and metrics. */
export interface BmcGateWithStats extends BmcGate {
  /** Calls running for `key`. */
  inFlight(key: string): number;
  /** Calls waiting for `key`. */
  waiting(key: string): number;
}

interface Waiter {
  start(): void;
}

interface KeyState {
  active: number;
  readonly queue: Waiter[];
}

/**
 * Creates a gate.
 *
 * @param options Concurrency per key and the queue bound.
 * @returns The gate.
 * @throws {RangeError} When `concurrency` or `maxQueue` is not a positive integer.
 *
 * @example
 * ```ts
 * const gate = createBmcGate({ concurrency: 1, maxQueue: 8 });
 * gate.inFlight("https://bmc-1"); // 0
 * ```
 */
export function createBmcGate(options: BmcGateOptions = {}): BmcGateWithStats {
  const { concurrency = 4, maxQueue = 1024 } = options;
  for (const [name, value] of [["concurrency", concurrency], ["maxQueue", maxQueue]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(
        `Cannot create the BMC gate as ${name} must be a positive integer: current value is ${value}`,
      );
    }
  }
  const keys = new Map<string, KeyState>();

  function release(key: string, state: KeyState): void {
    state.active--;
    const next = state.queue.shift();
    if (next !== undefined) next.start();
    else if (state.active === 0) keys.delete(key);
  }

  async function runHeld<T>(
    key: string,
    state: KeyState,
    action: () => Promise<T>,
  ): Promise<T> {
    try {
      return await action();
    } finally {
      release(key, state);
    }
  }

  function run<T>(key: string, signal: AbortSignal, action: () => Promise<T>): Promise<T> {
    if (signal.aborted) return Promise.reject(signal.reason);
    let state = keys.get(key);
    if (state === undefined) {
      state = { active: 0, queue: [] };
      keys.set(key, state);
    }
    if (state.active < concurrency) {
      state.active++;
      return runHeld(key, state, action);
    }
    if (state.queue.length >= maxQueue) {
      return Promise.reject(
        new ProviderError(
          `Cannot queue a call to BMC ${key} as ${maxQueue} calls already wait for it ` +
            `(${concurrency} in flight): retry later or lower the load on this BMC`,
        ),
      );
    }
    const held = state;
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        start() {
          signal.removeEventListener("abort", onAbort);
          // The slot passes straight from the releasing call to this one.
          held.active++;
          runHeld(key, held, action).then(resolve, reject);
        },
      };
      const onAbort = () => {
        const index = held.queue.indexOf(waiter);
        if (index >= 0) held.queue.splice(index, 1);
        if (held.active === 0 && held.queue.length === 0) keys.delete(key);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      held.queue.push(waiter);
    });
  }

  return {
    run,
    inFlight: (key) => keys.get(key)?.active ?? 0,
    waiting: (key) => keys.get(key)?.queue.length ?? 0,
  };
}
