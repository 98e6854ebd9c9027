/**
 * The operation commands (`reboot`, `reimage`, `enter-maintenance`, `exit-maintenance`) with
 * live progress, and `wait` and `cancel`: start an operation, follow it (`follow.ts`) and exit
 * with its outcome. The read-only commands (`ops`, `op`, `watch`, `logs`) are in
 * `operation_queries.ts`.
 *
 * Progress: the watch (filter `machine_id=<id>`, initial snapshot) is opened and confirmed
 * before the operation RPC is sent, so no step event is missed.
 *
 * @module
 */

import type { Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";
import {
  followLogs,
  followOperation,
  type MachineWatch,
  openMachineWatch,
  StepPrinter,
} from "./follow.ts";
import { formatDuration } from "./output.ts";
import { EXIT, type Session } from "./session.ts";

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

/** The program and, unless it is the default, the server: the start of a pasteable command. */
function serverFlag(session: Session): string {
  const program = session.program ?? "bmdemo-cli";
  return session.address === "localhost:50051" ? program : `${program} --server ${session.address}`;
}

function timedOutText(session: Session, operationId: string, ms: number): string {
  const server = serverFlag(session);
  return `\n⚠ Timed out after ${formatDuration(ms)}: operation ${operationId} continues on the ` +
    `server.\n` + pickUpText(server, operationId);
}

/** The exact commands that pick a detached operation up again: re-attach, logs, cancel. */
function pickUpText(server: string, operationId: string): string {
  return `  wait for it: ${server} wait ${operationId}\n` +
    `  follow it:   ${server} logs ${operationId}\n` +
    `  cancel it:   ${server} cancel ${operationId}\n`;
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
    using steps = new StepPrinter(session);
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
    using steps = new StepPrinter(session);
    const result = await followOperation(timer.session, events, op, steps);
    steps.end();
    return reportOutcome(session, operationId, result, { timedOut: timer.timedOut, timeoutMs });
  } finally {
    timer.clear();
    stop.abort();
  }
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
    pickUpText(server, operationId);
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
