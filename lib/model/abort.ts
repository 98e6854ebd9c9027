/**
 * Abort-signal helpers shared by the executor and providers: waits and races that end as soon as
 * a signal aborts, rejecting with its reason unchanged, and leave no timer or listener behind.
 *
 * @module
 */

/**
 * Waits `ms` milliseconds unless `signal` aborts first (then rejects with its reason). A zero
 * delay creates no timer.
 *
 * @param ms Milliseconds.
 * @param signal Abort signal.
 * @returns A promise.
 */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Settles like `promise`, or rejects with `signal.reason` as soon as `signal` aborts.
 *
 * @param promise The work.
 * @param signal Abort signal.
 * @returns The work's result.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
