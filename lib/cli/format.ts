/**
 * Everything the CLI prints is shaped here: tables aligned by display width, phase and state
 * abbreviations, condition marks, UTC times, `rpc error:` lines and the optional colours.
 *
 * @module
 */

import { styleText } from "node:util";
import type { Machine, Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { displayWidth } from "./width.ts";
import { codeName } from "../client/code.ts";

// Measured here without loading string-width for ASCII and the CLI's own symbols; callers
// `await prepareWidths(...)` of what they render first.
export { displayWidth, prepareWidths } from "./width.ts";

/** How a column of {@linkcode formatTable} gives way when the table is wider than its width. */
export interface ColumnFit {
  /** A shorter header, taken (with {@linkcode ColumnFit.short}) before anything is cut. */
  readonly shortHeader?: string;
  /** A shorter form of each cell that still serves, e.g. an id's pasteable unique prefix. */
  readonly short?: (cell: string) => string;
  /** The narrowest the cells may be cut to, ending with `…`; absent: never cut. */
  readonly min?: number;
  /** The column is dropped when cutting is not enough, lowest first; absent: never dropped. */
  readonly drop?: number;
}

/** Options of {@linkcode formatTable}. */
export interface TableOptions {
  /** Spaces after the first column (the id column). @default 3 */
  firstGap?: number;
  /** Spaces between the other columns. @default 2 */
  gap?: number;
  /** The widest a line may be; columns give way as {@linkcode fit} says. @default Infinity */
  width?: number;
  /** How each column gives way (by index); columns without one keep their width. */
  fit?: readonly (ColumnFit | undefined)[];
}

/**
 * Formats rows as a left-aligned table, each column as wide as its widest cell (display width),
 * with no trailing spaces. Ends with a newline.
 *
 * Wider than `width`, columns give way in this order: short headers and short cells, then cells
 * cut (widest column first, down to its `min`, with `…`), then columns dropped (lowest `drop`
 * first, cutting again with the room that frees). Words are never split across lines.
 *
 * @param header The column titles; empty for a table without a header.
 * @param rows The cells.
 * @param options Gaps between the columns, the width and how columns fit it.
 * @returns The table text.
 *
 * @example
 * ```ts
 * import { formatTable } from "./format.ts";
 *
 * const fit = [undefined, { min: 4 }];
 * formatTable(["ID", "NOTE"], [["m-1", "a long note"]], { width: 14, fit });
 * // "ID    NOTE\nm-1   a long…\n"
 * ```
 */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  options: TableOptions = {},
): string {
  const { firstGap = 3, gap = 2 } = options;
  const fitted = fitColumns(header, rows, options);
  const all = fitted.header.length > 0 ? [fitted.header, ...fitted.rows] : [...fitted.rows];
  const widths = columnWidths(all);
  return all.map((row) =>
    row.map((cell, i) => {
      if (i === row.length - 1) return cell;
      const pad = widths[i] - displayWidth(cell) + (i === 0 ? firstGap : gap);
      return cell + " ".repeat(pad);
    }).join("").trimEnd() + "\n"
  ).join("");
}

function columnWidths(rows: readonly (readonly string[])[]): number[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, displayWidth(cell)));
  }
  return widths;
}

function tableWidth(widths: readonly number[], firstGap: number, gap: number): number {
  const gaps = widths.length > 1 ? firstGap + (widths.length - 2) * gap : 0;
  return widths.reduce((a, b) => a + b, 0) + gaps;
}

/** The header and rows of a table made to fit `options.width` (see {@linkcode formatTable}). */
function fitColumns(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  options: TableOptions,
): { header: readonly string[]; rows: readonly (readonly string[])[] } {
  const { firstGap = 3, gap = 2, width = Infinity, fit = [] } = options;
  const natural = columnWidths(header.length > 0 ? [header, ...rows] : rows);
  if (fit.length === 0 || tableWidth(natural, firstGap, gap) <= width) return { header, rows };
  const droppable = natural.map((_, i) => i).filter((i) => fit[i]?.drop !== undefined)
    .sort((a, b) => fit[a]!.drop! - fit[b]!.drop!);
  for (let dropped = 0;; dropped++) {
    const gone = new Set(droppable.slice(0, dropped));
    const keep = natural.map((_, i) => i).filter((i) => !gone.has(i));
    const shortHeader = keep.map((i) => fit[i]?.shortHeader ?? header[i] ?? "");
    const shortRows = rows.map((row) =>
      keep.map((i) => fit[i]?.short ? fit[i]!.short!(row[i]) : row[i])
    );
    const widths = columnWidths(header.length > 0 ? [shortHeader, ...shortRows] : shortRows);
    const mins = keep.map((i, k) => {
      const min = fit[i]?.min;
      if (min === undefined) return widths[k];
      return Math.min(
        widths[k],
        Math.max(min, header.length > 0 ? displayWidth(shortHeader[k]) : 1),
      );
    });
    let over = tableWidth(widths, firstGap, gap) - width;
    while (over > 0) {
      let widest = -1;
      widths.forEach((w, k) => {
        if (w > mins[k] && (widest < 0 || w > widths[widest])) widest = k;
      });
      if (widest < 0) break;
      widths[widest]--;
      over--;
    }
    if (over <= 0 || dropped === droppable.length) {
      return {
        header: header.length > 0 ? shortHeader : header,
        rows: shortRows.map((row) => row.map((cell, k) => truncate(cell, widths[k]))),
      };
    }
  }
}

