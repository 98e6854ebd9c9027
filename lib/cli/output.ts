/**
 * Output formats of the read commands (`-o table|wide|json|yaml`), the wide tables, the detail
 * views of `get` and `op`, and durations (`--timeout 90s`).
 *
 * JSON is the canonical protobuf JSON mapping (`toJson`), so `fromJson` of the printed value
 * gives the message back; YAML is the same value through the `yaml` package.
 *
 * @module
 */

import {
  type DescMessage,
  type JsonWriteOptions,
  type MessageShape,
  toJson,
} from "@bufbuild/protobuf";
import type { Machine, Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  type ColumnFit,
  formatTable,
  MACHINE_COLUMNS,
  machineCells,
  OPERATION_COLUMNS,
  operationCells,
  operationTypeName,
} from "./format.ts";
import { UsageError } from "./session.ts";

/** The output formats of `-o`. */
export const OUTPUT_FORMATS = ["table", "wide", "json", "yaml"] as const;

/** One output format. */
export type OutputFormat = typeof OUTPUT_FORMATS[number];

/**
 * Parses the value of `-o`/`--output`.
 *
 * @param value The option value; `undefined` gives `table`.
 * @param command The command, for the usage text.
 * @returns The format.
 * @throws {UsageError} For an unknown format.
 */
export function parseOutputFormat(value: string | undefined, command?: string): OutputFormat {
  if (value === undefined) return "table";
  if ((OUTPUT_FORMATS as readonly string[]).includes(value)) return value as OutputFormat;
  throw new UsageError(
    `invalid output format: ${value} (use ${OUTPUT_FORMATS.join(", ")})`,
    command,
  );
}

/**
 * How the CLI writes messages as JSON: with fields at their default value (`false`, `0`, `""`,
 * `[]`), so that `jq '.status'` on a false condition gives `false`, not `null`.
 */
export const JSON_WRITE_OPTIONS: Partial<JsonWriteOptions> = { alwaysEmitImplicit: true };

/**
 * Renders messages as JSON (pretty, 2 spaces) or YAML, through the canonical JSON mapping, with
 * default values written out ({@linkcode JSON_WRITE_OPTIONS}).
 *
 * @param schema The message schema.
 * @param value One message (printed as an object) or a list (printed as an array).
 * @param format `json` or `yaml`.
 * @returns The text, ending with a newline (a promise: YAML support is loaded on demand).
 */
export async function renderStructured<D extends DescMessage>(
  schema: D,
  value: MessageShape<D> | readonly MessageShape<D>[],
  format: "json" | "yaml",
): Promise<string> {
  const json = Array.isArray(value)
    ? (value as readonly MessageShape<D>[]).map((m) => toJson(schema, m, JSON_WRITE_OPTIONS))
    : toJson(schema, value as MessageShape<D>, JSON_WRITE_OPTIONS);
  if (format === "json") return JSON.stringify(json, null, 2) + "\n";
  // Loaded on demand: the YAML library costs every other CLI run ~30 ms of start-up.
  const { stringify } = await import("yaml");
  const text = stringify(json);
  return text.endsWith("\n") ? text : text + "\n";
}

/**
 * A protobuf timestamp as an ISO 8601 UTC time, to the second.
 *
 * @param ts The timestamp.
 * @returns `2025-01-02T03:04:05Z`, or `-` when absent.
 */
