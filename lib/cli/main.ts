/**
 * The bmdemo CLI: argument parsing, help, dispatch, and the mapping of failures to exit codes.
 * `main()` never exits the process; `cli.ts` does.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
// The transport (node:http2, node:tls) costs ~40 ms to load: commands that never talk to the
// server (--help, --version, completion, which shells run at every start) must not pay for it,
// so the modules that need it are imported on first use.
import type { ClientOptions as CreateClientOptions } from "../client/mod.ts";
import { Code } from "../client/code.ts";
import { MachineService, OperationService } from "../gen/baremetal/v1/baremetal_pb.ts";
import { formatRpcError, formatUnreachable, palette } from "./format.ts";
import { getCommand, importCommand, listCommand, parseCount, parsePageSize } from "./machines.ts";
import {
  cancelCommand,
  type OperationCommand,
  operationCommand,
  waitCommand,
} from "./operations.ts";
import { logsCommand, opCommand, opsCommand, watchCommand } from "./operation_queries.ts";
import { type CompletionOption, completionScript, type Shell, SHELLS } from "./completion.ts";
import { hintFor } from "./hints.ts";
import { parseDuration, parseOutputFormat } from "./output.ts";
import { demoCommand } from "./demo.ts";
import { tourCommand } from "./tour.ts";
import { type CliIo, EXIT, isServiceError, type Session, UsageError } from "./session.ts";

/** The CLI version. */
export const VERSION = "0.1.0";

/** The default server address. */
export const DEFAULT_SERVER = "localhost:50051";

interface CommandSpec {
  args: string;
  summary: string;
  /** Positional arguments: required, optional. */
  required: number;
  optional: number;
  options: ParseArgsOptionsConfig;
  optionHelp: string[];
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

const COMMANDS: Record<string, CommandSpec> = {
  import: {
    args: "<N>",
    summary: "Register N machines (machine-1, machine-2, ...); safe to re-run",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
  },
  list: {
    args: "",
    summary: "Show machines with phase, effective state, and conditions",
    required: 0,
    optional: 0,
    options: LIST_OPTIONS,
    optionHelp: LIST_HELP("phase=, effective_state=, label.<key>="),
  },
  get: {
    args: "<machine-id>",
    summary: "Show one machine: spec, labels, status and every condition",
    required: 1,
    optional: 0,
    options: OUTPUT_OPTION,
    optionHelp: [OUTPUT_HELP],
  },
  reboot: {
    args: "<machine-id>",
    summary: "Reboot a machine (READY or MAINTENANCE required)",
    required: 1,
    optional: 0,
    options: { ...OPERATION_OPTIONS, force: { type: "boolean" } },
    optionHelp: [...OPERATION_HELP, "--force            Power-cycle instead of a graceful reboot"],
  },
  reimage: {
    args: "<machine-id>",
    summary: "Reimage a machine (MAINTENANCE required)",
    required: 1,
    optional: 0,
    options: { ...OPERATION_OPTIONS, image: { type: "string" } },
    optionHelp: [...OPERATION_HELP, "--image <ref>      Image to write (default: the server's)"],
  },
  "enter-maintenance": {
    args: "<machine-id>",
    summary: "Enter maintenance mode",
    required: 1,
    optional: 0,
    options: OPERATION_OPTIONS,
    optionHelp: OPERATION_HELP,
  },
  "exit-maintenance": {
    args: "<machine-id>",
    summary: "Exit maintenance mode (return to READY)",
    required: 1,
    optional: 0,
    options: OPERATION_OPTIONS,
    optionHelp: OPERATION_HELP,
  },
  ops: {
    args: "",
    summary: "List all operations",
    required: 0,
    optional: 0,
    options: LIST_OPTIONS,
    optionHelp: LIST_HELP("machine_id=, phase=, type="),
  },
  op: {
    args: "<operation-id>",
    summary: "Show one operation: type, phase, stage, request id, times, error",
    required: 1,
    optional: 0,
    options: OUTPUT_OPTION,
    optionHelp: [OUTPUT_HELP],
  },
  wait: {
    args: "<operation-id>",
    summary: "Follow an operation to its end; exits 0, 4 (FAILED), 5 (CANCELED), 6 (timeout)",
    required: 1,
    optional: 0,
    options: { timeout: { type: "string" } },
    optionHelp: ["--timeout <dur>    Give up after <dur> (90s, 5m, 1h, 500ms); exit 6"],
  },
  watch: {
    args: "[machine-id]",
    summary: "Stream operation events (Ctrl+C to stop)",
    required: 0,
    optional: 1,
    options: OUTPUT_OPTION,
    optionHelp: ["-o, --output json   One JSON event (OperationEvent) per line"],
  },
  logs: {
    args: "<operation-id>",
    summary: "Stream operation logs (retained lines, then live until the operation ends)",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
  },
  cancel: {
    args: "<operation-id>",
    summary: "Cancel active operation",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
  },
  tour: {
    args: "",
    summary: "Guided presenter tour of the whole lifecycle (pauses for Enter on a terminal)",
    required: 0,
    optional: 0,
    options: {},
    optionHelp: [],
  },
  demo: {
    args: "",
    summary: "Run scripted demo for design docs (Markdown, machines demo-1..3)",
    required: 0,
    optional: 0,
    options: {},
    optionHelp: [],
  },
  completion: {
    args: "<bash|zsh|fish>",
    summary: "Print a shell completion script",
    required: 1,
    optional: 0,
    options: {},
    optionHelp: [],
  },
};

const GLOBAL_OPTIONS: ParseArgsOptionsConfig = {
  server: { type: "string" },
  "no-color": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  tls: { type: "boolean" },
  ca: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  token: { type: "string" },
};

/** Options that take a value, as written before the command (their value is not the command). */
const STRING_OPTIONS = new Set(
  [GLOBAL_OPTIONS, ...Object.values(COMMANDS).map((c) => c.options)].flatMap((options) =>
    Object.entries(options).filter(([, o]) => o.type === "string").flatMap(([name, o]) =>
      o.short ? [`--${name}`, `-${o.short}`] : [`--${name}`]
    )
  ),
);

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
 * @throws {UsageError} For an unknown command or option, or a wrong argument count.
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
    throw new UsageError(`unknown command: ${command}`);
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
 * Runs the CLI.
 *
 * @param args The arguments after the program name.
 * @param io Output, environment, terminal flag and interrupt signal.
 * @returns The exit code (see `--help`).
 */
export async function main(args: readonly string[], io: CliIo): Promise<number> {
  let parsed: ParsedArgs;
  let clientOptions: CreateClientOptions;
  try {
    parsed = parseCommandLine(args);
    if (parsed.values.version) {
      io.out(`bmdemo-cli ${VERSION}\n`);
      return EXIT.OK;
    }
    if (parsed.command === undefined) {
      if (parsed.values.help) {
        io.out(usageText());
        return EXIT.OK;
      }
      throw new UsageError("missing command");
    }
    if (parsed.values.help) {
      io.out(commandUsage(parsed.command));
      return EXIT.OK;
    }
    validate(parsed);
    if (parsed.command === "completion") {
      io.out(completionText(parsed.positionals[0] as Shell));
      return EXIT.OK;
    }
    const { connectionOptions } = await import("./connect.ts");
    clientOptions = connectionOptions(
      {
        tls: parsed.values.tls === true,
        ca: parsed.values.ca as string | undefined,
        cert: parsed.values.cert as string | undefined,
        key: parsed.values.key as string | undefined,
        token: parsed.values.token as string | undefined,
      },
      io.env ?? {},
      io.readFile ?? Deno.readFileSync,
    );
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`error: ${error.message}\n\n`);
    io.err(error.command ? commandUsage(error.command) : usageText());
    return EXIT.USAGE;
  }

