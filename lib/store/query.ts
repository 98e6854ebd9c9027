/**
 * List queries: the filter grammar of ListMachines, ListOperations and WatchOperations, page
 * sizes, and opaque page tokens. Pure functions; a bad filter or token is an
 * {@linkcode InvalidArgumentError} that says how to fix it, never "matches nothing".
 *
 * Grammar: terms joined by ` AND `, each `key=value`. Operations: `machine_id=`, `phase=`,
 * `type=`. Machines: `phase=`, `effective_state=`, `label.<key>=`. Enum values are the proto
 * enum names (`effective_state=MAINTENANCE` is accepted for `MAINTENANCE_IDLE`).
 *
 * @module
 */

import { InvalidArgumentError } from "../model/errors.ts";
import { checkLength, LIMITS } from "./limits.ts";
import {
  type Machine,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";

/** Page size used when a request leaves `page_size` at 0. */
export const DEFAULT_PAGE_SIZE = 100;
/** Largest page a list returns; larger requests are capped to it ({@linkcode LIMITS}). */
export const MAX_PAGE_SIZE: number = LIMITS.maxPageSize;

/** A parsed filter: a predicate plus what an index can use. */
export interface Filter<T> {
  /** The filter in canonical form (terms sorted), bound into page tokens. */
  readonly canonical: string;
  /** Whether an item matches every term. */
  matches(item: T): boolean;
  /** The `machine_id=` value when the filter has one (lets a store use its per-machine index). */
  readonly machineId?: string;
  /** The operation `phase=` value when the filter has one (lets a store use its phase index). */
  readonly phase?: OperationPhase;
  /** The operation `type=` value when the filter has one (lets a store use its type index). */
  readonly type?: OperationType;
}

/** One page of a list. */
export interface Page<T> {
  /** Items in creation order. */
  items: T[];
  /** Token for the next page; empty on the last page. */
  nextPageToken: string;
}

/** A list request as the store takes it. */
export interface ListQuery {
  /** Requested page size; 0 means {@linkcode DEFAULT_PAGE_SIZE}. */
  pageSize?: number;
  /** Token from a previous page; empty for the first page. */
  pageToken?: string;
  /** Filter text; empty matches everything. */
  filter?: string;
}

interface Term {
  key: string;
  value: string;
}

function splitTerms(text: string, example: string): Term[] {
  checkLength(
    "filter",
    text,
    LIMITS.filterLength,
    "use fewer or shorter terms (the filter cannot be split across requests)",
  );
  const trimmed = text.trim();
  if (trimmed === "") return [];
  return trimmed.split(/\s+AND\s+/).map((raw) => {
    const eq = raw.indexOf("=");
    const key = eq === -1 ? "" : raw.slice(0, eq).trim();
    let value = eq === -1 ? "" : raw.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
      value = value.slice(1, -1);
    }
    if (key === "" || value === "") {
      throw filterError(
        text,
        `term "${raw.trim()}" is not key=value; write terms like ${example}`,
      );
    }
    return { key, value };
  });
}

function filterError(text: string, detail: string): InvalidArgumentError {
  return new InvalidArgumentError(`Cannot parse filter "${text}": ${detail}`, {
    reason: "INVALID_FILTER",
    metadata: { filter: text },
  });
}

function enumValue<E extends number>(
  text: string,
  key: string,
  value: string,
  names: Record<string, E>,
): E {
  // Own keys only: a value such as "constructor" must not resolve through Object.prototype.
  const found = Object.hasOwn(names, value) ? names[value] : undefined;
  if (found === undefined) {
    throw filterError(
      text,
      `${key} "${value}" is not one of ${Object.keys(names).join(", ")}`,
    );
  }
  return found;
}

function namesOf<E extends number>(
  enumObject: Record<string, string | number>,
  skip: string,
): Record<string, E> {
  const names: Record<string, E> = {};
  for (const [name, value] of Object.entries(enumObject)) {
    if (typeof value === "number" && name !== skip) names[name] = value as E;
  }
  return names;
}

