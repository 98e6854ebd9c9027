/**
 * `completion bash|zsh|fish`: shell completion scripts generated from the command table, so a
 * new command or option is completed without editing the scripts. Machine and operation ids are
 * completed by asking the server through the CLI itself (`__complete`, see `complete_ids.ts`),
 * with the connection flags already on the command line.
 *
 * @module
 */

import { COMPLETE_COMMAND, type IdKind } from "./complete_ids.ts";

/** An option as completion sees it. */
export interface CompletionOption {
  /** Long name without dashes, e.g. `output`. */
  long: string;
  /** Short letter, e.g. `o`. */
  short?: string;
  /** Whether it takes a value. */
  takesValue: boolean;
}

/** A command as completion sees it. */
export interface CompletionCommand {
  name: string;
  summary: string;
  options: readonly CompletionOption[];
  /** The ids its first argument takes, completed from the server. */
  ids?: IdKind;
}

/**
 * The ids a command's first argument takes, from its usage arguments.
 *
 * @param args The usage arguments, e.g. `<machine-id>` or `[machine-id]`.
 * @returns `machines`, `operations` or `undefined`.
 *
 * @example
 * ```ts
 * import { idKindOf } from "./completion.ts";
 * idKindOf("[machine-id]"); // "machines"
 * idKindOf("<operation-id>"); // "operations"
 * ```
 */
export function idKindOf(args: string): IdKind | undefined {
  if (/^[<[]machine-id[>\]]/.test(args)) return "machines";
  if (/^[<[]operation-id[>\]]/.test(args)) return "operations";
  return undefined;
}

/** The shells with a completion script. */
export const SHELLS = ["bash", "zsh", "fish"] as const;

/** One of {@linkcode SHELLS}. */
export type Shell = typeof SHELLS[number];

/** Fixed values of some options. */
const OPTION_VALUES: Record<string, readonly string[]> = {
  output: ["table", "wide", "json", "yaml"],
};

/** Options whose value is a file. */
const FILE_OPTIONS = new Set(["ca", "cert", "key"]);

const PROGRAM = "bmdemo-cli";

/** The global flags passed on to `__complete`, so it asks the server the command would. */
const CONNECTION_VALUE_FLAGS = ["--server", "--ca", "--cert", "--key", "--token", "--token-file"];
const CONNECTION_FLAGS = ["--tls"];

function idCommands(commands: readonly CompletionCommand[], kind: IdKind): string[] {
  return commands.filter((c) => c.ids === kind).map((c) => c.name);
}

function flags(options: readonly CompletionOption[]): string[] {
  return options.flatMap((o) => o.short ? [`-${o.short}`, `--${o.long}`] : [`--${o.long}`]);
}

function valueFlags(commands: readonly CompletionCommand[], global: readonly CompletionOption[]) {
  const all = [...global, ...commands.flatMap((c) => c.options)].filter((o) => o.takesValue);
  return [...new Set(flags(all))];
}

function singleQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

