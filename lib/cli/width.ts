/**
 * Display width of CLI text, with npm:string-width as the authority but loaded only when a string
 * needs it. Evaluating string-width (an `Intl.Segmenter` and several Unicode-property regexes)
 * costs every CLI run ~30 ms, yet what the CLI prints is almost always printable ASCII plus a few
 * symbols of its own (✓ ✗ ⚠ ⛔). So:
 *
 * - printable ASCII (U+0020..U+007E, string-width's own fast path) is as wide as it is long;
 * - the CLI's own symbols are measured through {@linkcode KNOWN_SYMBOL_WIDTHS}, string-width's
 *   answers written down (a test asserts they still equal string-width's);
 * - anything else goes to string-width, which {@linkcode prepareWidths} loads on demand.
 *
 * The protocol is explicit: before rendering, a caller hands the text it is about to render, or
 * the data it renders from, to `await prepareWidths(...)`, which
 * loads string-width only if some of it needs it; rendering then stays synchronous.
 *
 * @module
 */

type StringWidth = typeof import("string-width").default;

/** The frames of the spinner a step shows on a terminal while it runs (`spinner.ts`). */
export const SPINNER_FRAMES: readonly string[] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/**
 * string-width's widths of the non-ASCII symbols the CLI itself prints: in tables, step lines,
 * the tour's rules and points, the truncation ellipsis and the spinner. Each is a single UTF-16
 * code unit that forms a grapheme cluster on its own next to printable ASCII or another of these
 * symbols, so the width of such a string is the sum of its characters' widths.
 */
export const KNOWN_SYMBOL_WIDTHS: ReadonlyMap<string, number> = new Map([
  ["✓", 1],
  ["✗", 1],
  ["⚠", 1],
  ["⛔", 2],
  ["→", 1],
  ["│", 1],
  ["○", 1],
  ["ℹ", 1],
  ["═", 1],
  ["…", 1],
  ...SPINNER_FRAMES.map((frame): [string, number] => [frame, 1]),
]);

/**
 * Text-presentation symbols that terminals draw with emoji width; string-width counts them as 1,
 * so {@linkcode displayWidth} adds one cell for each.
 */
export const WIDE_SYMBOLS: ReadonlySet<string> = new Set(["⚠"]);

let stringWidth: StringWidth | undefined;

/**
 * Thrown by {@linkcode displayWidth} for text that needs string-width before it is loaded: a
 * caller that rendered without {@linkcode prepareWidths} of that text, i.e. a bug.
 */
export class WidthsNotLoadedError extends Error {
  /**
   * @param text The text that needed string-width.
   */
  constructor(text: string) {
    super(
      `display width of ${JSON.stringify(text)} needs string-width: ` +
        `await prepareWidths() of the rendered text or its data before rendering`,
    );
    this.name = "WidthsNotLoadedError";
  }
}

/**
 * The width of text made only of printable ASCII and {@linkcode KNOWN_SYMBOL_WIDTHS}, with the
 * {@linkcode WIDE_SYMBOLS} extra.
 *
 * @param text The text.
 * @returns The width, or `undefined` when the text needs string-width.
 */
function simpleWidth(text: string): number | undefined {
  let width = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x20 && code <= 0x7e) {
      width += 1;
      continue;
    }
    const ch = text[i];
    const known = KNOWN_SYMBOL_WIDTHS.get(ch);
    if (known === undefined) return undefined;
    width += known + (WIDE_SYMBOLS.has(ch) ? 1 : 0);
  }
  return width;
}

/**
 * Whether measuring the text needs string-width, i.e. it has characters other than printable
 * ASCII and the CLI's known symbols.
 *
 * @param text The text.
 * @returns `true` when string-width must be loaded to measure it.
 */
export function needsStringWidth(text: string): boolean {
  return simpleWidth(text) === undefined;
}

/**
 * Whether string-width has been loaded (by {@linkcode prepareWidths}).
 *
 * @returns `true` once loaded.
 */
export function stringWidthLoaded(): boolean {
  return stringWidth !== undefined;
}

/**
 * Whether any text in `data` needs string-width: strings, and the items of arrays and the keys
 * and values of plain objects and protobuf messages (labels maps included) at any depth; binary
 * data is skipped. Stops at the first such text.
 *
 * @param data What is about to be rendered, or the data it is rendered from.
 * @returns `true` when string-width must be loaded to measure some of it.
 *
 * @example
 * ```ts
 * import { needsStringWidthIn } from "./width.ts";
 *
 * needsStringWidthIn([{ machineId: "m-1", labels: { rack: "r1" } }]); // false
 * needsStringWidthIn([{ machineId: "m-1", labels: { rack: "ラック" } }]); // true
 * ```
 */
export function needsStringWidthIn(data: unknown): boolean {
  if (typeof data === "string") return needsStringWidth(data);
  if (typeof data !== "object" || data === null || ArrayBuffer.isView(data)) return false;
  if (Array.isArray(data)) {
    for (const item of data) if (needsStringWidthIn(item)) return true;
    return false;
  }
  // for...in rather than Object.entries: no array per object, on lists of a thousand machines.
  const record = data as Record<string, unknown>;
  for (const key in record) {
    if (needsStringWidth(key) || needsStringWidthIn(record[key])) return true;
  }
  return false;
}

/**
 * Loads string-width if any text in `data` needs it ({@linkcode needsStringWidthIn}); afterwards
 * {@linkcode displayWidth} measures all of it. Call it before a synchronous render.
 *
 * @param data What is about to be rendered (a string, rows of cells), or the data it is rendered
 * from (the machines of a list, a machine, operations).
 * @returns When the texts can be measured.
 */
export async function prepareWidths(data: unknown): Promise<void> {
  if (stringWidth || !needsStringWidthIn(data)) return;
  stringWidth = (await import("string-width")).default;
}

/**
 * The number of terminal cells a string occupies: string-width's answer, plus one for each
 * {@linkcode WIDE_SYMBOLS} character.
 *
 * @param text The text.
 * @returns Its width in cells (⚠ and ⛔ count 2).
 * @throws {WidthsNotLoadedError} When the text needs string-width and it is not loaded yet.
 */
export function displayWidth(text: string): number {
  const simple = simpleWidth(text);
  if (simple !== undefined) return simple;
  if (!stringWidth) throw new WidthsNotLoadedError(text);
  let extra = 0;
  for (const ch of text) if (WIDE_SYMBOLS.has(ch)) extra += 1;
  return stringWidth(text) + extra;
}

/**
 * The cells text occupies at most, without loading string-width: {@linkcode displayWidth} when it
 * can measure the text now, else two cells for every character beyond printable ASCII (no
 * character is wider). For layout that must not exceed a width but cannot wait to load
 * string-width: wrapping what is being written.
 *
 * @param text The text.
 * @returns Its width in cells, or an upper bound of it.
 *
 * @example
 * ```ts
 * import { widthAtMost } from "./width.ts";
 *
 * widthAtMost("→ reboot... ✓"); // 13
 * ```
 */
export function widthAtMost(text: string): number {
  const simple = simpleWidth(text);
  if (simple !== undefined) return simple;
  if (stringWidth) return displayWidth(text);
  let width = 0;
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    width += code >= 0x20 && code <= 0x7e ? 1 : 2;
  }
  return width;
}
