/**
 * Process logging for the server: LogTape configured with a synchronous stderr sink (so nothing
 * is lost when the process exits right after a line), text lines with a timestamp, level and
 * category.
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

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line));
}
