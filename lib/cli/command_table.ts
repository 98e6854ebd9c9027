/**
 * The CLI's commands as data: each command's arguments, summary, options and option help, and
 * the global options. Help, completion, parsing and dispatch are all derived from this table.
 *
 * @module
 */

import type { ParseArgsOptionsConfig } from "node:util";

/** The default server address. */
export const DEFAULT_SERVER = "localhost:50051";

/** One command: its arguments, summary, options and their help lines. */
export interface CommandSpec {
  /** Positional arguments as the usage line shows them, e.g. `<machine-id>`. */
  args: string;
  /** One line: what the command does. */
  summary: string;
  /** How many positionals are required. */
  required: number;
  /** How many optional positionals may follow the required ones. */
  optional: number;
  /** The command's own options, as `parseArgs` takes them. */
  options: ParseArgsOptionsConfig;
  /** One help line per option. */
  optionHelp: string[];
  /** Example command lines (after the program name), shown under `<command> --help`. */
  examples: string[];
}

const OPERATION_OPTIONS: ParseArgsOptionsConfig = {
  "request-id": { type: "string" },
  logs: { type: "boolean", short: "v" },
  "no-wait": { type: "boolean" },
  timeout: { type: "string" },
};
const OPERATION_HELP = [
  "--request-id <id>  Idempotency key (default: a new UUID, printed so a retry is safe)",
  "-v, --logs         Stream the operation's log lines under each step",
  "--no-wait          Print the operation (id, request id, phase) and return at once",
  "--timeout <dur>    Stop following after <dur> (90s, 5m, 1h, 500ms); exit 6, it continues",
];

const OUTPUT_OPTION: ParseArgsOptionsConfig = { output: { type: "string", short: "o" } };
const OUTPUT_HELP = "-o, --output <fmt>  table (default), wide, json or yaml";

const LIST_OPTIONS: ParseArgsOptionsConfig = {
  ...OUTPUT_OPTION,
  filter: { type: "string" },
  "page-size": { type: "string" },
};
const LIST_HELP = (fields: string): string[] => [
  OUTPUT_HELP,
  `--filter <expr>     Server-side filter: ${fields}, joined with ' AND '`,
  "--page-size <n>     Items per request (every page is read)",
];

