/**
 * The bmdemo CLI: runs a command line (parsed in `command_line.ts` against the command table in
 * `command_table.ts`, help from `help.ts`), dispatches it to its command, and maps failures to
 * exit codes. `main()` never exits the process; `cli.ts` does.
 *
 * @module
 */

// The transport (node:http2, node:tls) costs ~40 ms to load: commands that never talk to the
// server (--help, --version, completion, which shells run at every start) must not pay for it,
// so the modules that need it are imported on first use.
import type { ClientOptions as CreateClientOptions } from "../client/mod.ts";
import denoConfig from "../../deno.json" with { type: "json" };
import { MachineService, OperationService } from "../gen/baremetal/v1/baremetal_pb.ts";
import { formatRpcError, palette } from "./format.ts";
import { formatFailure } from "./failure.ts";
import { getCommand, importCommand, listCommand, parseCount, parsePageSize } from "./machines.ts";
import {
  cancelCommand,
  type OperationCommand,
  operationCommand,
  waitCommand,
} from "./operations.ts";
import { logsCommand, opCommand, opsCommand, watchCommand } from "./operation_queries.ts";
import type { Shell } from "./completion.ts";
import { COMPLETE_COMMAND, completeIds, completeRequest } from "./complete_ids.ts";
import { DEFAULT_SERVER } from "./command_table.ts";
import {
  parseCommandLine,
  type ParsedArgs,
  UnknownCommandError,
  UnknownFlagError,
  validateOptions,
} from "./command_line.ts";
import { commandUsage, completionText, shortUsage, usageText } from "./help.ts";
import { currentExecPath, DEFAULT_PROGRAM, programName } from "./program.ts";
import { resolveOperationId } from "./operation_ids.ts";
import { hintFor } from "./hints.ts";
import { parseDuration, parseOutputFormat } from "./output.ts";
import { explicitWidth, parseWidth, screenWidth, wrappingIo, wrapText } from "./layout.ts";
import { demoCommand } from "./demo.ts";
import { tourCommand } from "./tour.ts";
import { type CliIo, EXIT, isServiceError, type Session, UsageError } from "./session.ts";

/** The CLI version: deno.json's, which the server prints too. */
export const VERSION: string = denoConfig.version;

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
  const program = programName(io.env ?? {}, currentExecPath());
  const completing = args[0] === COMPLETE_COMMAND ? completeRequest(args.slice(1)) : undefined;
  if (args[0] === COMPLETE_COMMAND) {
    if (completing === undefined) return EXIT.USAGE;
    // A shell runs this on every Tab: nothing but ids may reach its prompt.
    io = { ...io, err: () => {}, isTerminal: false };
  }
  // The width (`layout.ts`): tables, help and the tour are laid out for it everywhere; other
  // lines are wrapped only on a terminal or at an explicit width, so that in a pipe a log line
  // or a command to paste stays whole. `--width`, a structured format and completion set it
  // once the command line is parsed.
  let requested: number | undefined;
  let unlimited = completing !== undefined;
  const env = io.env ?? {};
  const terminal = io.columns;
  const width = (): number =>
    unlimited
      ? Infinity
      : requested ?? screenWidth({ columnsEnv: env.COLUMNS, terminal: terminal?.() });
  const wrapsAll = !!io.isTerminal || explicitWidth(env.COLUMNS);
  io = wrappingIo(io, () => (wrapsAll || requested !== undefined ? width() : Infinity));
  try {
    parsed = parseCommandLine(completing?.args ?? args);
    if (parsed.values.width !== undefined) {
      requested = parseWidth(parsed.values.width as string, parsed.command);
    }
    unlimited ||= unlimitedOutput(parsed);
    if (parsed.values.version) {
      io.out(`bmdemo-cli ${VERSION}\n`);
      return EXIT.OK;
    }
    if (parsed.command === undefined) {
      if (parsed.values.help) {
        io.out(wrapText(usageText(program), width()));
        return EXIT.OK;
      }
      throw new UsageError("missing command");
    }
    if (parsed.values.help) {
      io.out(wrapText(commandUsage(parsed.command, program), width()));
      return EXIT.OK;
    }
    validateOptions(parsed);
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
        tokenFile: parsed.values["token-file"] as string | undefined,
      },
      io.env ?? {},
      io.readFile ?? Deno.readFileSync,
    );
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    if (error instanceof UnknownFlagError) {
      const help = error.command === undefined ? "--help" : `${error.command} --help`;
      io.err(`error: unknown flag ${error.flag} (see '${program} ${help}')\n`);
      return EXIT.USAGE;
    }
    if (error.command) {
      io.err(
        `error: ${error.message}\n\n${wrapText(commandUsage(error.command, program), width())}`,
      );
    } else {
      const typo = error instanceof UnknownCommandError ? error.typo : undefined;
      io.err(`error: ${error.message}\n${shortUsage(program, typo)}`);
    }
    return EXIT.USAGE;
  }

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
    program,
    tokenSent: clientOptions.token !== undefined,
    security: {
      tls: clientOptions.tls !== undefined && clientOptions.tls !== false,
      clientCertificate: typeof clientOptions.tls === "object" &&
        clientOptions.tls.cert !== undefined,
    },
    width,
    // A spinner redraws its line: only on a terminal that can, and never into structured output.
    live: !!io.isTerminal && env.TERM !== "dumb" && !completing && !unlimitedOutput(parsed),
  };
  try {
    return completing ? await completeIds(session, completing) : await runCommand(session, parsed);
  } finally {
    machines.close();
    operations.close();
  }
}

/** Output a program reads, or asked for whole (`-o wide`), which no width limits. */
function unlimitedOutput(parsed: ParsedArgs): boolean {
  const format = parsed.values.output;
  return parsed.command === "completion" || format === "json" || format === "yaml" ||
    format === "wide";
}

/** The commands whose first argument is an operation id (any unique prefix of one is taken). */
const OPERATION_ID_COMMANDS = new Set(["op", "wait", "logs", "cancel"]);

/** Runs a parsed command and turns any failure into its exit code and an error message. */
async function runCommand(session: Session, parsed: ParsedArgs): Promise<number> {
  const { io, address } = session;
  try {
    return await dispatch(session, parsed);
  } catch (error) {
    const { errorInfo: errorInfoOf } = await import("../client/mod.ts");
    const program = session.program ?? DEFAULT_PROGRAM;
    const { security } = session;
    const failure = await formatFailure(error, {
      address,
      program,
      errorInfo: errorInfoOf,
      // Ctrl+C cancels calls too: that is no connection failure to check.
      check: security === undefined || session.interrupt.aborted ? undefined : {
        security,
        probe: async () => (await import("./tls_probe.ts")).probeTls(address),
      },
    });
    if (failure !== undefined) {
      io.err(failure + "\n");
      return EXIT.RPC;
    }
    if (isServiceError(error)) {
      io.err(formatRpcError(error.code, error.rawMessage) + "\n");
      const hint = hintFor(errorInfoOf(error), parsed.command, {
        positionals: parsed.positionals,
        program: session.program,
        tokenSent: session.tokenSent,
      });
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

async function dispatch(session: Session, parsed: ParsedArgs): Promise<number> {
  const { command, values } = parsed;
  let [first] = parsed.positionals;
  if (command !== undefined && OPERATION_ID_COMMANDS.has(command)) {
    first = await resolveOperationId(session, first);
    parsed.positionals[0] = first;
  }
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
      return watchCommand(session, first, format, { reconnect: values.reconnect === true });
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
        dashboard: values.dashboard as string | undefined,
      });
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}
