/**
 * Retention: how many finished operations a server keeps, and for how long. Active (PENDING or
 * RUNNING) operations are never pruned. A pruned operation takes its log lines and its
 * idempotency key with it, so a later request with the same request_id starts a new operation
 * (the idempotency window, see docs/server.md, "Retention and the idempotency window").
 *
 * Pruning is incremental: each call removes a bounded batch, so neither the event loop nor the
 * SQLite write lock is held for long. {@linkcode Retention} drives it: a small batch after every
 * finished operation, and a periodic sweep for the age limit when nothing finishes.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { RetentionPolicy } from "../store/mod.ts";

const logger = getLogger(["bmdemo", "retention"]);

/** The server's defaults: `--retain-operations 10000`, `--retain-for 168h`. */
export const DEFAULT_RETENTION: Readonly<RetentionPolicy> = Object.freeze({
  maxOperations: 10_000,
  maxAgeMs: 168 * 3_600_000,
});

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration: a whole number followed by one unit, `s`, `m`, `h` or `d` (e.g. `90s`,
 * `30m`, `168h`, `7d`).
 *
 * @param text The duration.
 * @param flag The flag it came from, named in the error.
 * @returns Milliseconds.
 * @throws {RangeError} For anything else, naming the flag and the grammar.
 *
 * @example
 * ```ts
 * parseDuration("7d", "--retain-for"); // 604800000
 * ```
 */
export function parseDuration(text: string, flag: string): number {
  const match = /^([0-9]{1,9})([smhd])$/.exec(text.trim());
  const ms = match ? Number(match[1]) * UNITS[match[2]] : 0;
  if (!match || ms <= 0) {
    throw new RangeError(
      `${flag} must be a positive whole number with a unit s, m, h or d (e.g. 90s, 30m, 168h, 7d): got "${text}"`,
    );
  }
  return ms;
}

/**
 * Parses a count of operations to keep: a positive whole number.
 *
 * @param text The count.
 * @param flag The flag it came from, named in the error.
 * @returns The count.
 * @throws {RangeError} For anything else, naming the flag.
 *
 * @example
 * ```ts
 * parseCount("5000", "--retain-operations"); // 5000
 * ```
 */
export function parseCount(text: string, flag: string): number {
  const count = /^[0-9]{1,12}$/.test(text.trim()) ? Number(text) : 0;
  if (count < 1) throw new RangeError(`${flag} must be a positive whole number: got "${text}"`);
  return count;
}

/** What pruning works on: a store that removes finished operations in bounded batches. */
export interface Prunable {
  /**
   * Removes at most `limit` finished operations outside `policy`, oldest first, with their
   * idempotency keys (and, for a durable store, their log lines).
   */
  pruneOperations(policy: RetentionPolicy, limit: number): Operation[];
}

/** Options of {@linkcode Retention}. */
export interface RetentionOptions extends Partial<RetentionPolicy> {
  /** Operations removed per batch. @default 256 */
  batch?: number;
  /**
   * Period of the age sweep, in milliseconds; without it only finished operations trigger
   * pruning (call {@linkcode Retention.sweep} yourself). @default none
   */
  sweepIntervalMs?: number;
}

/**
 * Drives pruning: {@linkcode Retention.afterFinish} after each finished operation, and
 * {@linkcode Retention.sweep} periodically (with `sweepIntervalMs`) or on demand. Each call
 * removes one bounded batch; a sweep that found a full batch schedules the next one right away,
 * so a backlog (a lowered limit) drains in short steps between other work.
 */
export class Retention implements Disposable {
  /** The policy in force. */
  readonly policy: Readonly<RetentionPolicy>;
  readonly #store: Prunable;
  readonly #onPruned: (operations: Operation[]) => void;
  readonly #batch: number;
  #interval?: ReturnType<typeof setInterval>;
  #followUp?: ReturnType<typeof setTimeout>;
  #pruned = 0;
  #stopped = false;

  /**
   * @param store What to prune.
   * @param options Policy, batch and sweep period; `onPruned` hears of every removed operation.
   */
  constructor(
    store: Prunable,
    options: RetentionOptions & { onPruned?: (operations: Operation[]) => void } = {},
  ) {
    this.policy = Object.freeze({
      maxOperations: options.maxOperations ?? DEFAULT_RETENTION.maxOperations,
      maxAgeMs: options.maxAgeMs ?? DEFAULT_RETENTION.maxAgeMs,
    });
    this.#store = store;
    this.#onPruned = options.onPruned ?? (() => {});
    this.#batch = options.batch ?? 256;
    for (
      const [name, value] of [
        ["maxOperations", this.policy.maxOperations],
        ["maxAgeMs", this.policy.maxAgeMs],
        ["batch", this.#batch],
      ] as const
    ) {
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(`Retention ${name} must be a positive integer: got ${value}`);
      }
    }
    if (options.sweepIntervalMs !== undefined) {
      this.#interval = setInterval(() => this.sweep(), options.sweepIntervalMs);
    }
  }

  /** Operations pruned so far. */
  get prunedCount(): number {
    return this.#pruned;
  }

  /**
   * Prunes a small batch; call it after an operation finished (one more finished operation
   * usually makes one operation fall out of the count limit).
   *
   * @returns The number of operations pruned.
   */
  afterFinish(): number {
    return this.#prune(Math.min(16, this.#batch));
  }

  /**
   * Prunes one batch (count and age limits); when the batch was full, schedules the next one
   * on a zero-delay timer so other work runs in between.
   *
   * @returns The number of operations pruned by this batch.
   */
  sweep(): number {
    const count = this.#prune(this.#batch);
    if (count === this.#batch && this.#followUp === undefined && !this.#stopped) {
      this.#followUp = setTimeout(() => {
        this.#followUp = undefined;
        this.sweep();
      }, 0);
    }
    return count;
  }

  #prune(limit: number): number {
    if (this.#stopped) return 0;
    let pruned: Operation[];
    try {
      pruned = this.#store.pruneOperations(this.policy, limit);
    } catch (error) {
      // A durable store that fails here fails stop on its own; pruning is retried later.
      logger.error("Pruning finished operations failed: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
      return 0;
    }
    if (pruned.length > 0) {
      this.#pruned += pruned.length;
      this.#onPruned(pruned);
    }
    return pruned.length;
  }

  /** Stops the periodic sweep. Idempotent. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#interval);
    clearTimeout(this.#followUp);
    this.#interval = this.#followUp = undefined;
  }

  /** Same as {@linkcode Retention.stop}. */
  [Symbol.dispose](): void {
    this.stop();
  }
}
