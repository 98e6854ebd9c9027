/**
 * The operation commands (`reboot`, `reimage`, `enter-maintenance`, `exit-maintenance`) with
 * live progress driven by WatchOperations, and `wait`, `cancel`, `ops`, `op`, `watch`, `logs`.
 *
 * Progress: the watch (filter `machine_id=<id>`, initial snapshot) is opened and confirmed
 * before the operation RPC is sent, so no step event is missed; a slow GetOperation poll is
 * only a safety net for a watch that ends or lags.
 *
 * @module
 */

import { toJson } from "@bufbuild/protobuf";
import type { Operation, OperationEvent } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationEventSchema,
  OperationSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { isTerminalPhase } from "../lifecycle.ts";
import { formatOperationTable, formatTime, shortId, withWidths } from "./format.ts";
import type { ListOptions } from "./machines.ts";
import {
  formatDuration,
  formatOperationDetail,
  formatOperationWideTable,
  type OutputFormat,
  renderStructured,
} from "./output.ts";
import { Code } from "../client/code.ts";
import { EXIT, isServiceError, type Session } from "./session.ts";

/** The operation commands. */
export type OperationCommand = "reboot" | "reimage" | "enter-maintenance" | "exit-maintenance";

/** Options of an operation command. */
export interface OperationOptions {
  machineId: string;
  requestId: string;
  force?: boolean;
  imageRef?: string;
  /** Stream the operation's log lines under the current step. */
  logs?: boolean;
  /** Print the operation and return at once, without following it. */
  noWait?: boolean;
  /** Stop following after this many ms (exit {@linkcode EXIT.TIMEOUT}). @default no limit */
  timeoutMs?: number;
}

/** A `--timeout` clock: a session whose interrupt also fires when the time is up. */
interface Timer {
  /** The session to follow with; its interrupt aborts on Ctrl+C or on timeout. */
  readonly session: Session;
  /** Aborted when the time is up. */
  readonly signal: AbortSignal;
  /** Whether the time ran out (and not Ctrl+C). */
  readonly timedOut: boolean;
  clear(): void;
}

function startTimer(session: Session, ms: number | undefined): Timer {
  const controller = new AbortController();
  const id = ms === undefined ? undefined : setTimeout(() => controller.abort(), ms);
  return {
    session: ms === undefined
      ? session
      : { ...session, interrupt: AbortSignal.any([session.interrupt, controller.signal]) },
    signal: controller.signal,
    get timedOut(): boolean {
      return controller.signal.aborted && !session.interrupt.aborted;
    },
    clear: () => clearTimeout(id),
  };
}

function serverFlag(session: Session): string {
  return session.address === "localhost:50051" ? "" : ` --server ${session.address}`;
}

function timedOutText(session: Session, operationId: string, ms: number): string {
  const server = serverFlag(session);
  return `\n⚠ Timed out after ${formatDuration(ms)}: operation ${operationId} continues on the ` +
    `server.\n` +
    `  wait for it: bmdemo-cli${server} wait ${operationId}\n` +
    `  follow it:   bmdemo-cli${server} logs ${operationId}\n` +
    `  cancel it:   bmdemo-cli${server} cancel ${operationId}\n`;
}

/**
 * The exit code of a terminal operation.
 *
 * @param op The operation.
 * @returns 0, 4 (FAILED) or 5 (CANCELED).
 */
export function exitCodeOf(op: Operation): number {
  if (op.phase === OperationPhase.FAILED) return EXIT.FAILED;
  if (op.phase === OperationPhase.CANCELED) return EXIT.CANCELED;
  return EXIT.OK;
}

/** What {@linkcode followOperation} reports while an operation runs. */
export interface FollowHandlers {
  stepStarted(name: string): void;
  stepSucceeded(name: string): void;
  stepFailed(name: string, message: string): void;
  /** The operation was canceled while a step ran. */
  stepCanceled?(name: string): void;
}

