/**
 * How wide the CLI may write, and the wrapping that keeps every line within it.
 *
 * The width is, first match wins: `--width <n>` (0: no limit), the `COLUMNS` environment
 * variable, the terminal's width (read again at every write, so a presenter who resizes the
 * window or the font mid-tour gets the new width), else {@linkcode DEFAULT_WIDTH} (no terminal,
 * or one that does not tell). JSON, YAML and `-o wide` are never limited.
 *
 * Tables, help and the tour's narration are laid out for the width everywhere. Every other line
 * (log lines, events, messages, commands to paste) is wrapped on a terminal, or at a width
 * given explicitly (`--width`, `COLUMNS`), and left whole in a pipe, where grep and copy want it
 * whole and no terminal would break it mid-word.
 *
 * {@linkcode LineWrapper} wraps text as it is written, at spaces, never inside a word unless the
 * word alone is wider than the line; a continued line is indented under where its text began
 * (after a `ℹ `, `│ `, `[12:00:00] ` or `label: ` prefix, or after the gap of a two-column line
 * such as a help entry). Lines within the width, tables among them (fitted beforehand by
 * `formatTable`), pass unchanged.
 *
 * @example
 * ```ts
 * import { wrapText } from "./layout.ts";
 *
 * wrapText("  ℹ Reimage requires MAINTENANCE: a safety gate against accidental repaves.\n", 40);
 * // "  ℹ Reimage requires MAINTENANCE: a\n    safety gate against accidental\n    repaves.\n"
 * ```
 *
 * @module
 */

import type { CliIo } from "./session.ts";
import { UsageError } from "./session.ts";
import { widthAtMost } from "./width.ts";

/** The width without a terminal that tells its own. */
export const DEFAULT_WIDTH = 80;

/** The narrowest width the CLI lays out for; a narrower terminal gets this. */
export const MIN_WIDTH = 20;

/** The widest `--width` or `COLUMNS` taken. */
export const MAX_WIDTH = 1000;

/**
 * Parses `--width`.
 *
 * @param value The option value.
 * @param command The command, for the usage text.
 * @returns The width; `Infinity` for 0 (no limit).
 * @throws {UsageError} Unless it is 0 or an integer from {@linkcode MIN_WIDTH} to
 * {@linkcode MAX_WIDTH}.
 */
export function parseWidth(value: string, command?: string): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (n === 0) return Infinity;
  if (!(n >= MIN_WIDTH && n <= MAX_WIDTH)) {
    throw new UsageError(
      `invalid width: ${value} (use 0 for no limit, or ${MIN_WIDTH} to ${MAX_WIDTH} columns)`,
      command,
    );
  }
  return n;
}

/** What decides the width, besides `--width`. */
export interface WidthSources {
  /** The `COLUMNS` environment variable; ignored unless a whole number of columns. */
  readonly columnsEnv?: string;
  /** The terminal's width; 0 or absent when unknown (a pipe, a terminal of size 0). */
  readonly terminal?: number;
}

/**
 * The width to lay out for when `--width` is not given: `COLUMNS`, else the terminal's,
 * else {@linkcode DEFAULT_WIDTH}; never below {@linkcode MIN_WIDTH}.
 *
 * @param sources The environment variable and the terminal's width.
 * @returns The width in columns.
 *
 * @example
 * ```ts
 * import { screenWidth } from "./layout.ts";
 *
 * screenWidth({ terminal: 60 }); // 60
 * screenWidth({ columnsEnv: "120", terminal: 60 }); // 120
 * screenWidth({}); // 80
 * ```
 */
export function screenWidth(sources: WidthSources): number {
  if (explicitWidth(sources.columnsEnv)) {
    return Math.min(MAX_WIDTH, Math.max(MIN_WIDTH, Number(sources.columnsEnv)));
  }
  const terminal = sources.terminal ?? 0;
  return terminal > 0 ? Math.max(MIN_WIDTH, terminal) : DEFAULT_WIDTH;
}

/**
 * Whether `COLUMNS` sets the width (a whole number of columns), which, like `--width`, wraps
 * every line even when the output is not a terminal.
 *
 * @param columnsEnv The `COLUMNS` environment variable.
 * @returns `true` when it is taken.
 */
export function explicitWidth(columnsEnv: string | undefined): boolean {
  const env = columnsEnv?.trim() ?? "";
  return /^\d+$/.test(env) && Number(env) > 0;
}

// An ANSI control sequence (the palette's colours): no width, never split.
const ESCAPE_SOURCE = "\x1b\\[[0-9;?]*[A-Za-z]";
const ESCAPE = new RegExp(ESCAPE_SOURCE, "y");
const ESCAPES = new RegExp(ESCAPE_SOURCE, "g");

/**
 * A prefix after which a continued line is indented: a mark of the CLI's (`ℹ `, `│ `, `→ `...),
 * a `[time] ` stamp, a list number, or a short label (`error: `, `Machine:   `).
 */
const PREFIX = /^(?:[ℹ│→✓✗⚠○•*-]!? +|\[[^\]]{1,20}\] +|\d{1,2}\. +|[A-Za-z][\w ]{0,15}?: +)/;
/** The gap (two spaces or more) after the first column of a two-column line, e.g. help. */
const GAP = /^\S(?:.*?\S)?( {2,})(?=\S)/;

