/**
 * Process logging for the server: LogTape with text lines (timestamp, level, category) on
 * stderr, written in batches by a {@linkcode BatchedWriter}.
 *
 * Why batched: the server logs every operation transition at info level, 13,000 lines in a
 * burst of 1,000 reimages; one synchronous write per line cost ~6% of the server's CPU and
 * ~250 ms of the burst. Lines are written at most {@linkcode FLUSH_DELAY_MS} later, at once when
 * {@linkcode FLUSH_BYTES} are waiting, and before the process ends: `Deno.exit()` and a normal
 * exit (the `unload` event), an uncaught exception or unhandled rejection (their events fire
 * before the runtime reports them). Only a SIGKILL or a native abort can lose the last few
 * milliseconds of lines.
 *
 * @module
 */

import { configureSync, getTextFormatter, type LogLevel } from "@logtape/logtape";

/** Log levels the server's `--log-level` flag accepts. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** One of {@linkcode LOG_LEVELS}. */
export type LogLevelName = typeof LOG_LEVELS[number];

const TO_LOGTAPE: Record<LogLevelName, LogLevel> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};

/**
 * Sends every `bmdemo` log record at or above `level` to stderr. Replaces earlier configuration.
 *
 * @param level Lowest level written.
 * @param write Where formatted lines go. @default stderr
 */
export function configureLogging(
  level: LogLevelName,
  write: (line: string) => void = writeStderr,
): void {
  const format = getTextFormatter({ timestamp: "date-time-timezone", value: "bare" });
  configureSync({
    reset: true,
    sinks: { stderr: (record) => write(format(record)) },
    loggers: [
      { category: ["bmdemo"], lowestLevel: TO_LOGTAPE[level], sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** How long a logged line may wait before it is written. */
export const FLUSH_DELAY_MS = 10;
/** Waiting text that is written at once, without waiting for the delay. */
export const FLUSH_BYTES = 64 * 1024;

/** Where a {@linkcode BatchedWriter} writes: returns how many bytes it took, as `writeSync`. */
export type SyncWrite = (bytes: Uint8Array) => number;

/** Collects lines and writes them together; see the module documentation for when. */
export class BatchedWriter {
  readonly #write: SyncWrite;
  #pending: string[] = [];
  #size = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param write Takes the bytes of one or more lines; called again with the rest after a
   * partial write.
   */
  constructor(write: SyncWrite) {
    this.#write = write;
  }

  /**
   * Queues a line (with its newline).
   *
   * @param line Formatted text.
   */
  write(line: string): void {
    this.#pending.push(line);
    this.#size += line.length;
    if (this.#size >= FLUSH_BYTES) {
      this.flush();
    } else if (this.#timer === undefined) {
      const timer = setTimeout(() => this.flush(), FLUSH_DELAY_MS);
      // Waiting log lines must not keep a process alive that has nothing else to do.
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Writes every queued line now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#pending.length === 0) return;
    const bytes = encoder.encode(this.#pending.join(""));
    this.#pending = [];
    this.#size = 0;
    for (let offset = 0; offset < bytes.length;) {
      offset += this.#write(bytes.subarray(offset));
    }
  }
}

const encoder = new TextEncoder();

let stderrWriter: BatchedWriter | undefined;

/** The process's stderr writer, flushed before the process ends (see the module docs). */
function writeStderr(line: string): void {
  if (stderrWriter === undefined) {
    const writer = new BatchedWriter((bytes) => Deno.stderr.writeSync(bytes));
    const flush = (): void => writer.flush();
    globalThis.addEventListener("unload", flush);
    globalThis.addEventListener("error", flush);
    globalThis.addEventListener("unhandledrejection", flush);
    stderrWriter = writer;
  }
  stderrWriter.write(line);
}
