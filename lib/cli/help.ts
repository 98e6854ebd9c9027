/**
 * The CLI's help texts, derived from the command table: the general usage, each command's usage,
 * and the shell completion scripts.
 *
 * @module
 */

import type { ParseArgsOptionsConfig } from "node:util";
import { COMMANDS, DEFAULT_SERVER, GLOBAL_OPTIONS } from "./command_table.ts";
import { type CompletionOption, completionScript, idKindOf, type Shell } from "./completion.ts";

/** The program name when the caller does not say how the user invoked it. */
const PROGRAM = "bmdemo-cli";

const EXIT_HELP = `Exit codes:
  0    success (operation SUCCEEDED; --no-wait: the operation was accepted)
  1    internal error
  2    usage error
  3    RPC or connection error (a hint: line follows when the server says why)
  4    operation FAILED
  5    operation CANCELED
  6    --timeout passed; the operation continues on the server
  130  interrupted (Ctrl+C); the operation continues on the server
`;

const GLOBAL_HELP = `Global options:
  --server <host:port>  Server address (env BMDEMO_SERVER, default ${DEFAULT_SERVER})
  --tls                 Use TLS with the system roots (env BMDEMO_TLS=1)
  --ca <file>           Trust this CA certificate (PEM); implies --tls (env BMDEMO_CA)
  --cert <file>         Client certificate (PEM) for mutual TLS; needs --key
  --key <file>          Client private key (PEM) for mutual TLS; needs --cert
  --token-file <file>   Send 'authorization: Bearer <token>' with the token read from <file> (or set BMDEMO_TOKEN); prefer either to --token, which the shell history, the process list and 'deno task' (it prints its command) show
  --token <token>       The token on the command line (see --token-file)
  --no-color            No colours (also NO_COLOR; colour is only used on a terminal)
  --width <n>           Wrap and fit tables to <n> columns; 0 for no limit (default: COLUMNS, else the terminal's width, else 80; -o wide, json and yaml are never limited)
  -h, --help            Show help
  --version             Show the version
`;

/**
 * The general usage text.
 *
 * @returns The text.
 */
export function usageText(program: string = PROGRAM): string {
  const width = Math.max(...Object.entries(COMMANDS).map(([n, s]) => `${n} ${s.args}`.length));
  const lines = Object.entries(COMMANDS).map(([name, spec]) =>
    `  ${`${name} ${spec.args}`.trimEnd().padEnd(width)}  ${spec.summary}`
  );
  return `bmdemo-cli - Baremetal Demo CLI

Usage: ${program} [--server host:port] <command> [args] [options]

Commands:
${lines.join("\n")}

Columns of list:
  PHASE      - Imperative intent (FACTORY, READY, MAINT)
  EFFECTIVE  - Observed state (NEW, IDLE, BUSY, MAINT, ⚠ATTN, ⛔BLOCK)

Options may come before or after the arguments. Run '${program} <command> --help' for details.

${GLOBAL_HELP}
${EXIT_HELP}`;
}

/**
 * The usage text of one command: its usage line, summary, own options, examples, and the global
 * options in one line (`--help` without a command describes them and the exit codes).
 *
 * @param name The command.
 * @param program The program as the user invoked it.
 * @returns The text.
 */
export function commandUsage(name: string, program: string = PROGRAM): string {
  const spec = COMMANDS[name];
  const options = spec.optionHelp.length > 0
    ? `\nOptions:\n${spec.optionHelp.map((l) => `  ${l}`).join("\n")}\n`
    : "";
  const examples = spec.examples.map((e) => `  ${program} ${e}`).join("\n");
  return `Usage: ${program} ${name} ${spec.args}`.trimEnd() + `\n\n${spec.summary}\n${options}\n` +
    `Examples:\n${examples}\n\n` +
    `Global options (see '${program} --help'):\n` +
    "  --server --tls --ca --cert --key --token-file --token --no-color --width\n";
}

/**
 * The short usage shown after an unknown or missing command: one usage line, a suggestion
 * when the command looks like a typo of a known one, and where to find the full help.
 *
 * @param program The program as the user invoked it.
 * @param typo The unknown command, if one was given.
 * @returns The text.
 */
export function shortUsage(program: string, typo?: string): string {
  const suggestion = typo === undefined ? undefined : closestCommand(typo);
  return (suggestion ? `Did you mean '${program} ${suggestion}'?\n` : "") +
    `Usage: ${program} <command> [args] [options]; '${program} --help' lists the commands\n`;
}

/**
 * The known command nearest to a typo, when it is near enough to be what was meant: at most
 * a third of its length in edits, or a prefix of exactly one command.
 *
 * @param typo The unknown command.
 * @returns The command, or `undefined`.
 *
 * @example
 * ```ts
 * import { closestCommand } from "./help.ts";
 * closestCommand("reimag"); // "reimage"
 * closestCommand("frobnicate"); // undefined
 * ```
 */
export function closestCommand(typo: string): string | undefined {
  const names = Object.keys(COMMANDS);
  const prefixed = names.filter((n) => n.startsWith(typo));
  if (typo.length >= 2 && prefixed.length === 1) return prefixed[0];
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(typo, name);
    if (best === undefined || distance < best.distance) best = { name, distance };
  }
  return best && best.distance <= Math.max(1, Math.floor(best.name.length / 3))
    ? best.name
    : undefined;
}

/**
 * Edit distance counting an insertion, deletion, substitution or swap of two neighbours as one
 * edit (so `lsit` is one edit from `list`), one row at a time.
 */
function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        previous[j] + 1,
        row[j - 1] + 1,
        previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j], before[j - 2] + 1);
      }
    }
    before = previous;
    previous = row;
  }
  return previous[b.length];
}

function completionOptions(options: ParseArgsOptionsConfig): CompletionOption[] {
  return Object.entries(options).map(([long, o]) => ({
    long,
    short: o.short,
    takesValue: o.type === "string",
  }));
}

/**
 * The completion script of a shell, covering every command and option.
 *
 * @param shell `bash`, `zsh` or `fish`.
 * @returns The script.
 */
export function completionText(shell: Shell): string {
  return completionScript(
    shell,
    Object.entries(COMMANDS).map(([name, spec]) => ({
      name,
      summary: spec.summary,
      options: completionOptions(spec.options),
      ids: idKindOf(spec.args),
    })),
    completionOptions(GLOBAL_OPTIONS),
  );
}