const OPERATION_PHASES = namesOf<OperationPhase>(OperationPhase, "PHASE_UNSPECIFIED");
const OPERATION_TYPES = namesOf<OperationType>(OperationType, "OPERATION_TYPE_UNSPECIFIED");
const MACHINE_PHASES = namesOf<MachinePhase>(MachinePhase, "PHASE_UNSPECIFIED");
const EFFECTIVE_STATES: Record<string, EffectiveState> = {
  ...namesOf<EffectiveState>(EffectiveState, "EFFECTIVE_UNSPECIFIED"),
  MAINTENANCE: EffectiveState.MAINTENANCE_IDLE,
};

function build<T>(
  terms: Term[],
  predicates: ((item: T) => boolean)[],
  indexed: Pick<Filter<T>, "machineId" | "phase" | "type"> = {},
): Filter<T> {
  const canonical = terms.map((t) => `${t.key}=${t.value}`).sort().join(" AND ");
  return {
    canonical,
    ...indexed,
    matches: (item) => predicates.every((p) => p(item)),
  };
}

/**
 * Parses an operation filter (`machine_id=`, `phase=`, `type=` joined with ` AND `).
 *
 * @param text Filter text; empty matches every operation.
 * @returns The parsed filter.
 * @throws {InvalidArgumentError} `INVALID_FILTER` naming the bad term and the accepted ones.
 *
 * @example
 * ```ts
 * const filter = parseOperationFilter("machine_id=machine-1 AND phase=RUNNING");
 * ```
 */
export function parseOperationFilter(text: string): Filter<Operation> {
  const terms = splitTerms(text, "machine_id=machine-1 AND phase=RUNNING AND type=REIMAGE");
  const predicates: ((op: Operation) => boolean)[] = [];
  let machineId: string | undefined;
  let phaseTerm: OperationPhase | undefined;
  let typeTerm: OperationType | undefined;
  for (const { key, value } of terms) {
    switch (key) {
      case "machine_id":
        if (machineId !== undefined && machineId !== value) {
          predicates.push(() => false);
        }
        machineId = value;
        predicates.push((op) => op.machineId === value);
        break;
      case "phase": {
        const phase = enumValue(text, key, value, OPERATION_PHASES);
        phaseTerm ??= phase;
        predicates.push((op) => op.phase === phase);
        break;
      }
      case "type": {
        const type = enumValue(text, key, value, OPERATION_TYPES);
        typeTerm ??= type;
        predicates.push((op) => op.type === type);
        break;
      }
      default:
        throw filterError(
          text,
          `unknown field "${key}"; operations can be filtered by machine_id, phase and type`,
        );
    }
  }
  return build(terms, predicates, { machineId, phase: phaseTerm, type: typeTerm });
}

/**
 * Parses a machine filter (`phase=`, `effective_state=`, `label.<key>=` joined with ` AND `).
 *
 * @param text Filter text; empty matches every machine.
 * @returns The parsed filter.
 * @throws {InvalidArgumentError} `INVALID_FILTER` naming the bad term and the accepted ones.
 *
 * @example
 * ```ts
 * const filter = parseMachineFilter("phase=MAINTENANCE AND label.role=worker");
 * ```
 */
export function parseMachineFilter(text: string): Filter<Machine> {
  const terms = splitTerms(text, "phase=MAINTENANCE AND label.role=worker");
  const predicates: ((m: Machine) => boolean)[] = [];
  for (const term of terms) {
    const { key, value } = term;
    if (key === "phase") {
      const phase = enumValue(text, key, value, MACHINE_PHASES);
      predicates.push((m) => (m.status?.phase ?? MachinePhase.PHASE_UNSPECIFIED) === phase);
    } else if (key === "effective_state") {
      const state = enumValue(text, key, value, EFFECTIVE_STATES);
      // The MAINTENANCE alias and MAINTENANCE_IDLE are one filter (and one page-token binding).
      term.value = EffectiveState[state];
      predicates.push((m) => m.status?.effectiveState === state);
    } else if (key.startsWith("label.") && key.length > "label.".length) {
      const label = key.slice("label.".length);
      predicates.push((m) => Object.hasOwn(m.labels, label) && m.labels[label] === value);
    } else {
      throw filterError(
        text,
        `unknown field "${key}"; machines can be filtered by phase, effective_state and label.<key>`,
      );
    }
  }
  return build(terms, predicates);
}

