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

const code = await main(Deno.args, {
  out: (text) => Deno.stdout.writeSync(encoder.encode(text)),
  err: (text) => Deno.stderr.writeSync(encoder.encode(text)),
  env: env(),
  isTerminal: Deno.stdout.isTerminal(),
  interrupt: interrupt.signal,
});
Deno.removeSignalListener("SIGINT", onInterrupt);
Deno.exit(code);