/**
 * The PHASE column: FACTORY, READY, MAINT.
 *
 * @param machine The machine.
 * @returns The abbreviation; `UNKNOWN` without a status, `?` for other values.
 */
export function phaseLabel(machine: Machine): string {
  if (!machine.status) return "UNKNOWN";
  switch (machine.status.phase) {
    case MachinePhase.FACTORY_READY:
      return "FACTORY";
    case MachinePhase.READY:
      return "READY";
    case MachinePhase.MAINTENANCE:
      return "MAINT";
    default:
      return "?";
  }
}

/**
 * The EFFECTIVE column: NEW, IDLE, BUSY, MAINT, ⚠ATTN, ⛔BLOCK.
 *
 * @param machine The machine.
 * @returns The abbreviation; `UNKNOWN` without a status, `?` for other values.
 */
export function effectiveLabel(machine: Machine): string {
  if (!machine.status) return "UNKNOWN";
  switch (machine.status.effectiveState) {
    case EffectiveState.NEW:
      return "NEW";
    case EffectiveState.IDLE:
      return "IDLE";
    case EffectiveState.BUSY:
      return "BUSY";
    case EffectiveState.MAINTENANCE_IDLE:
      return "MAINT";
    case EffectiveState.ATTENTION:
      return "⚠ATTN";
    case EffectiveState.BLOCKED:
      return "⛔BLOCK";
    default:
      return "?";
  }
}

/**
 * A condition as a mark: ✓ true, ✗ false, - absent.
 *
 * @param machine The machine.
 * @param type The condition type, e.g. `Provisioned`.
 * @returns The mark.
 */
export function conditionMark(machine: Machine, type: string): string {
  const condition = machine.status?.conditions.find((c) => c.type === type);
  if (!condition) return "-";
  return condition.status ? "✓" : "✗";
}

/**
 * An id shortened to its first 11 characters (`op-` and 8 hex digits, unique among a few
 * thousand operations); `-` when empty. Every command that takes an operation id accepts it, as
 * any unique prefix (`operation_ids.ts`).
 *
 * @param id The id.
 * @returns The short id.
 */
export function shortId(id: string): string {
  return id === "" ? "-" : id.slice(0, 11);
}

/**
 * The machine list table.
 *
 * @param machines The machines, in server order.
 * @param width The widest a line may be ({@linkcode MACHINE_FIT} says how). @default Infinity
 * @returns The table text.
 */
export function formatMachineTable(machines: readonly Machine[], width = Infinity): string {
  return formatTable(MACHINE_COLUMNS, machines.map(machineCells), { width, fit: MACHINE_FIT });
}

/**
 * How the `list` columns fit a narrow terminal: the one-mark columns take short headers
 * (which fits 60 columns), then REACHABLE, PROVISIONED and ACTIVE_OP go, in that order.
 */
export const MACHINE_FIT: readonly (ColumnFit | undefined)[] = [
  undefined,
  undefined,
  undefined,
  { shortHeader: "REACH", drop: 1 },
  { shortHeader: "PROV", drop: 2 },
  { drop: 3 },
];

/** The columns of `list`; `-o wide` appends more. */
export const MACHINE_COLUMNS: readonly string[] = [
  "MACHINE_ID",
  "PHASE",
  "EFFECTIVE",
  "REACHABLE",
  "PROVISIONED",
  "ACTIVE_OP",
];

/**
 * The cells of one `list` row, in {@linkcode MACHINE_COLUMNS} order.
 *
 * @param m The machine.
 * @returns The cells.
 */