/**
 * The column a continued line starts at: under the text after a prefix or a two-column gap, else
 * at the line's own indentation; never beyond 60% of the width.
 *
 * @param line The line (without escape sequences).
 * @param width The width.
 * @returns The indentation of continued lines.
 */
export function hangingIndent(line: string, width: number): number {
  const base = line.length - line.trimStart().length;
  const rest = line.slice(base);
  const prefix = PREFIX.exec(rest);
  const gap = prefix ? undefined : GAP.exec(rest);
  const indent = base + widthAtMost(prefix?.[0] ?? gap?.[0] ?? "");
  const limit = Math.floor(width * 0.6);
  if (indent <= limit) return indent;
  return base <= limit ? base : 0;
}

/**
 * Wraps what is written to one stream, keeping track of the column where the last write ended,
 * so a line written in pieces (`→ step...`, later ` ✓`) wraps as a whole.
 */
export class LineWrapper {
  readonly #width: () => number;
  #column = 0;
  /** Continuation indent of the current line; `undefined` until its first text is seen. */
  #indent: number | undefined;
  /** Whether the current screen line has text beyond its indentation (so it may be broken). */
  #content = false;

  /** @param width The width to wrap at, read at every write (`Infinity`: never wrap). */
  constructor(width: () => number) {
    this.#width = width;
  }

  /**
   * Wraps the next piece of the stream.
   *
   * @param text What is written, possibly a part of a line.
   * @returns The text with line breaks (and indentation) where lines would exceed the width.
   */
  wrap(text: string): string {
    const width = this.#width();
    if (width === Infinity) return text;
    let out = "";
    // Spaces, and escape sequences after them, wait for the next word: a line break goes
    // before both, and trailing spaces never start a new line.
    let spaces = "";
    let escapes = "";
    /** Whether the last thing written was a word, with no space since (an escape may follow). */
    let glued = false;
    const flushPending = (): void => {
      // Trailing spaces (a spinner's padding) are kept as far as they fit.
      const kept = spaces.slice(0, Math.max(0, width - this.#column));
      out += kept + escapes;
      this.#column += kept.length;
      spaces = "";
      escapes = "";
    };
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (ch === "\n" || ch === "\r") {
        flushPending();
        out += ch;
        // After a carriage return the line is drawn again (a spinner): its indent too.
        this.#column = 0;
        this.#content = false;
        this.#indent = undefined;
        glued = false;
        i++;
        continue;
      }
      ESCAPE.lastIndex = i;
      const escape = ch === "\x1b" ? ESCAPE.exec(text) : null;
      if (escape) {
        escapes += escape[0];
        i += escape[0].length;
        continue;
      }
      if (ch === " ") {
        if (escapes !== "") flushPending();
        spaces += ch;
        glued = false;
        i++;
        continue;
      }
      if (this.#indent === undefined) {
        const rest = text.slice(i).split(/[\r\n]/, 1)[0].replace(ESCAPES, "");
        this.#indent = this.#column + hangingIndent(spaces + rest, width);
      }
      let end = i;
      while (end < text.length && !" \r\n\x1b".includes(text[end])) end++;
      const word = text.slice(i, end);
      i = end;
      out += this.#place(word, { spaces, escapes, glued }, width);
      spaces = "";
      escapes = "";
      glued = true;
    }
    flushPending();
    return out;
  }

  /**
   * Writes a word after the spaces and escapes before it, on a new line when it does not fit
   * (not when it continues a word an escape interrupted).
   */
  #place(
    word: string,
    before: { spaces: string; escapes: string; glued: boolean },
    width: number,
  ): string {
    const { spaces, escapes, glued } = before;
    const wordWidth = widthAtMost(word);
    let out = "";
    if (this.#content && !glued && this.#column + spaces.length + wordWidth > width) {
      const indent = this.#indent ?? 0;
      out += "\n" + " ".repeat(indent) + escapes;
      this.#column = indent;
    } else {
      const kept = spaces.slice(0, Math.max(0, width - this.#column));
      out += kept + escapes;
      this.#column += kept.length;
    }
    if (this.#column + wordWidth <= width) {
      this.#column += wordWidth;
      this.#content = true;
      return out + word;
    }
    // A word wider than the line: split at the width, the only case a word is split.
    for (const ch of word) {
      const w = widthAtMost(ch);
      if (this.#content && this.#column + w > width) {
        const indent = this.#indent !== undefined && this.#indent + w < width ? this.#indent : 0;
        out += "\n" + " ".repeat(indent);
        this.#column = indent;
      }
      out += ch;
      this.#column += w;
      this.#content = true;
    }
    return out;
  }
}

/**
 * Wraps whole text at a width (a {@linkcode LineWrapper} used once).
 *
 * @param text The text.
 * @param width The width; `Infinity` returns the text unchanged.
 * @returns The wrapped text.
 */
export function wrapText(text: string, width: number): string {
  return new LineWrapper(() => width).wrap(text);
}

/**
 * The io with stdout and stderr each wrapped at the width.
 *
 * @param io The io to write through.
 * @param width The width, read at every write.
 * @returns The wrapping io.
 */
export function wrappingIo(io: CliIo, width: () => number): CliIo {
  const out = new LineWrapper(width);
  const err = new LineWrapper(width);
  return { ...io, out: (text) => io.out(out.wrap(text)), err: (text) => io.err(err.wrap(text)) };
}
