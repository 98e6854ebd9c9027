/**
 * Flag parsing shared by the task scripts (`deno task bench`, `load`, `demo`, `bundle`...): one
 * behaviour for all of them. `--help`/`-h` prints the script's help and exits 0; a flag it does
 * not know, a missing value or a stray argument is one line on stderr naming the flag and
 * pointing at `--help`, exit 2, never node's parser message or a stack trace.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** What a script tells {@linkcode parseScriptArgs} about itself. */
export interface ScriptHelp {
  /** How the user runs it, e.g. `deno task load`: the prefix of every message. */
  program: string;
  /** The full help text: what the script does, then one line per flag. */
  help: string;
}

/** The exit code of a command line the script refuses (as the CLI and server do). */
export const USAGE_EXIT = 2;

/**
 * Parses `config.args` (default `Deno.args`) strictly, with `--help`/`-h` added. Prints the help
 * and exits 0 on `--help`; prints one line and exits {@linkcode USAGE_EXIT} on bad input.
 *
 * @example
 * ```ts
 * import { parseScriptArgs } from "./cli_args.ts";
 * const { values } = parseScriptArgs(
 *   { args: ["--machines", "3"], options: { machines: { type: "string", default: "1" } } },
 *   { program: "deno task x", help: "x: does x\n  --machines N" },
 * );
 * if (values.machines !== "3") throw new Error("not parsed");
 * ```
 */
export function parseScriptArgs<T extends ParseArgsConfig>(
  config: T,
  script: ScriptHelp,
): ReturnType<typeof parseArgs<T>> {
  let parsed;
  try {
    parsed = parseArgs({
      ...config,
      args: config.args ?? Deno.args,
      options: { ...config.options, help: { type: "boolean", short: "h" } },
      strict: true,
    });
  } catch (error) {
    usageError(script.program, parseErrorLine(error));
  }
  if ((parsed.values as { help?: boolean }).help) {
    console.log(script.help.trimEnd());
    Deno.exit(0);
  }
  delete (parsed.values as { help?: boolean }).help;
  return parsed as ReturnType<typeof parseArgs<T>>;
}

/** Prints `program: message (see program --help)` on stderr and exits {@linkcode USAGE_EXIT}. */
export function usageError(program: string, message: string): never {
  console.error(`${program}: ${message} (see ${program} --help)`);
  Deno.exit(USAGE_EXIT);
}

/** node's parser messages run to several sentences and advice about `--`: keep what went wrong. */
function parseErrorLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (unknown) return `unknown flag ${unknown[1]}`;
  const positional = /^Unexpected argument '([^']*)'/.exec(message);
  if (positional) return `unexpected argument "${positional[1]}"`;
  const missing = /^Option '(-\w, )?(--[\w-]+)[^']*' argument missing/.exec(message);
  if (missing) return `${missing[2]} needs a value`;
  return message.split(/\.(\s|$)/)[0];
}