/** A machine's event stream, opened and confirmed by {@linkcode openMachineWatch}. */
export type MachineWatch = AsyncIterator<OperationEvent>;

const STEP_EVENT = /^Step (\S+) (started|succeeded|failed)(?:: (.*))?$/s;

/** Message of the event that ends the initial snapshot of a watch. */
const SNAPSHOT_COMPLETE = "Snapshot complete";

/**
 * Opens the watch of a machine's operations and returns once the server confirmed it (its
 * `Snapshot complete` marker): every event of an operation started after that arrives on it.
 *
 * @param session The session.
 * @param machineId The machine.
 * @param signal Ends the watch.
 * @returns The event stream, positioned after the snapshot.
 * @throws The stream's gRPC error, e.g. UNAVAILABLE when the server cannot be reached.
 */
export async function openMachineWatch(
  session: Session,
  machineId: string,
  signal: AbortSignal,
): Promise<MachineWatch> {
  const events = session.operations.watchOperations(
    { filter: `machine_id=${machineId}`, sendInitialSnapshot: true },
    { signal },
  );
  for (;;) {
    const { value, done } = await events.next();
    if (done) throw new Error("the server ended the watch before confirming it");
    if (value.message === SNAPSHOT_COMPLETE) return events;
  }
}

/**
 * Reads the events of one operation until it is terminal. Progress comes only from the event
 * stream; if the stream ends early (server shutdown, or the watcher fell behind) the operation
 * is read once more to report where it stands.
 *
 * @param session The session (its interrupt stops the wait).
 * @param events The machine's watch, opened before the operation was started.
 * @param start The operation as the start RPC returned it.
 * @param handlers Step callbacks.
 * @returns The terminal operation, or `"interrupted"` (Ctrl+C, or the stream was lost while the
 * operation still runs).
 */
export async function followOperation(
  session: Session,
  events: MachineWatch,
  start: Operation,
  handlers: FollowHandlers,
): Promise<Operation | "interrupted"> {
  const id = start.operationId;
  let openStep = "";
  if (start.phase === OperationPhase.RUNNING && start.currentStage !== "") {
    // A replay of an operation in flight: its current step is already under way.
    openStep = start.currentStage;
    handlers.stepStarted(openStep);
  }
  const interrupted = new Promise<"interrupted">((resolve) => {
    if (session.interrupt.aborted) resolve("interrupted");
    session.interrupt.addEventListener("abort", () => resolve("interrupted"), { once: true });
  });
  for (;;) {
    let next: IteratorResult<OperationEvent> | "interrupted";
    try {
      next = await Promise.race([events.next(), interrupted]);
    } catch (error) {
      if (session.interrupt.aborted) return "interrupted";
      // The stream failed (e.g. RESOURCE_EXHAUSTED): fall back to one read of the operation.
      const op = await session.operations.getOperation({ operationId: id }, {
        timeoutMs: 10_000,
      });
      if (isTerminalPhase(op.phase)) return op;
      throw error;
    }
    if (next === "interrupted") return next;
    if (next.done) {
      const op = await session.operations.getOperation({ operationId: id }, {
        timeoutMs: 10_000,
      });
      if (isTerminalPhase(op.phase)) return op;
      return "interrupted";
    }
    const event = next.value;
    const op = event.snapshot;
    if (!op || op.operationId !== id) continue;
    const step = STEP_EVENT.exec(event.message);
    if (step) {
      const [, name, what, detail] = step;
      if (what === "started") {
        openStep = name;
        handlers.stepStarted(name);
      } else if (what === "succeeded") {
        openStep = "";
        handlers.stepSucceeded(name);
      } else {
        openStep = "";
        handlers.stepFailed(name, detail ?? "");
      }
    }
    if (isTerminalPhase(op.phase)) {
      if (openStep !== "" && op.phase === OperationPhase.CANCELED) {
        handlers.stepCanceled?.(openStep);
      }
      return op;
    }
  }
}

