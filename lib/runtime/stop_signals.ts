/**
 * How the server reads SIGINT and SIGTERM: the first one stops it gracefully, a later one
 * forces the exit, and a repeat within {@linkcode SIGNAL_ECHO_MS} of the first is the same
 * stop request delivered twice.
 *
 * Why the window: one Ctrl+C on `deno task server` reaches the server twice. The terminal sends
 * SIGINT to its whole foreground process group (deno task and the server), and deno task also
 * forwards the SIGINT it got to its child. The two copies arrive microseconds to milliseconds
 * apart; counting the second as "press again to force" made one Ctrl+C exit 1 without a
 * graceful stop. A person who presses Ctrl+C again because the stop hangs does so after reading
 * "shutting down", well after the window.
 *
 * @module
 */

/** A repeat signal this soon after the first (ms) is the same request delivered twice. */
export const SIGNAL_ECHO_MS = 1_000;

/** What to do with a stop signal. */
export type StopAction = "stop" | "echo" | "force";

/** Options of {@linkcode stopSignalPolicy}. */
export interface StopSignalPolicyOptions {
  /** Clock in ms. @default performance.now */
  now?: () => number;
  /** See {@linkcode SIGNAL_ECHO_MS}. */
  echoMs?: number;
}

/**
 * Classifies each stop signal as it arrives.
 *
 * @example
 * ```ts
 * import { stopSignalPolicy } from "./stop_signals.ts";
 * let t = 0;
 * const next = stopSignalPolicy({ now: () => t });
 * next(); // "stop"
 * t = 2;
 * next(); // "echo": the terminal's copy and deno task's forwarded copy
 * t = 5_000;
 * next(); // "force"
 * ```
 *
 * @param options Clock and window.
 * @returns A function to call on every SIGINT or SIGTERM.
 */
export function stopSignalPolicy(options: StopSignalPolicyOptions = {}): () => StopAction {
  const now = options.now ?? (() => performance.now());
  const echoMs = options.echoMs ?? SIGNAL_ECHO_MS;
  let first: number | undefined;
  return () => {
    const at = now();
    if (first === undefined) {
      first = at;
      return "stop";
    }
    return at - first < echoMs ? "echo" : "force";
  };
}