export function machineCells(m: Machine): string[] {
  return [
    m.machineId,
    phaseLabel(m),
    effectiveLabel(m),
    conditionMark(m, "Reachable"),
    conditionMark(m, "Provisioned"),
    shortId(m.status?.activeOperationId ?? ""),
  ];
}

/**
 * Truncates text to a display width, ending with `…` when cut.
 *
 * @param text The text.
 * @param max The width.
 * @returns The text, at most `max` cells wide.
 */
export function truncate(text: string, max: number): string {
  if (displayWidth(text) <= max) return text;
  let out = "";
  for (const ch of text) {
    if (displayWidth(out + ch) > max - 1) break;
    out += ch;
  }
  return out.trimEnd() + "…";
}

/**
 * The operations table.
 *
 * @param operations The operations.
 * @param width The widest a line may be ({@linkcode OPERATION_FIT} says how). @default Infinity
 * @returns The table text.
 */
export function formatOperationTable(operations: readonly Operation[], width = Infinity): string {
  return formatTable(OPERATION_COLUMNS, operations.map(operationCells), {
    width,
    fit: OPERATION_FIT,
  });
}

/**
 * How the `ops` columns fit a narrow terminal: ids shorten to their pasteable prefix (which
 * fits 80 columns), the error is cut down to 12 cells, then STAGE goes, then ERROR.
 */
export const OPERATION_FIT: readonly (ColumnFit | undefined)[] = [
  { short: shortId, shortHeader: "OPERATION" },
  undefined,
  undefined,
  undefined,
  { drop: 1 },
  { min: 12, drop: 2 },
];

/** The columns of `ops`; `-o wide` appends more. */
export const OPERATION_COLUMNS: readonly string[] = [
  "OPERATION_ID",
  "MACHINE",
  "TYPE",
  "PHASE",
  "STAGE",
  "ERROR",
];

/**
 * The cells of one `ops` row, in {@linkcode OPERATION_COLUMNS} order.
 *
 * @param op The operation.
 * @returns The cells.
 */
export function operationCells(op: Operation): string[] {
  return [
    op.operationId,
    op.machineId,
    operationTypeName(op),
    OperationPhase[op.phase] ?? String(op.phase),
    op.currentStage || "-",
    op.error?.message || "-",
  ];
}

/**
 * The enum name of an operation's type, e.g. `REIMAGE`.
 *
 * @param op The operation.
 * @returns The name.
 */
export function operationTypeName(op: Operation): string {
  const names = ["UNSPECIFIED", "REBOOT", "REIMAGE", "ENTER_MAINTENANCE", "EXIT_MAINTENANCE"];
  return names[op.type] ?? String(op.type);
}

/**
 * A protobuf timestamp as `HH:MM:SS` in UTC.
 *
 * @param ts The timestamp.
 * @returns The time, or `--:--:--` when absent.
 */
export function formatTime(ts: { seconds: bigint; nanos: number } | undefined): string {
  if (!ts) return "--:--:--";
  return new Date(Number(ts.seconds) * 1000).toISOString().slice(11, 19);
}

/**
 * A gRPC error as Go prints it: `rpc error: code = FailedPrecondition desc = ...`.
 *
 * @param code The numeric status code.
 * @param details The status message.
 * @returns The line, without a newline.
 */
export function formatRpcError(code: number, details: string): string {
  return `rpc error: code = ${codeName(code)} desc = ${details}`;
}

/** ANSI styles, or identity functions when colour is off. */
export interface Palette {
  green(text: string): string;
  red(text: string): string;
  yellow(text: string): string;
  bold(text: string): string;
  dim(text: string): string;
}

/** The styles a palette uses; node:util's `styleText` renders them (no hand-written escapes). */
type Style = "green" | "red" | "yellow" | "bold" | "dim";

function styled(style: Style): (text: string) => string {
  // validateStream: false because whether to colour is decided once, by `palette()`.
  return (text) => styleText(style, text, { validateStream: false });
}

/**
 * The palette for a run.
 *
 * @param enabled Whether to colour (a TTY without NO_COLOR or --no-color).
 * @returns The palette.
 */
export function palette(enabled: boolean): Palette {
  if (!enabled) {
    const id = (text: string): string => text;
    return { green: id, red: id, yellow: id, bold: id, dim: id };
  }
  return {
    green: styled("green"),
    red: styled("red"),
    yellow: styled("yellow"),
    bold: styled("bold"),
    dim: styled("dim"),
  };
}