/**
 * Starts an operation on the server.
 *
 * @param session The session.
 * @param command Which.
 * @param options Machine, request id and parameters.
 * @returns The operation the server returned.
 */
export function startOperation(
  session: Session,
  command: OperationCommand,
  options: OperationOptions,
): Promise<Operation> {
  const { machineId, requestId } = options;
  const call = { timeoutMs: 10_000 };
  switch (command) {
    case "reboot":
      return session.machines.rebootMachine({ machineId, requestId, force: !!options.force }, call);
    case "reimage":
      return session.machines.reimageMachine(
        { machineId, requestId, imageRef: options.imageRef ?? "" },
        call,
      );
    case "enter-maintenance":
      return session.machines.enterMaintenance({ machineId, requestId }, call);
    case "exit-maintenance":
      return session.machines.exitMaintenance({ machineId, requestId }, call);
  }
}

/**
 * The result line of a terminal operation.
 *
 * @param session The session (for colours).
 * @param op The operation.
 * @returns `✓ SUCCEEDED`, `✗ FAILED: <message>` or `○ CANCELED`, with a newline.
 */
export function resultLine(session: Session, op: Operation): string {
  const c = session.colors;
  switch (op.phase) {
    case OperationPhase.SUCCEEDED:
      return c.green("✓ SUCCEEDED") + "\n";
    case OperationPhase.FAILED:
      return c.red(`✗ FAILED: ${op.error?.message || "unknown error"}`) + "\n";
    case OperationPhase.CANCELED:
      return c.yellow("○ CANCELED") + "\n";
    default:
      return `Phase: ${OperationPhase[op.phase]}\n`;
  }
}

/**
 * Runs an operation command: prints the operation, follows it to its end, exits 0, 4 or 5.
 *
 * @param session The session.
 * @param command Which.
 * @param options Machine, request id, parameters, `logs`.
 * @returns The exit code.
 */
export async function operationCommand(
  session: Session,
  command: OperationCommand,
  options: OperationOptions,
): Promise<number> {
  const { io } = session;
  if (options.noWait) {
    const op = await startOperation(session, command, options);
    io.out(`Operation: ${op.operationId}\n`);
    io.out(`Request ID: ${options.requestId}\n`);
    io.out(`Phase: ${OperationPhase[op.phase]}\n`);
    return EXIT.OK;
  }
  const stop = new AbortController();
  const timer = startTimer(session, options.timeoutMs);
  try {
    // Without --logs, progress comes from the event stream, which must be open before the
    // operation starts. With --logs, the log stream alone drives the display (it replays from
    // the first line, so it can start after the operation), which keeps every log line under
    // the step that wrote it.
    let events: MachineWatch | undefined;
    try {
      events = options.logs ? undefined : await openMachineWatch(
        session,
        options.machineId,
        AbortSignal.any([stop.signal, timer.session.interrupt]),
      );
    } catch (error) {
      if (timer.timedOut) {
        io.err(
          `\n⚠ Timed out after ${formatDuration(options.timeoutMs ?? 0)} waiting for the ` +
            `server; no operation was started.\n`,
        );
        return EXIT.TIMEOUT;
      }
      if (session.interrupt.aborted) {
        io.err("\n⚠ Interrupted before the operation was started.\n");
        return EXIT.INTERRUPTED;
      }
      throw error;
    }
    const op = await startOperation(session, command, options);
    io.out(`Operation: ${op.operationId}\n`);
    io.out(`Request ID: ${options.requestId}\n`);
    if (isTerminalPhase(op.phase)) {
      io.out(resultLine(session, op));
      return exitCodeOf(op);
    }
    if (op.type === OperationType.ENTER_MAINTENANCE) io.out("→ entering maintenance...\n");
    if (op.type === OperationType.EXIT_MAINTENANCE) io.out("→ exiting maintenance...\n");
    const steps = new StepPrinter(session);
    const result = events
      ? await followOperation(timer.session, events, op, steps)
      : await followLogs(timer.session, op, steps, stop.signal);
    steps.end();
    return reportOutcome(session, op.operationId, result, {
      timedOut: timer.timedOut,
      timeoutMs: options.timeoutMs,
    });
  } finally {
    timer.clear();
    stop.abort();
  }
}

