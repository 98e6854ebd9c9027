/**
 * How long the fake provider's verbs take: the durations of each verb, the named profiles of the
 * original bmdemo (reference §5.1) plus a zero-delay one for tests, and the check of explicit
 * durations.
 *
 * @module
 */

/** Durations of the simulated verbs, in milliseconds. Each verb's total is split as in reference §5.3. */
export interface Timings {
  /** Total of `setNetboot`, split in halves. */
  netbootMs: number;
  /** Total of `reboot`, split in thirds. */
  rebootMs: number;
  /** Total of `repave`, split in six sub-steps. */
  repaveMs: number;
  /** Total of `mintJoinMaterial`, one wait. */
  mintJoinMs: number;
  /** Total of `joinNode`, split in five sub-steps. */
  joinNodeMs: number;
  /** Total of `verifyInCluster`, split in thirds. */
  verifyMs: number;
  /** Total of `rma`, split in halves. */
  rmaMs: number;
  /** Total of `executeSshCommand`, split 20/30/20/30 % (200+300+200+300 ms in the original). */
  sshMs: number;
}

/** Named timing profiles: `normal` (the original's default), `slow` (its `--slow`), `zero` (tests). */
export type TimingProfile = "normal" | "slow" | "zero";

/**
 * Durations of each {@linkcode TimingProfile}, as in reference §5.1. The original's SSH command is
 * a fixed second in both of its profiles.
 *
 * @example Total simulated time of a reimage
 * ```ts
 * import assert from "node:assert/strict";
 * import { TIMINGS } from "./fake_timing.ts";
 *
 * const { netbootMs, rebootMs, repaveMs, mintJoinMs, joinNodeMs, verifyMs } = TIMINGS.normal;
 * assert.equal(netbootMs + rebootMs + repaveMs + mintJoinMs + joinNodeMs + verifyMs, 3350);
 * ```
 */
export const TIMINGS: Readonly<Record<TimingProfile, Readonly<Timings>>> = Object.freeze({
  normal: Object.freeze({
    netbootMs: 250,
    rebootMs: 500,
    repaveMs: 1000,
    mintJoinMs: 100,
    joinNodeMs: 1000,
    verifyMs: 500,
    rmaMs: 250,
    sshMs: 1000,
  }),
  slow: Object.freeze({
    netbootMs: 2000,
    rebootMs: 5000,
    repaveMs: 10000,
    mintJoinMs: 500,
    joinNodeMs: 8000,
    verifyMs: 3000,
    rmaMs: 2000,
    sshMs: 1000,
  }),
  zero: Object.freeze({
    netbootMs: 0,
    rebootMs: 0,
    repaveMs: 0,
    mintJoinMs: 0,
    joinNodeMs: 0,
    verifyMs: 0,
    rmaMs: 0,
    sshMs: 0,
  }),
});

/**
 * Resolves a profile name to its durations and checks explicit ones.
 *
 * @param timing A profile name or explicit durations.
 * @returns The durations, frozen for a profile, copied for explicit ones.
 * @throws {RangeError} When the profile is unknown or a duration is negative or not finite.
 */
export function resolveTimings(timing: TimingProfile | Timings): Readonly<Timings> {
  if (typeof timing === "string") {
    if (!Object.hasOwn(TIMINGS, timing)) {
      throw new RangeError(
        `Cannot create fake provider as "timing" is not a profile (normal, slow, zero): current value is "${timing}"`,
      );
    }
    return TIMINGS[timing];
  }
  // Every field is checked, so a missing one fails here instead of becoming a zero-length wait.
  for (const name of Object.keys(TIMINGS.normal) as (keyof Timings)[]) {
    const ms: unknown = timing[name];
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
      throw new RangeError(
        `Cannot create fake provider as "timing.${name}" must be a non-negative number of milliseconds: current value is ${ms}`,
      );
    }
  }
  return { ...timing };
}
