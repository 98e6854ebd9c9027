/**
 * Size and format limits of everything a client sends, in one object the README, the CLI and
 * every Store implementation quote. The checks here are pure and throw
 * {@linkcode InvalidArgumentError}s with reason `LIMIT_EXCEEDED` (metadata `field`, `limit`,
 * `actual`) or `INVALID_FORMAT` (metadata `field`, `allowed`), whose messages state the limit,
 * the value sent and how to fix it. Lengths count Unicode code points.
 *
 * This module knows nothing of gRPC.
 *
 * @module
 */

import { InvalidArgumentError } from "./errors.ts";

/** Every limit a request is checked against. */
export const LIMITS = Object.freeze({
  /** Longest `request_id` (idempotency key), in characters. */
  requestIdLength: 128,
  /** Longest `machine_id`, in characters (ids also match {@linkcode MACHINE_ID_PATTERN}). */
  machineIdLength: 128,
  /** Most labels on one machine. */
  labelsPerMachine: 64,
  /** Longest label key, in characters (keys also match {@linkcode LABEL_KEY_PATTERN}). */
  labelKeyLength: 63,
  /** Longest label value, in characters. */
  labelValueLength: 256,
  /** Longest `image_ref` of a REIMAGE, in characters. */
  imageRefLength: 256,
  /** Longest filter text of ListMachines, ListOperations and WatchOperations, in characters. */
  filterLength: 1024,
  /** Largest page a list returns; a larger `page_size` is capped to it (not refused). */
  maxPageSize: 1000,
});

/** The characters a `machine_id` may contain: letters, digits, `.`, `_`, `:` and `-`. */
export const MACHINE_ID_PATTERN: RegExp = /^[A-Za-z0-9._:-]+$/;

/** The characters a label key may contain: letters, digits, `.`, `_`, `/` and `-`. */
export const LABEL_KEY_PATTERN: RegExp = /^[A-Za-z0-9._/-]+$/;

/**
 * Counts the Unicode code points of `text`.
 *
 * @param text The text.
 * @returns The code point count.
 */
function length(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/**
 * Refuses `text` when it is longer than `limit` characters.
 *
 * @param field The request field, e.g. `request_id`.
 * @param text The value sent.
 * @param limit The limit.
 * @param fix What to do about it (one clause).
 * @param metadata Extra ids for the error (e.g. the machine).
 * @param subject How the message names the value. @default field
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` with metadata `field`, `limit`, `actual`.
 *
 * @example
 * ```ts
 * checkLength("request_id", crypto.randomUUID(), LIMITS.requestIdLength, "send a UUID");
 * ```
 */
export function checkLength(
  field: string,
  text: string,
  limit: number,
  fix: string,
  metadata: Record<string, string> = {},
  subject: string = field,
): void {
  // UTF-16 length bounds the code point count from above: most values need no counting.
  if (text.length <= limit) return;
  const actual = length(text);
  if (actual <= limit) return;
  throw new InvalidArgumentError(
    `${subject} is ${actual} characters long; the limit is ${limit}: ${fix}`,
    {
      reason: "LIMIT_EXCEEDED",
      metadata: { ...metadata, field, limit: String(limit), actual: String(actual) },
    },
  );
}

/**
 * Refuses a count above `limit`.
 *
 * @param field The request field, e.g. `labels`.
 * @param actual The count sent.
 * @param limit The limit.
 * @param message The message; it must state `actual`, `limit` and the fix.
 * @param metadata Extra ids for the error.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` with metadata `field`, `limit`, `actual`.
 */
export function checkCount(
  field: string,
  actual: number,
  limit: number,
  message: string,
  metadata: Record<string, string> = {},
): void {
  if (actual <= limit) return;
  throw new InvalidArgumentError(message, {
    reason: "LIMIT_EXCEEDED",
    metadata: { ...metadata, field, limit: String(limit), actual: String(actual) },
  });
}

/**
 * Checks a machine id: at most {@linkcode LIMITS.machineIdLength} characters from
 * {@linkcode MACHINE_ID_PATTERN}. Ids such as `machine-1`, `demo-1`, `m-<uuid>`,
 * `rack1.node-2` and `10.0.0.5` pass; ids with spaces, `=` or quotes (which would not survive
 * the filter grammar) do not.
 *
 * @param machineId The id (non-empty; emptiness is the caller's `MISSING_FIELD`).
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` or `INVALID_FORMAT`.
 */
export function checkMachineId(machineId: string): void {
  checkLength(
    "machine_id",
    machineId,
    LIMITS.machineIdLength,
    "use a shorter machine id",
  );
  if (!MACHINE_ID_PATTERN.test(machineId)) {
    throw new InvalidArgumentError(
      `machine_id ${
        JSON.stringify(machineId)
      } contains characters that are not allowed: use only letters, digits, '.', '_', ':' and '-'`,
      {
        reason: "INVALID_FORMAT",
        metadata: { field: "machine_id", allowed: MACHINE_ID_PATTERN.source },
      },
    );
  }
}

/**
 * Checks a machine's labels: at most {@linkcode LIMITS.labelsPerMachine}, keys of at most
 * {@linkcode LIMITS.labelKeyLength} characters from {@linkcode LABEL_KEY_PATTERN}, values of at
 * most {@linkcode LIMITS.labelValueLength} characters.
 *
 * @param labels The labels sent.
 * @param machineId The machine they belong to (for the error metadata), if known.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` or `INVALID_FORMAT`.
 */
export function checkLabels(labels: Record<string, string>, machineId = ""): void {
  const ids: Record<string, string> = machineId === "" ? {} : { machineId };
  const keys = Object.keys(labels);
  checkCount(
    "labels",
    keys.length,
    LIMITS.labelsPerMachine,
    `${
      machineId === "" ? "the machine" : `machine "${machineId}"`
    } has ${keys.length} labels; the limit is ${LIMITS.labelsPerMachine}: remove labels or keep such data elsewhere`,
    ids,
  );
  for (const key of keys) {
    checkLength(
      "label_key",
      key,
      LIMITS.labelKeyLength,
      "use a shorter label key",
      ids,
    );
    if (!LABEL_KEY_PATTERN.test(key)) {
      throw new InvalidArgumentError(
        `label key ${
          JSON.stringify(key)
        } is not allowed: a key is 1 to ${LIMITS.labelKeyLength} letters, digits, '.', '_', '/' or '-'`,
        {
          reason: "INVALID_FORMAT",
          metadata: { ...ids, field: "label_key", allowed: LABEL_KEY_PATTERN.source },
        },
      );
    }
    checkLength(
      "label_value",
      labels[key],
      LIMITS.labelValueLength,
      "use a shorter label value",
      { ...ids, labelKey: key },
      `label_value of "${key}"`,
    );
  }
}