/**
 * `wait <operation-id> [--timeout <duration>]`: follows an operation to its end (printing its
 * steps) and exits like an operation command: 0, 4 (FAILED), 5 (CANCELED), or 6 on timeout.
 *
 * The machine's watch is opened and confirmed before the operation is read again, so an end
 * that comes between the two is never missed.
 *
 * @param session The session.
 * @param operationId The operation.
 * @param timeoutMs Give up after this many ms. @default no limit
 * @returns The exit code.
 */
export async function waitCommand(
  session: Session,
  operationId: string,
  timeoutMs?: number,
): Promise<number> {
  const { io } = session;
  const stop = new AbortController();
  const timer = startTimer(session, timeoutMs);
  const read = () => session.operations.getOperation({ operationId }, { timeoutMs: 10_000 });
  try {
    const first = await read();
    io.out(`Operation: ${operationId}\n`);
    if (isTerminalPhase(first.phase)) {
      io.out(resultLine(session, first));
      return exitCodeOf(first);
    }
    let events: MachineWatch;
    try {
      events = await openMachineWatch(
        session,
        first.machineId,
        AbortSignal.any([stop.signal, timer.session.interrupt]),
      );
    } catch (error) {
      if (timer.timedOut) {
        io.err(timedOutText(session, operationId, timeoutMs ?? 0));
        return EXIT.TIMEOUT;
      }
      if (session.interrupt.aborted) {
        io.err(interruptedText(session, operationId));
        return EXIT.INTERRUPTED;
      }
      throw error;
    }
    const op = await read();
    if (isTerminalPhase(op.phase)) {
      io.out(resultLine(session, op));
      return exitCodeOf(op);
    }
    const steps = new StepPrinter(session);
    const result = await followOperation(timer.session, events, op, steps);
    steps.end();
    return reportOutcome(session, operationId, result, { timedOut: timer.timedOut, timeoutMs });
  } finally {
    timer.clear();
    stop.abort();
  }
}

/**
 * Prints step progress: `→ name... ✓` on one line, or, when log lines come between, the
 * `→ name...` line, the log lines (`  │ ...`), then `  ✓ name`.
 */
class StepPrinter implements FollowHandlers {
  readonly #session: Session;
  #open = "";
  #broken = false;

  constructor(session: Session) {
    this.#session = session;
  }

  stepStarted(name: string): void {
    this.end();
    this.#open = name;
    this.#session.io.out(`→ ${name}...`);
  }

  stepSucceeded(name: string): void {
    this.#close(this.#session.colors.green("✓"), name);
  }

  stepFailed(name: string, message: string): void {
    this.#close(this.#session.colors.red("✗"), name);
    this.#session.io.out(`    ${message}\n`);
  }

  stepCanceled(name: string): void {
    this.#close(this.#session.colors.yellow("○"), name);
  }

  /** Prints a log line under the open step. */
  log(line: string, stream: string): void {
    const { io, colors } = this.#session;
    if (this.#open !== "" && !this.#broken) {
      io.out("\n");
      this.#broken = true;
    }
    const bar = stream === "stderr" ? "│!" : "│";
    io.out(colors.dim(`  ${bar} ${line}`) + "\n");
  }