function bashScript(commands: readonly CompletionCommand[], global: readonly CompletionOption[]) {
  const withValue = valueFlags(commands, global).join("|");
  const fileFlags = [...FILE_OPTIONS].map((o) => `--${o}`).join("|");
  const perCommand = commands.map((c) =>
    `    ${c.name}) opts="$opts ${flags(c.options).join(" ")}" ;;`
  ).join("\n");
  return `# bash completion for ${PROGRAM}
# Install: ${PROGRAM} completion bash > ~/.local/share/bash-completion/completions/${PROGRAM}
_bmdemo_cli() {
  local cur prev cmd i opts npos=0 ids
  local -a conn=()
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  cmd=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      ${
    CONNECTION_VALUE_FLAGS.join("|")
  }) conn+=("\${COMP_WORDS[i]}" "\${COMP_WORDS[i+1]/#\\~/$HOME}"); ((i++)) ;;
      ${CONNECTION_FLAGS.join("|")}) conn+=("\${COMP_WORDS[i]}") ;;
      ${withValue}) ((i++)) ;;
      -*) ;;
      *) if [[ -z "$cmd" ]]; then cmd="\${COMP_WORDS[i]}"; else ((npos++)); fi ;;
    esac
  done
  case "$prev" in
    -o|--output) COMPREPLY=($(compgen -W "${
    OPTION_VALUES.output.join(" ")
  }" -- "$cur")); return 0 ;;
    ${fileFlags}) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
    ${withValue}) COMPREPLY=(); return 0 ;;
  esac
  opts="${flags(global).join(" ")}"
  if [[ -z "$cmd" ]]; then
    if [[ "$cur" == -* ]]; then
      COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "${commands.map((c) => c.name).join(" ")}" -- "$cur"))
    fi
    return 0
  fi
  if [[ "$cmd" == completion && "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W "${SHELLS.join(" ")}" -- "$cur"))
    return 0
  fi
  if [[ "$cur" != -* && $npos -eq 0 ]]; then
    ids=""
    case "$cmd" in
      ${idCommands(commands, "machines").join("|")}) ids=machines ;;
      ${idCommands(commands, "operations").join("|")}) ids=operations ;;
    esac
    if [[ -n "$ids" ]]; then
      COMPREPLY=($(compgen -W "$("\${COMP_WORDS[0]}" ${COMPLETE_COMMAND} "$ids" "$cur" "\${conn[@]}" 2>/dev/null)" -- "$cur"))
      return 0
    fi
  fi
  case "$cmd" in
${perCommand}
  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  return 0
}
complete -F _bmdemo_cli ${PROGRAM}
`;
}

function zshScript(commands: readonly CompletionCommand[], global: readonly CompletionOption[]) {
  const withValue = valueFlags(commands, global).join("|");
  const fileFlags = [...FILE_OPTIONS].map((o) => `--${o}`).join("|");
  const described = commands.map((c) =>
    `    ${singleQuote(`${c.name}:${c.summary.replaceAll(":", "\\:")}`)}`
  ).join("\n");
  const perCommand = commands.map((c) => `    ${c.name}) opts+=(${flags(c.options).join(" ")}) ;;`)
    .join("\n");
  return `#compdef ${PROGRAM}
# zsh completion for ${PROGRAM}
# Install: ${PROGRAM} completion zsh > "\${fpath[1]}/_${PROGRAM}"  (or: source <(${PROGRAM} completion zsh))
_bmdemo_cli() {
  local -a commands opts conn
  local cmd="" i npos=0 ids=""
  commands=(
${described}
  )
  for (( i = 2; i < CURRENT; i++ )); do
    case "\${words[i]}" in
      ${CONNECTION_VALUE_FLAGS.join("|")}) conn+=("\${words[i]}" "\${(Q)words[i+1]}"); (( i++ )) ;;
      ${CONNECTION_FLAGS.join("|")}) conn+=("\${words[i]}") ;;
      ${withValue}) (( i++ )) ;;
      -*) ;;
      *) if [[ -z "$cmd" ]]; then cmd="\${words[i]}"; else (( npos++ )); fi ;;
    esac
  done
  case "\${words[CURRENT-1]}" in
    -o|--output) compadd -- ${OPTION_VALUES.output.join(" ")}; return ;;
    ${fileFlags}) _files; return ;;
    ${withValue}) return ;;
  esac
  opts=(${flags(global).join(" ")})
  if [[ -z "$cmd" ]]; then
    if [[ "\${words[CURRENT]}" == -* ]]; then
      compadd -- "\${opts[@]}"
    else
      _describe 'command' commands
    fi
    return
  fi
  if [[ "$cmd" == completion && "\${words[CURRENT]}" != -* ]]; then
    compadd -- ${SHELLS.join(" ")}
    return
  fi
  if [[ "\${words[CURRENT]}" != -* && $npos -eq 0 ]]; then
    case "$cmd" in
      ${idCommands(commands, "machines").join("|")}) ids=machines ;;
      ${idCommands(commands, "operations").join("|")}) ids=operations ;;
    esac
    if [[ -n "$ids" ]]; then
      compadd -- \${(f)"$("\${words[1]}" ${COMPLETE_COMMAND} "$ids" "\${words[CURRENT]}" "\${conn[@]}" 2>/dev/null)"}
      return
    fi
  fi
  case "$cmd" in
${perCommand}
  esac
  compadd -- "\${opts[@]}"
}
if [[ "\${zsh_eval_context[-1]}" == loadautofunc ]]; then
  _bmdemo_cli "$@"
else
  compdef _bmdemo_cli ${PROGRAM}
fi
`;
}

