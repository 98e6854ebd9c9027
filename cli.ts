/**
 * The bmdemo CLI entry point: wires Deno's stdout/stderr, environment and Ctrl+C into
 * {@linkcode main} and exits with its code. See `deno run -A cli.ts --help`.
 *
 * @module
 */

import { main } from "./lib/cli/main.ts";

const encoder = new TextEncoder();
const interrupt = new AbortController();
const onInterrupt = (): void => interrupt.abort();
Deno.addSignalListener("SIGINT", onInterrupt);

function env(): Record<string, string | undefined> {
  const read = (name: string): string | undefined => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // No --allow-env: fall back to defaults.
    }
  };
  return { BMDEMO_SERVER: read("BMDEMO_SERVER"), NO_COLOR: read("NO_COLOR") };
}

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(file.writeSync(bytes));
}

async function pause(): Promise<void> {
  // One line of stdin; the reader is released so the next pause can read again.
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

const code = await main(Deno.args, {
  out: (text) => writeAll(Deno.stdout, text),
  err: (text) => writeAll(Deno.stderr, text),
  env: env(),
  isTerminal: Deno.stdout.isTerminal(),
  interrupt: interrupt.signal,
  pause: Deno.stdin.isTerminal() ? pause : undefined,
});
Deno.removeSignalListener("SIGINT", onInterrupt);
Deno.exit(code);