  /** Ends an open step line that got no mark. */
  end(): void {
    if (this.#open !== "" && !this.#broken) this.#session.io.out("\n");
    this.#open = "";
    this.#broken = false;
  }

  /** The step whose line is open, if any. */
  get open(): string {
    return this.#open;
  }

  #close(mark: string, name: string): void {
    if (this.#open === name && !this.#broken) this.#session.io.out(` ${mark}\n`);
    else this.#session.io.out(`  ${mark} ${name}\n`);
    this.#open = "";
    this.#broken = false;
  }
}

const STEP_HEADER = /^--- Step \d+\/\d+: (\S+) ---$/;
const OUTCOME_LINE = /^=== Operation (SUCCEEDED|FAILED|CANCELED)(?:: (.*?))? ===$/;

/**
 * Follows an operation through its log stream: step headers open steps, the outcome banner
 * closes the last one, every other line is printed under its step. The stream ends once the
 * operation is terminal; the operation is then read for its result.
 */
async function followLogs(
  session: Session,
  op: Operation,
  steps: StepPrinter,
  signal: AbortSignal,
): Promise<Operation | "interrupted"> {
  const decoder = new TextDecoder();
  const logs = session.operations.streamOperationLogs({ operationId: op.operationId }, {
    signal: AbortSignal.any([signal, session.interrupt]),
  });
  try {
    for await (const chunk of logs) {
      const line = decoder.decode(chunk.data).replace(/\n$/, "");
      const header = STEP_HEADER.exec(line);
      const outcome = OUTCOME_LINE.exec(line);
      if (header) {
        if (steps.open !== "") steps.stepSucceeded(steps.open);
        steps.stepStarted(header[1]);
      } else if (outcome) {
        const open = steps.open;
        if (open !== "" && outcome[1] === "SUCCEEDED") steps.stepSucceeded(open);
        if (open !== "" && outcome[1] === "FAILED") steps.stepFailed(open, outcome[2] ?? "");
        if (open !== "" && outcome[1] === "CANCELED") steps.stepCanceled(open);
      } else if (line.trim() !== "") {
        steps.log(line, chunk.stream);
      }
    }
  } catch (error) {
    if (session.interrupt.aborted) return "interrupted";
    throw error;
  }
  if (session.interrupt.aborted) return "interrupted";
  return await session.operations.getOperation({ operationId: op.operationId }, {
    timeoutMs: 10_000,
  });
}

/**
 * Prints how following an operation ended and returns the exit code: its result line (0, 4 or
 * 5), or, when the wait stopped first, why (timeout: 6; Ctrl+C or a lost stream: 130) with the
 * commands that pick it up again.
 */
function reportOutcome(
  session: Session,
  operationId: string,
  result: Operation | "interrupted",
  wait: { timedOut: boolean; timeoutMs?: number },
): number {
  if (result !== "interrupted") {
    session.io.out(resultLine(session, result));
    return exitCodeOf(result);
  }
  if (wait.timedOut) {
    session.io.err(timedOutText(session, operationId, wait.timeoutMs ?? 0));
    return EXIT.TIMEOUT;
  }
  session.io.err(interruptedText(session, operationId));
  return EXIT.INTERRUPTED;
}

function interruptedText(session: Session, operationId: string): string {
  const server = serverFlag(session);
  return `\n⚠ Interrupted: operation ${operationId} continues on the server.\n` +
    `  follow it:  bmdemo-cli${server} logs ${operationId}\n` +
    `  cancel it:  bmdemo-cli${server} cancel ${operationId}\n`;
}

/**
 * `cancel <operation-id>`.
 *
 * @param session The session.
 * @param operationId The operation.
 * @returns The exit code.
 */
export async function cancelCommand(session: Session, operationId: string): Promise<number> {
  const op = await session.machines.cancelOperation({ operationId }, {
    timeoutMs: 10_000,
  });
  session.io.out(`✓ Canceled operation ${op.operationId} (phase: ${OperationPhase[op.phase]})\n`);
  return EXIT.OK;
}

/**
 * `ops [-o table|wide|json|yaml] [--filter <expr>] [--page-size <n>]`: every operation (all
 * pages), oldest first.
 *
 * @param session The session.
 * @param options Format, filter and page size.
 * @returns The exit code.
 */
export async function opsCommand(session: Session, options: ListOptions = {}): Promise<number> {
  const { format = "table", filter = "", pageSize = 0 } = options;
  const deadline = Date.now() + 30_000;
  const ops: Operation[] = [];
  let pageToken = "";
  do {
    const page = await session.operations.listOperations({ pageToken, filter, pageSize }, {
      timeoutMs: deadline - Date.now(),
    });
    ops.push(...page.operations);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  if (format === "json" || format === "yaml") {
    session.io.out(await renderStructured(OperationSchema, ops, format));
  } else if (ops.length === 0) {
    session.io.out(filter === "" ? "No operations.\n" : "No operations match the filter.\n");
  } else {
    session.io.out(
      await withWidths(() =>
        format === "wide" ? formatOperationWideTable(ops) : formatOperationTable(ops)
      ),
    );
  }
  return EXIT.OK;
}

/**
 * `op <operation-id> [-o table|wide|json|yaml]`: the whole operation.
 *
 * @param session The session.
 * @param operationId The operation.
 * @param format Output format.
 * @returns The exit code.
 */
export async function opCommand(
  session: Session,
  operationId: string,
  format: OutputFormat = "table",
): Promise<number> {
  const op = await session.operations.getOperation({ operationId }, {
    timeoutMs: 10_000,
  });
  session.io.out(
    format === "json" || format === "yaml"
      ? await renderStructured(OperationSchema, op, format)
      : formatOperationDetail(op),
  );
  return EXIT.OK;
}

/**
 * `watch [machine-id] [-o json]`: prints events until Ctrl+C or the server ends the stream.
 * With `json`, stdout carries only events, one compact JSON object per line.
 *
 * @param session The session.
 * @param machineId Only this machine's operations, when given.
 * @param format `json` for JSON lines; anything else prints readable lines.
 * @returns The exit code.
 */
export async function watchCommand(
  session: Session,
  machineId?: string,
  format: OutputFormat = "table",
): Promise<number> {
  const { io } = session;
  const json = format === "json" || format === "yaml";
  const filter = machineId ? `machine_id=${machineId}` : "";
  if (!json) io.out("Watching operation events (Ctrl+C to stop)...\n\n");
  try {
    for await (
      const event of session.operations.watchOperations(
        { filter, sendInitialSnapshot: true },
        { signal: session.interrupt },
      )
    ) {
      if (json) {
        io.out(JSON.stringify(toJson(OperationEventSchema, event)) + "\n");
        continue;
      }
      const op = event.snapshot;
      io.out(
        `[${formatTime(event.ts)}] ${shortId(op?.operationId ?? "")} | ${op?.machineId ?? "-"} | ` +
          `${OperationPhase[op?.phase ?? 0]} | stage=${
            op?.currentStage || "-"
          } | ${event.message}\n`,
      );
    }
  } catch (error) {
    if (!(session.interrupt.aborted && isServiceError(error) && error.code === Code.Canceled)) {
      throw error;
    }
    if (json) io.err("Stopped watching.\n");
    else io.out("\nStopped watching.\n");
  }
  return EXIT.OK;
}

/**
 * `logs <operation-id>`: the operation's retained log, then live lines until it ends.
 *
 * @param session The session.
 * @param operationId The operation.
 * @returns The exit code.
 */
export async function logsCommand(session: Session, operationId: string): Promise<number> {
  const { io } = session;
  const decoder = new TextDecoder();
  try {
    for await (
      const chunk of session.operations.streamOperationLogs({ operationId }, {
        signal: session.interrupt,
      })
    ) {
      const text = decoder.decode(chunk.data).replace(/\n$/, "");
      io.out(`[${formatTime(chunk.ts)}] ${chunk.stream || "stdout"}: ${text}\n`);
    }
  } catch (error) {
    if (!(session.interrupt.aborted && isServiceError(error) && error.code === Code.Canceled)) {
      throw error;
    }
    io.out("\nStopped streaming.\n");
  }
  return EXIT.OK;
}
