/**
 * Parsing of the CLI's command line against the command table: the command, its positionals and
 * option values, wherever the options stand, and the checks of option values that `parseArgs`
 * cannot make.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { COMMANDS, GLOBAL_OPTIONS } from "./command_table.ts";
import { SHELLS } from "./completion.ts";
import { parseCount, parsePageSize } from "./machines.ts";
import { parseDuration, parseOutputFormat } from "./output.ts";
import { UsageError } from "./session.ts";

/** Options that take a value, as written before the command (their value is not the command). */
const STRING_OPTIONS = new Set(
  [GLOBAL_OPTIONS, ...Object.values(COMMANDS).map((c) => c.options)].flatMap((options) =>
    Object.entries(options).filter(([, o]) => o.type === "string").flatMap(([name, o]) =>
      o.short ? [`--${name}`, `-${o.short}`] : [`--${name}`]
    )
  ),
);

/** A command that is not in the command table; `main` suggests the nearest one. */
export class UnknownCommandError extends UsageError {
  /** The command as typed. */
  readonly typo: string;

  /** @param typo The command as typed. */
  constructor(typo: string) {
    super(`unknown command: ${typo}`);
    this.name = "UnknownCommandError";
    this.typo = typo;
  }
}

/** A flag no option of the command (nor a global one) has; `main` refuses it in one line. */
export class UnknownFlagError extends UsageError {
  /** The flag as typed, e.g. `--bogus` or `-x`. */
  readonly flag: string;

  /**
   * @param flag The flag as typed.
   * @param command The command it was given to, if any.
   */
  constructor(flag: string, command?: string) {
    super(`unknown flag ${flag}`, command);
    this.name = "UnknownFlagError";
    this.flag = flag;
  }
}

/**
 * The first flag of `args` that none of `options` is (before `--`), skipping option values.
 *
 * @param args The command line.
 * @param options The options it may use.
 * @returns The flag as typed (without `=value`), or `undefined`.
 */
function unknownFlag(args: readonly string[], options: ParseArgsOptionsConfig): string | undefined {
  const shorts = new Map(
    Object.entries(options).filter(([, o]) => o.short).map(([name, o]) => [o.short!, name]),
  );
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return undefined;
    if (arg.startsWith("--")) {
      const name = arg.slice(2).split("=", 1)[0];
      if (!(name in options)) return `--${name}`;
      if (options[name].type === "string" && !arg.includes("=")) i++;
    } else if (arg.startsWith("-") && arg.length > 1) {
      for (const [k, ch] of [...arg.slice(1)].entries()) {
        const name = shorts.get(ch);
        if (name === undefined) return `-${ch}`;
        // A short string option takes the rest of the word, or the next argument.
        if (options[name].type === "string") {
          if (k === arg.length - 2) i++;
          break;
        }
      }
    }
  }
  return undefined;
}

/** A parsed command line. */
export interface ParsedArgs {
  /** The command, or `undefined` for `--help` / `--version` alone. */
  command: string | undefined;
  positionals: string[];
  values: Record<string, string | boolean | undefined>;
}

/**
 * Parses a command line; options may precede or follow positionals.
 *
 * @param args The arguments after the program name.
 * @returns The command, its positionals and option values.
 * @throws {UsageError} For an unknown command ({@linkcode UnknownCommandError}) or option, or a
 * wrong argument count.
 */
export function parseCommandLine(args: readonly string[]): ParsedArgs {
  let command: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      command = args[i + 1];
      break;
    }
    if (arg.startsWith("-")) {
      if (STRING_OPTIONS.has(arg)) i++;
      continue;
    }
    command = arg;
    break;
  }
  if (command !== undefined && !(command in COMMANDS)) {
    throw new UnknownCommandError(command);
  }
  const spec = command === undefined ? undefined : COMMANDS[command];
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: { ...GLOBAL_OPTIONS, ...spec?.options },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    // From the parser's error code, not its wording; the flag is found in the arguments.
    if ((error as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const flag = unknownFlag(args, { ...GLOBAL_OPTIONS, ...spec?.options });
      if (flag !== undefined) throw new UnknownFlagError(flag, command);
    }
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new UsageError(message.replace(/\. To specify a positional.*$/, ""), command);
  }
  const positionals = parsed.positionals.slice(command === undefined ? 0 : 1);
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (spec && !values.help) {
    if (positionals.length < spec.required) {
      throw new UsageError(`missing ${spec.args}`, command);
    }
    if (positionals.length > spec.required + spec.optional) {
      throw new UsageError(`unexpected argument: ${positionals.at(-1)}`, command);
    }
  }
  return { command, positionals, values };
}

/**
 * Checks option values that parseArgs cannot: formats, durations, page sizes, the count of
 * `import` and the shell of `completion`.
 *
 * @param parsed The parsed command line.
 * @throws {UsageError} For the first value that is not valid.
 */
export function validateOptions(parsed: ParsedArgs): void {
  const { command, values, positionals } = parsed;
  if (command === "import") parseCount(positionals[0]);
  parseOutputFormat(values.output as string | undefined, command);
  if (values.timeout !== undefined) parseDuration(values.timeout as string, command);
  parsePageSize(values["page-size"] as string | undefined, command);
  if (command === "completion" && !(SHELLS as readonly string[]).includes(positionals[0])) {
    throw new UsageError(`unknown shell: ${positionals[0]} (use ${SHELLS.join(", ")})`, command);
  }
  if (values["no-wait"] && (values.timeout !== undefined || values.logs)) {
    throw new UsageError("--no-wait cannot be combined with --timeout or --logs", command);
  }
}
