/**
 * The program's name as the user invoked it, so that every hint and usage line can be pasted:
 * `deno task cli` (its task sets `BMDEMO_CLI_PROGRAM`, since a running script cannot see the
 * task that started it), the name of a compiled binary (its executable is not `deno`), or
 * `bmdemo-cli` (the name `deno install -g` gives it, and the default).
 *
 * @module
 */

/** The environment variable that names the program; `deno task cli` sets it. */
export const PROGRAM_ENV = "BMDEMO_CLI_PROGRAM";

/** The name when nothing says otherwise. */
export const DEFAULT_PROGRAM = "bmdemo-cli";

/**
 * The program's name.
 *
 * @param env The environment.
 * @param execPath The running executable's path (`Deno.execPath()`), if known.
 * @returns The name to print in hints and usage lines.
 *
 * @example
 * ```ts
 * import { programName } from "./program.ts";
 * programName({ BMDEMO_CLI_PROGRAM: "deno task cli" }); // "deno task cli"
 * programName({}, "/usr/local/bin/bmdemo-cli"); // "bmdemo-cli"
 * programName({}, "/usr/bin/deno"); // "bmdemo-cli"
 * ```
 */
export function programName(
  env: Readonly<Record<string, string | undefined>>,
  execPath?: string,
): string {
  const named = env[PROGRAM_ENV]?.trim();
  if (named) return named;
  const base = execPath?.split(/[\\/]/).pop()?.replace(/\.exe$/i, "");
  return base && base !== "deno" ? base : DEFAULT_PROGRAM;
}

/**
 * The running executable's path, or `undefined` when the permissions do not allow reading it.
 *
 * @returns The path.
 */
export function currentExecPath(): string | undefined {
  try {
    return Deno.execPath();
  } catch {
    return undefined;
  }
}