function fishOption(option: CompletionOption, condition: string): string {
  let line = `complete -c ${PROGRAM}${condition}`;
  if (option.short) line += ` -s ${option.short}`;
  line += ` -l ${option.long}`;
  const values = OPTION_VALUES[option.long];
  if (values) line += ` -x -a ${singleQuote(values.join(" "))}`;
  else if (FILE_OPTIONS.has(option.long)) line += " -r -F";
  else if (option.takesValue) line += " -x";
  return line;
}

/** Asks the CLI for ids, passing on the connection flags of the command line being typed. */
const FISH_IDS_FUNCTION = [
  "function __bmdemo_cli_ids",
  "    set -l words (commandline -opc)",
  "    set -l conn",
  "    set -l i 2",
  "    while test $i -le (count $words)",
  "        switch $words[$i]",
  `            case ${CONNECTION_VALUE_FLAGS.join(" ")}`,
  "                if test $i -lt (count $words)",
  "                    set -a conn $words[$i] $words[(math $i + 1)]",
  "                end",
  "                set i (math $i + 1)",
  `            case ${CONNECTION_FLAGS.join(" ")}`,
  "                set -a conn $words[$i]",
  "        end",
  "        set i (math $i + 1)",
  "    end",
  `    $words[1] ${COMPLETE_COMMAND} $argv[1] (commandline -ct) $conn 2>/dev/null`,
  "end",
];

function fishScript(commands: readonly CompletionCommand[], global: readonly CompletionOption[]) {
  const names = commands.map((c) => c.name).join(" ");
  const lines = [
    `# fish completion for ${PROGRAM}`,
    `# Install: ${PROGRAM} completion fish > ~/.config/fish/completions/${PROGRAM}.fish`,
    `complete -c ${PROGRAM} -f`,
    ...global.map((o) => fishOption(o, "")),
    ...commands.map((c) =>
      `complete -c ${PROGRAM} -n ${singleQuote(`not __fish_seen_subcommand_from ${names}`)} -a ${
        singleQuote(c.name)
      } -d ${singleQuote(c.summary)}`
    ),
    ...commands.flatMap((c) =>
      c.options.map((o) =>
        fishOption(o, ` -n ${singleQuote(`__fish_seen_subcommand_from ${c.name}`)}`)
      )
    ),
    `complete -c ${PROGRAM} -n ${singleQuote("__fish_seen_subcommand_from completion")} -a ${
      singleQuote(SHELLS.join(" "))
    }`,
    ...FISH_IDS_FUNCTION,
    ...(["machines", "operations"] as const).map((kind) =>
      `complete -c ${PROGRAM} -n ${
        singleQuote(`__fish_seen_subcommand_from ${idCommands(commands, kind).join(" ")}`)
      } -a ${singleQuote(`(__bmdemo_cli_ids ${kind})`)}`
    ),
  ];
  return lines.join("\n") + "\n";
}

/**
 * The completion script of a shell.
 *
 * @param shell `bash`, `zsh` or `fish`.
 * @param commands Every command with its own options.
 * @param global The options every command takes.
 * @returns The script.
 */
export function completionScript(
  shell: Shell,
  commands: readonly CompletionCommand[],
  global: readonly CompletionOption[],
): string {
  switch (shell) {
    case "bash":
      return bashScript(commands, global);
    case "zsh":
      return zshScript(commands, global);
    case "fish":
      return fishScript(commands, global);
  }
}