  const env = io.env ?? {};
  const address = (parsed.values.server as string | undefined) || env.BMDEMO_SERVER ||
    DEFAULT_SERVER;
  const color = !!io.isTerminal && !parsed.values["no-color"] && !env.NO_COLOR;
  const { connectClient } = await import("../client/mod.ts");
  const machines = connectClient(MachineService, address, clientOptions);
  const operations = connectClient(OperationService, address, clientOptions);
  const session: Session = {
    io,
    address,
    machines,
    operations,
    colors: palette(color),
    interrupt: io.interrupt ?? new AbortController().signal,
  };
  try {
    return await runCommand(session, parsed);
  } finally {
    machines.close();
    operations.close();
  }
}

/**
 * Checks option values that parseArgs cannot: formats, durations, page sizes, the count of
 * `import` and the shell of `completion`.
 */
function validate(parsed: ParsedArgs): void {
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

/** Runs a parsed command and turns any failure into its exit code and an error message. */
async function runCommand(session: Session, parsed: ParsedArgs): Promise<number> {
  const { io, address } = session;
  try {
    return await dispatch(session, parsed);
  } catch (error) {
    if (isServiceError(error)) {
      const { errorInfo: errorInfoOf } = await import("../client/mod.ts");
      if (error.code === Code.Unavailable && errorInfoOf(error) === undefined) {
        io.err(formatUnreachable(address) + "\n");
        return EXIT.RPC;
      }
      io.err(formatRpcError(error.code, error.rawMessage) + "\n");
      const hint = hintFor(errorInfoOf(error), parsed.command, parsed.positionals);
      if (hint) io.err(hint + "\n");
      return EXIT.RPC;
    }
    if (error instanceof UsageError) {
      io.err(`error: ${error.message}\n`);
      return EXIT.USAGE;
    }
    io.err(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT.INTERNAL;
  }
}

function dispatch(session: Session, parsed: ParsedArgs): Promise<number> {
  const { command, positionals: [first], values } = parsed;
  const format = parseOutputFormat(values.output as string | undefined, command);
  const timeoutMs = values.timeout === undefined
    ? undefined
    : parseDuration(values.timeout as string, command);
  const list = {
    format,
    filter: (values.filter as string | undefined) ?? "",
    pageSize: parsePageSize(values["page-size"] as string | undefined, command),
  };
  switch (command) {
    case "import":
      return importCommand(session, parseCount(first));
    case "list":
      return listCommand(session, list);
    case "get":
      return getCommand(session, first, format);
    case "op":
      return opCommand(session, first, format);
    case "wait":
      return waitCommand(session, first, timeoutMs);
    case "reboot":
    case "reimage":
    case "enter-maintenance":
    case "exit-maintenance":
      return operationCommand(session, command as OperationCommand, {
        machineId: first,
        requestId: (values["request-id"] as string | undefined) || crypto.randomUUID(),
        force: values.force === true,
        imageRef: values.image as string | undefined,
        logs: values.logs === true,
        noWait: values["no-wait"] === true,
        timeoutMs,
      });
    case "ops":
      return opsCommand(session, list);
    case "watch":
      return watchCommand(session, first, format);
    case "logs":
      return logsCommand(session, first);
    case "cancel":
      return cancelCommand(session, first);
    case "demo":
      return demoCommand(session);
    case "tour":
      return tourCommand(session, {
        run: (args, tourSession) => runCommand(tourSession, parseCommandLine(args)),
        pause: session.io.pause,
      });
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}