export function formatTimestamp(ts: { seconds: bigint; nanos: number } | undefined): string {
  if (!ts) return "-";
  return new Date(Number(ts.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function millisOf(ts: { seconds: bigint; nanos: number }): number {
  return Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
}

/**
 * A duration for people: `350ms`, `1.2s`, `2m3s`, `1h2m`.
 *
 * @param ms Milliseconds.
 * @returns The text.
 */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1).replace(/\.0$/, "")}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ""}`;
  const m = Math.floor(s / 60);
  return `${Math.floor(m / 60)}h${m % 60 ? `${m % 60}m` : ""}`;
}

/**
 * How long an operation ran: start to finish, or start to now while it runs.
 *
 * @param op The operation.
 * @param now The current time in ms (for running operations).
 * @returns The duration, or `-` when it has not started.
 */
export function operationDuration(op: Operation, now: number = Date.now()): string {
  if (!op.startedAt) return "-";
  const end = op.finishedAt ? millisOf(op.finishedAt) : now;
  return formatDuration(end - millisOf(op.startedAt));
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration such as `90s`, `5m`, `1h`, `500ms`, `1.5s`.
 *
 * @param text The duration.
 * @param command The command, for the usage text.
 * @returns Milliseconds (positive).
 * @throws {UsageError} For anything else.
 */
export function parseDuration(text: string, command?: string): number {
  const match = DURATION.exec(text.trim());
  const ms = match ? Number(match[1]) * UNIT_MS[match[2]] : NaN;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new UsageError(
      `invalid duration: ${text} (use a number with ms, s, m or h, e.g. 90s, 5m, 500ms)`,
      command,
    );
  }
  return Math.round(ms);
}

function conditionsSummary(machine: Machine): string {
  const conditions = machine.status?.conditions ?? [];
  if (conditions.length === 0) return "-";
  return conditions.map((c) => `${c.type}=${c.status ? "True" : "False"}`).join(",");
}

/**
 * The machine list with the extra columns of `-o wide`.
 *
 * @param machines The machines.
 * @returns The table text.
 */
export function formatMachineWideTable(machines: readonly Machine[]): string {
  return formatTable(
    [...MACHINE_COLUMNS, "PROVIDER", "RACK", "LAST_SEEN", "CONDITIONS"],
    machines.map((m) => [
      ...machineCells(m),
      m.spec?.provider || "-",
      m.spec?.rack || "-",
      formatTimestamp(m.status?.lastSeen),
      conditionsSummary(m),
    ]),
  );
}

/**
 * The operations table with the extra columns of `-o wide`.
 *
 * @param operations The operations.
 * @param now The current time in ms, for the duration of running operations.
 * @returns The table text.
 */
export function formatOperationWideTable(
  operations: readonly Operation[],
  now: number = Date.now(),
): string {
  return formatTable(
    [...OPERATION_COLUMNS, "REQUEST_ID", "CREATED", "DURATION"],
    operations.map((op) => [
      ...operationCells(op),
      op.requestId || "-",
      formatTimestamp(op.createdAt),
      operationDuration(op, now),
    ]),
  );
}

/** Label/value lines, the values aligned. */
function fields(rows: readonly [string, string][], indent = ""): string {
  const width = Math.max(...rows.map(([label]) => label.length + 1));
  return rows.map(([label, value]) => `${indent}${`${label}:`.padEnd(width)}  ${value}\n`).join(
    "",
  );
}

function indentLines(text: string, indent: string): string {
  return text.split("\n").map((l) => (l === "" ? l : indent + l)).join("\n");
}

function keyValues(map: Readonly<Record<string, string>>): string[] {
  return Object.keys(map).sort().map((k) => `${k}=${map[k]}`);
}

/**
 * The detail view of one machine (`get`): spec, labels, status and every condition.
 *
 * @param m The machine.
 * @param width The widest the conditions table may be (its MESSAGE is cut, then LAST_TRANSITION
 *   goes); longer lines are left to the wrapping io. @default Infinity
 * @returns Multi-line text.
 */
export function formatMachineDetail(m: Machine, width = Infinity): string {
  const status = m.status;
  const spec = m.spec;
  let text = fields([
    ["Machine", m.machineId],
    ["Phase", MachinePhase[status?.phase ?? 0] ?? "?"],
    ["Effective", EffectiveState[status?.effectiveState ?? 0] ?? "?"],
    ["Active operation", status?.activeOperationId || "-"],
    ["Last seen", formatTimestamp(status?.lastSeen)],
  ]);
  text += "Spec:\n" + fields([
    ["Provider", spec?.provider || "-"],
    ["MAC addresses", spec?.macAddresses.join(", ") || "-"],
    ["Serial", spec?.serial || "-"],
    ["SSH endpoint", spec?.sshEndpoint || "-"],
    ["BMC address", spec?.bmcAddress || "-"],
    ["Rack", spec?.rack || "-"],
    [
      "Target cluster",
      spec?.targetCluster
        ? `${spec.targetCluster.clusterId || "-"} (kubeconfig ${
          spec.targetCluster.kubeconfigSecretRef || "-"
        })`
        : "-",
    ],
  ], "  ");
  const labels = keyValues(m.labels);
  text += "Labels:" +
    (labels.length === 0 ? " -\n" : "\n" + labels.map((l) => `  ${l}\n`).join(""));
  const conditions = status?.conditions ?? [];
  if (conditions.length === 0) {
    text += "Conditions: -\n";
  } else {
    text += "Conditions:\n" + indentLines(
      formatTable(
        ["TYPE", "STATUS", "REASON", "LAST_TRANSITION", "MESSAGE"],
        conditions.map((c) => [
          c.type,
          c.status ? "True" : "False",
          c.reason || "-",
          formatTimestamp(c.lastTransitionTime),
          c.message || "-",
        ]),
        { width: width - 2, fit: CONDITION_FIT },
      ),
      "  ",
    );
  }
  return text;
}

/**
 * How the conditions table of `get` fits: MESSAGE is cut down to 16 cells, then the time goes
 * (80 columns keep the message rather than the time); TYPE, STATUS and REASON stay whole.
 */
const CONDITION_FIT: readonly (ColumnFit | undefined)[] = [
  undefined,
  undefined,
  undefined,
  { drop: 1 },
  { min: 16 },
];

/**
 * The detail view of one operation (`op`).
 *
 * @param op The operation.
 * @param now The current time in ms, for the duration of a running operation.
 * @returns Multi-line text.
 */
export function formatOperationDetail(op: Operation, now: number = Date.now()): string {
  const params = keyValues(op.params);
  let text = fields([
    ["Operation", op.operationId],
    ["Machine", op.machineId],
    ["Type", operationTypeName(op)],
    ["Phase", OperationPhase[op.phase] ?? String(op.phase)],
    ["Stage", op.currentStage || "-"],
    ["Request ID", op.requestId || "-"],
    ["Params", params.length === 0 ? "-" : params.join(", ")],
    ["Created", formatTimestamp(op.createdAt)],
    ["Started", formatTimestamp(op.startedAt)],
    ["Finished", formatTimestamp(op.finishedAt)],
    ["Duration", operationDuration(op, now)],
  ]);
  if (op.error) {
    const details = keyValues(op.error.details);
    text += "Error:\n" + fields([
      ["Code", op.error.code || "-"],
      ["Message", op.error.message || "-"],
      ["Retryable", op.error.retryable ? "yes" : "no"],
      ["Details", details.length === 0 ? "-" : details.join(", ")],
    ], "  ");
  }
  return text;
}
