/**
 * The CLI's help texts, derived from the command table: the general usage, each command's usage,
 * and the shell completion scripts.
 *
 * @module
 */

import type { ParseArgsOptionsConfig } from "node:util";
import { COMMANDS, DEFAULT_SERVER, GLOBAL_OPTIONS } from "./command_table.ts";
import { type CompletionOption, completionScript, type Shell } from "./completion.ts";

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
  --token <token>       Send 'authorization: Bearer <token>' on every call (env BMDEMO_TOKEN)
  --no-color            No colours (also NO_COLOR; colour is only used on a terminal)
  -h, --help            Show help
  --version             Show the version
`;

/**
 * The general usage text.
 *
 * @returns The text.
 */
export function usageText(): string {
  const width = Math.max(...Object.entries(COMMANDS).map(([n, s]) => `${n} ${s.args}`.length));
  const lines = Object.entries(COMMANDS).map(([name, spec]) =>
    `  ${`${name} ${spec.args}`.trimEnd().padEnd(width)}  ${spec.summary}`
  );
  return `bmdemo-cli - Baremetal Demo CLI

Usage: bmdemo-cli [--server host:port] <command> [args] [options]

Commands:
${lines.join("\n")}

Columns of list:
  PHASE      - Imperative intent (FACTORY, READY, MAINT)
  EFFECTIVE  - Observed state (NEW, IDLE, BUSY, MAINT, ⚠ATTN, ⛔BLOCK)

Options may come before or after the arguments. Run 'bmdemo-cli <command> --help' for details.

${GLOBAL_HELP}
${EXIT_HELP}`;
}

/**
 * The usage text of one command.
 *
 * @param name The command.
 * @returns The text.
 */
export function commandUsage(name: string): string {
  const spec = COMMANDS[name];
  const options = spec.optionHelp.length > 0
    ? `\nOptions:\n${spec.optionHelp.map((l) => `  ${l}`).join("\n")}\n`
    : "";
  return `Usage: bmdemo-cli ${name} ${spec.args}`.trimEnd() + `\n\n${spec.summary}\n${options}\n` +
    `${GLOBAL_HELP}\n${EXIT_HELP}`;
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
    })),
    completionOptions(GLOBAL_OPTIONS),
  );
}
