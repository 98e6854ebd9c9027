/**
 * The real terminal as a {@linkcode CliIo}: Deno's stdout and stderr, the environment variables
 * the CLI reads, whether stdout is a terminal and how wide it is now, Ctrl+C, and (only when stdin is a terminal) a
 * pause that waits for Enter. Used by `cli.ts` and `deno task demo`; tests inject their own io.
 *
 * @module
 */

import type { CliIo } from "./session.ts";

const encoder = new TextEncoder();

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(file.writeSync(bytes));
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // No --allow-env: fall back to defaults.
  }
}

/** The width of the terminal stdout is, if it is one (else the layout's default applies). */
function stdoutColumns(): number | undefined {
  if (!Deno.stdout.isTerminal()) return undefined;
  try {
    return Deno.consoleSize().columns;
  } catch {
    return undefined;
  }
}

async function waitForEnter(): Promise<void> {
  // One line of stdin; the reader is released so that the next pause can read again.
  const reader = Deno.stdin.readable.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || value.includes(10)) return;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * The process's terminal as CLI io.
 *
 * @param interrupt Aborted on Ctrl+C by the caller's signal listener.
 * @returns The io.
 */
export function terminalIo(interrupt: AbortSignal): CliIo {
  return {
    out: (text) => writeAll(Deno.stdout, text),
    err: (text) => writeAll(Deno.stderr, text),
    env: {
      BMDEMO_SERVER: readEnv("BMDEMO_SERVER"),
      NO_COLOR: readEnv("NO_COLOR"),
      BMDEMO_TOKEN: readEnv("BMDEMO_TOKEN"),
      BMDEMO_TLS: readEnv("BMDEMO_TLS"),
      BMDEMO_CA: readEnv("BMDEMO_CA"),
      BMDEMO_CLI_PROGRAM: readEnv("BMDEMO_CLI_PROGRAM"),
      COLUMNS: readEnv("COLUMNS"),
      TERM: readEnv("TERM"),
    },
    isTerminal: Deno.stdout.isTerminal(),
    columns: stdoutColumns,
    interrupt,
    pause: Deno.stdin.isTerminal() ? waitForEnter : undefined,
  };
}