/**
 * Resolves a requested page size: 0 means the default, larger than the maximum is capped.
 *
 * @param requested The request's `page_size`.
 * @returns The page size to use.
 * @throws {InvalidArgumentError} When `requested` is negative.
 */
export function resolvePageSize(requested = 0): number {
  if (!Number.isInteger(requested) || requested < 0) {
    throw new InvalidArgumentError(
      `Cannot list with page_size ${requested}: use 0 for the default (${DEFAULT_PAGE_SIZE}) or a positive number up to ${MAX_PAGE_SIZE}`,
      { metadata: { field: "page_size" } },
    );
  }
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  return Math.min(requested, MAX_PAGE_SIZE);
}

/** What a page token carries: which list, where the page ended, and the filter it belongs to. */
export interface PageCursor {
  /** The list the token belongs to. */
  list: "machines" | "operations";
  /** Creation sequence number of the last item returned. */
  after: number;
  /** Canonical filter of the request that produced the token. */
  filter: string;
}

/**
 * Encodes a cursor as an opaque, URL-safe token.
 *
 * @param cursor Where the page ended.
 * @returns The token.
 */
export function encodePageToken(cursor: PageCursor): string {
  const json = JSON.stringify({ v: 1, l: cursor.list, a: cursor.after, f: cursor.filter });
  const bytes = new TextEncoder().encode(json);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

/**
 * Decodes a page token and checks it belongs to this list and filter.
 *
 * @param token The token; empty means the first page (returns `after: 0`).
 * @param expected The list and canonical filter of the current request.
 * @returns The sequence number to continue after.
 * @throws {InvalidArgumentError} `INVALID_PAGE_TOKEN` for a token that is malformed or was
 * issued for another list or filter; `LIMIT_EXCEEDED` for one longer than
 * {@linkcode LIMITS.pageTokenLength}.
 */
export function decodePageToken(
  token: string,
  expected: Omit<PageCursor, "after">,
): number {
  if (token === "") return 0;
  checkLength(
    "page_token",
    token,
    LIMITS.pageTokenLength,
    "pass next_page_token unchanged (no token this server issues is that long)",
  );
  // A token is echoed back in the error; a huge forged one must not make a huge status.
  const shown = token.length > 256 ? `${token.slice(0, 256)}…` : token;
  const invalid = (detail: string) =>
    new InvalidArgumentError(`Cannot use page_token "${shown}": ${detail}`, {
      reason: "INVALID_PAGE_TOKEN",
      metadata: { pageToken: shown },
    });
  let parsed: unknown;
  try {
    const binary = atob(token.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw invalid("it is not a token this server issued; pass next_page_token unchanged");
  }
  const fields = parsed as { v?: unknown; l?: unknown; a?: unknown; f?: unknown };
  if (
    typeof parsed !== "object" || parsed === null || fields.v !== 1 ||
    typeof fields.a !== "number" || !Number.isSafeInteger(fields.a) || fields.a < 0 ||
    typeof fields.l !== "string" || typeof fields.f !== "string"
  ) {
    throw invalid("it is not a token this server issued; pass next_page_token unchanged");
  }
  if (fields.l !== expected.list) {
    throw invalid(`it was issued for a list of ${fields.l}, not ${expected.list}`);
  }
  if (fields.f !== expected.filter) {
    throw invalid(
      `it was issued for filter "${fields.f}"; repeat the request with the filter of the first page`,
    );
  }
  return fields.a;
}