/** Every command of the CLI, in the order `--help` lists them. */
export const COMMANDS: Record<string, CommandSpec> = {
  import: {
    args: "<N>",
    summary: "Register N machines (machine-1, machine-2, ...); safe to re-run",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
    examples: ["import 3"],
  },
  list: {
    args: "",
    summary: "Show machines with phase, effective state, and conditions",
    required: 0,
    optional: 0,
    options: LIST_OPTIONS,
    optionHelp: LIST_HELP("phase=, effective_state=, label.<key>="),
    examples: ["list", "list --filter phase=MAINTENANCE -o wide", "list -o json"],
  },
  get: {
    args: "<machine-id>",
    summary: "Show one machine: spec, labels, status and every condition",
    required: 1,
    optional: 0,
    options: OUTPUT_OPTION,
    optionHelp: [OUTPUT_HELP],
    examples: ["get machine-1", "get machine-1 -o yaml"],
  },
  reboot: {
    args: "<machine-id>",
    summary: "Reboot a machine (READY or MAINTENANCE required)",
    required: 1,
    optional: 0,
    options: { ...OPERATION_OPTIONS, force: { type: "boolean" } },
    optionHelp: [...OPERATION_HELP, "--force            Power-cycle instead of a graceful reboot"],
    examples: ["reboot machine-1", "reboot machine-1 --force --logs"],
  },
  reimage: {
    args: "<machine-id>",
    summary: "Reimage a machine (MAINTENANCE required)",
    required: 1,
    optional: 0,
    options: { ...OPERATION_OPTIONS, image: { type: "string" } },
    optionHelp: [...OPERATION_HELP, "--image <ref>      Image to write (default: the server's)"],
    examples: [
      "enter-maintenance machine-1",
      "reimage machine-1",
      "reimage machine-1 --image ubuntu-24.04 --logs",
      "reimage machine-1 --no-wait",
    ],
  },
  "enter-maintenance": {
    args: "<machine-id>",
    summary: "Enter maintenance mode",
    required: 1,
    optional: 0,
    options: OPERATION_OPTIONS,
    optionHelp: OPERATION_HELP,
    examples: ["enter-maintenance machine-1"],
  },
  "exit-maintenance": {
    args: "<machine-id>",
    summary: "Exit maintenance mode (return to READY)",
    required: 1,
    optional: 0,
    options: OPERATION_OPTIONS,
    optionHelp: OPERATION_HELP,
    examples: ["exit-maintenance machine-1"],
  },
  ops: {
    args: "",
    summary: "List all operations",
    required: 0,
    optional: 0,
    options: LIST_OPTIONS,
    optionHelp: LIST_HELP("machine_id=, phase=, type="),
    examples: ["ops", "ops --filter machine_id=machine-1 -o wide"],
  },
  op: {
    args: "<operation-id>",
    summary: "Show one operation: type, phase, stage, request id, times, error",
    required: 1,
    optional: 0,
    options: OUTPUT_OPTION,
    optionHelp: [OUTPUT_HELP],
    examples: ["op op-b2f7e1a3", "op b2f7 -o json  # any unique prefix of the id"],
  },
  wait: {
    args: "<operation-id>",
    summary: "Follow an operation to its end; exits 0, 4 (FAILED), 5 (CANCELED), 6 (timeout)",
    required: 1,
    optional: 0,
    options: { timeout: { type: "string" } },
    optionHelp: ["--timeout <dur>    Give up after <dur> (90s, 5m, 1h, 500ms); exit 6"],
    examples: ["wait op-b2f7e1a3 --timeout 5m"],
  },
  watch: {
    args: "[machine-id]",
    summary: "Stream operation events (Ctrl+C to stop)",
    required: 0,
    optional: 1,
    options: { ...OUTPUT_OPTION, reconnect: { type: "boolean" } },
    optionHelp: [
      "-o, --output json   One JSON event (OperationEvent) per line",
      "--reconnect         Outlive a server restart: retry, then print what changed meanwhile",
    ],
    examples: ["watch", "watch machine-1 -o json", "watch --reconnect"],
  },
  logs: {
    args: "<operation-id>",
    summary: "Stream operation logs (retained lines, then live until the operation ends)",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
    examples: ["logs op-b2f7e1a3"],
  },
  cancel: {
    args: "<operation-id>",
    summary: "Cancel active operation",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
    examples: ["cancel op-b2f7e1a3"],
  },
  tour: {
    args: "",
    summary: "Guided presenter tour of the whole lifecycle (pauses for Enter on a terminal)",
    required: 0,
    optional: 0,
    options: { dashboard: { type: "string" } },
    optionHelp: ["--dashboard <url>  The live dashboard's URL, for the narration to point at"],
    examples: ["tour", "tour --dashboard http://127.0.0.1:8080/"],
  },
  demo: {
    args: "",
    summary: "Run scripted demo for design docs (Markdown, machines demo-1..3)",
    required: 0,
    optional: 0,
    options: {},
    optionHelp: [],
    examples: ["demo > demo.md"],
  },
  completion: {
    args: "<bash|zsh|fish>",
    summary: "Print a shell completion script",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
    examples: ["completion bash > ~/.local/share/bash-completion/completions/bmdemo-cli"],
  },
};

/** Options every command takes. */
export const GLOBAL_OPTIONS: ParseArgsOptionsConfig = {
  server: { type: "string" },
  "no-color": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  tls: { type: "boolean" },
  ca: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  token: { type: "string" },
  "token-file": { type: "string" },
  width: { type: "string" },
};
