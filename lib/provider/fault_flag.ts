/**
 * The server's `--fault STEP[:MODE][@machine-id]` flag: a presenter's way to make a step fail on
 * stage. It wraps any provider so that the verb behind a plan step fails once, a number of times,
 * every time, or hangs until the step's timeout, on every machine or on one.
 *
 * @module
 */

import { waitForAbort } from "./fake_faults.ts";
import type { Provider, ProviderCall, ProviderVerb } from "./mod.ts";

/**
 * The provider verb behind each plan step (the engine's built-in plans; a test keeps this list
 * equal to theirs). `reboot-to-netboot` and `reboot` share the verb `reboot`.
 */
export const FAULT_STEPS: Readonly<Record<string, ProviderVerb>> = Object.freeze({
  "set-netboot": "setNetboot",
  "reboot-to-netboot": "reboot",
  "repave-image": "repave",
  "join-cluster": "joinNode",
  "verify-in-cluster": "verifyInCluster",
  "reboot": "reboot",
});

/** The modes of `--fault`; a whole number N also works (the first N attempts fail). */
export const FAULT_MODES: readonly string[] = ["once", "always", "hang"];

/** One parsed `--fault` value. */
export interface FaultRule {
  /** The flag's text, quoted in the injected error. */
  text: string;
  /** The plan step named. */
  step: string;
  /** How many attempts fail (`Infinity` for `always`); ignored when `hang`. */
  failures: number;
  /** Hang until the step's timeout instead of failing. */
  hang: boolean;
  /** The only machine it applies to; every machine when unset. */
  machineId?: string;
}

/**
 * Parses one `--fault` value.
 *
 * @param text `STEP[:MODE][@machine-id]`, e.g. `repave-image:once@machine-4`.
 * @returns The rule.
 * @throws {RangeError} With one line naming the allowed values, when the step or mode is unknown.
 *
 * @example
 * ```ts
 * const rule = parseFault("repave-image:2@machine-4");
 * [rule.step, rule.failures, rule.hang, rule.machineId];
 * // ["repave-image", 2, false, "machine-4"]
 * ```
 */
export function parseFault(text: string): FaultRule {
  const at = text.indexOf("@");
  const head = at < 0 ? text : text.slice(0, at);
  const machineId = at < 0 ? undefined : text.slice(at + 1);
  const [step = "", mode = "once", ...rest] = head.split(":");
  if (!Object.hasOwn(FAULT_STEPS, step)) {
    throw new RangeError(
      `--fault: unknown step "${step}": use one of ${Object.keys(FAULT_STEPS).join(", ")}`,
    );
  }
  const count = /^[1-9]\d{0,5}$/.test(mode) ? Number(mode) : undefined;
  if (rest.length > 0 || (count === undefined && !FAULT_MODES.includes(mode))) {
    throw new RangeError(
      `--fault: unknown mode "${[mode, ...rest].join(":")}" in "${text}": use one of ` +
        `${FAULT_MODES.join(", ")}, or a count of failing attempts (e.g. 2)`,
    );
  }
  if (machineId !== undefined && machineId.trim() === "") {
    throw new RangeError(`--fault: empty machine id after "@" in "${text}": drop the "@"`);
  }
  const failures = count ?? (mode === "once" ? 1 : mode === "always" ? Infinity : 0);
  return { text, step, failures, hang: mode === "hang", ...(machineId ? { machineId } : {}) };
}

/**
 * Wraps a provider so the verbs behind the rules' steps fail or hang as the rules say. Attempts
 * are counted per rule (on its machine when it names one), so `once` fails the first attempt and
 * lets the step's retry succeed.
 *
 * @param provider The provider to wrap.
 * @param rules Parsed `--fault` values; the provider itself when empty.
 * @returns A provider with the faults.
 */
export function withFaults(provider: Provider, rules: readonly FaultRule[]): Provider {
  if (rules.length === 0) return provider;
  const attempts = new Map<FaultRule, number>();
  const wrapped = { ...provider } as Record<ProviderVerb, unknown>;
  for (const verb of Object.keys(provider) as ProviderVerb[]) {
    const mine = rules.filter((rule) => FAULT_STEPS[rule.step] === verb);
    if (mine.length === 0) continue;
    const original = provider[verb] as (call: ProviderCall, ...args: unknown[]) => Promise<unknown>;
    wrapped[verb] = async (call: ProviderCall, ...args: unknown[]): Promise<unknown> => {
      const machineId = (args[0] as { machineId?: unknown } | undefined)?.machineId;
      for (const rule of mine) {
        if (rule.machineId !== undefined && rule.machineId !== machineId) continue;
        const attempt = (attempts.get(rule) ?? 0) + 1;
        attempts.set(rule, attempt);
        if (rule.hang) {
          call.log(`injected fault (--fault ${rule.text}): hanging until the step times out`);
          return await waitForAbort(call.signal);
        }
        if (attempt <= rule.failures) {
          call.log(`ERROR: injected fault (--fault ${rule.text}), attempt ${attempt}`, "stderr");
          throw new Error(`injected fault: ${rule.step} failed (--fault ${rule.text})`);
        }
      }
      return await original.call(provider, call, ...args);
    };
  }
  return wrapped as unknown as Provider;
}
