/**
 * The operation commands (`reboot`, `reimage`, `enter-maintenance`, `exit-maintenance`) with
 * live progress driven by WatchOperations, and `cancel`, `ops`, `watch`, `logs`.
 *
 * Progress: the watch (filter `machine_id=<id>`, initial snapshot) is opened and confirmed
 * before the operation RPC is sent, so no step event is missed; a slow GetOperation poll is
 * only a safety net for a watch that ends or lags.
 *
 * @module
 */

import type { Operation, OperationEvent } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { formatOperationTable, formatTime, shortId } from "./format.ts";
import {
  deadlineIn,
  EXIT,
  GRPC_CANCELLED,
  isServiceError,
  type Session,
} from "./session.ts";

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
}

/**
 * Whether an operation phase is terminal.
 *
 * @param phase The phase.
 * @returns `true` for SUCCEEDED, FAILED and CANCELED.
 */
export function isTerminal(phase: OperationPhase): boolean {
  return phase === OperationPhase.SUCCEEDED || phase === OperationPhase.FAILED ||
    phase === OperationPhase.CANCELED;
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

/** Buffers a server stream so the call starts now and events are read later. */
export class StreamPump<T> {
  readonly #items: T[] = [];
  #waiter: (() => void) | undefined;
  #done = false;
  #error: unknown;
  /** Resolves once the stream ended or failed. */
  readonly finished: Promise<void>;

  /**
   * Starts iterating `source` immediately.
   *
   * @param source The stream.
   */
  constructor(source: AsyncIterable<T>) {
    const iterator = source[Symbol.asyncIterator]();
    this.finished = (async () => {
      try {
        while (true) {
          const next = await iterator.next();
          if (next.done) break;
          this.#items.push(next.value);
          this.#wake();
        }
      } catch (error) {
        this.#error = error;
      } finally {
        this.#done = true;
        this.#wake();
      }
    })();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  /**
   * The next item, `undefined` at the end, or `"timeout"` after `ms`.
   *
   * @param ms How long to wait.
   * @returns The item, `undefined` when the stream is over, or `"timeout"`.
   * @throws The stream's error once buffered items are consumed.
   */
  async next(ms: number): Promise<T | undefined | "timeout"> {
    if (this.#items.length === 0 && !this.#done) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, ms);
      });
      clearTimeout(timer);
      this.#waiter = undefined;
    }
    if (this.#items.length > 0) return this.#items.shift();
    if (this.#done) {
      if (this.#error !== undefined) throw this.#error;
      return undefined;
    }
    return "timeout";
  }
}

/** What {@linkcode followOperation} reports while an operation runs. */
export interface FollowHandlers {
  stepStarted(name: string): void;
  stepSucceeded(name: string): void;
  stepFailed(name: string, message: string): void;
  /** The operation was canceled while a step ran. */
  stepCanceled?(name: string): void;
}

const STEP_EVENT = /^Step (\S+) (started|succeeded|failed)(?:: (.*))?$/s;

/**
 * Reads events of one operation until it is terminal.
 *
 * @param session The session (its interrupt stops the wait).
 * @param pump The machine's event stream, opened before the operation was started.
 * @param start The operation as the start RPC returned it.
 * @param handlers Step callbacks.
 * @param timeoutMs Give up (returns the last seen state) after this long.
 * @returns The terminal operation, `"interrupted"`, or `"timeout"`.
 */
export async function followOperation(
  session: Session,
  pump: StreamPump<OperationEvent>,
  start: Operation,
  handlers: FollowHandlers,
  timeoutMs = Infinity,
): Promise<Operation | "interrupted" | "timeout"> {
  const id = start.operationId;
  const begun = Date.now();
  let openStep = "";
  let lastPoll = Date.now();
  let polledTerminal: Operation | undefined;
  const interrupted = new Promise<"interrupted">((resolve) => {
    if (session.interrupt.aborted) resolve("interrupted");
    session.interrupt.addEventListener("abort", () => resolve("interrupted"), { once: true });
  });
  while (true) {
    if (Date.now() - begun > timeoutMs) return "timeout";
    const next = await Promise.race([pump.next(250), interrupted]);
    if (next === "interrupted") return next;
    if (next === undefined || next === "timeout") {
      // Safety net: the watch ended or is quiet; a terminal phase seen on two polls a second
      // apart is final even if its event never arrives.
      if (next === undefined || Date.now() - lastPoll >= 1000) {
        lastPoll = Date.now();
        const op = await session.operations.getOperation({ operationId: id }, {
          deadline: deadlineIn(10_000),
        });
        if (isTerminal(op.phase)) {
          if (polledTerminal || next === undefined) return op;
          polledTerminal = op;
        }
        if (next === undefined) await new Promise((resolve) => setTimeout(resolve, 500));
      }
      continue;
    }
    const op = next.snapshot;
    if (!op || op.operationId !== id) continue;
    const step = STEP_EVENT.exec(next.message);
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
    } else if (next.message === "Snapshot" && op.currentStage !== "" && !isTerminal(op.phase)) {
      // Joined while a step runs (the start RPC replayed an operation in flight).
      openStep = op.currentStage;
      handlers.stepStarted(op.currentStage);
    }
    if (isTerminal(op.phase)) {
      if (openStep !== "" && op.phase === OperationPhase.CANCELED) handlers.stepCanceled?.(openStep);
      return op;
    }
  }
}

/**
 * Opens the watch of a machine's operations and waits until the server serves it: a
 * ListOperations on the same channel, sent after the watch, is answered after the watch's
 * handler subscribed.
 *
 * @param session The session.
 * @param machineId The machine.
 * @param signal Ends the watch.
 * @returns The pump of events.
 */
export async function openMachineWatch(
  session: Session,
  machineId: string,
  signal: AbortSignal,
): Promise<StreamPump<OperationEvent>> {
  const filter = `machine_id=${machineId}`;
  const pump = new StreamPump(
    session.operations.watchOperations({ filter, sendInitialSnapshot: true }, { signal }),
  );
  await session.operations.listOperations({ filter, pageSize: 1 }, {
    deadline: deadlineIn(10_000),
  });
  return pump;
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
  const call = { deadline: deadlineIn(10_000) };
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
  const { io, colors: c } = session;
  const stop = new AbortController();
  try {
    const pump = await openMachineWatch(session, options.machineId, stop.signal);
    const op = await startOperation(session, command, options);
    io.out(`Operation: ${op.operationId}\n`);
    io.out(`Request ID: ${options.requestId}\n`);
    if (isTerminal(op.phase)) {
      io.out(resultLine(session, op));
      return exitCodeOf(op);
    }
    if (op.type === OperationType.ENTER_MAINTENANCE) io.out("→ entering maintenance...\n");
    if (op.type === OperationType.EXIT_MAINTENANCE) io.out("→ exiting maintenance...\n");

    // A step line stays open (`→ name...`) until its mark; a log line breaks it.
    let open = "";
    let broken = false;
    const close = (mark: string, name: string): void => {
      if (open === name && !broken) io.out(` ${mark}\n`);
      else io.out(`  ${mark} ${name}\n`);
      open = "";
      broken = false;
    };
    const logsDone = options.logs ? streamLogsUnderSteps() : Promise.resolve();
    function streamLogsUnderSteps(): Promise<void> {
      const decoder = new TextDecoder();
      const logs = session.operations.streamOperationLogs({ operationId: op.operationId }, {
        signal: stop.signal,
      });
      return (async () => {
        try {
          for await (const chunk of logs) {
            const text = decoder.decode(chunk.data).replace(/\n$/, "");
            if (text.trim() === "") continue;
            if (open !== "" && !broken) {
              io.out("\n");
              broken = true;
            }
            const bar = chunk.stream === "stderr" ? "│!" : "│";
            for (const line of text.split("\n")) io.out(c.dim(`  ${bar} ${line}`) + "\n");
          }
        } catch (error) {
          if (!isServiceError(error) || error.code !== GRPC_CANCELLED) throw error;
        }
      })();
    }

    const result = await followOperation(session, pump, op, {
      stepStarted(name) {
        if (open !== "") io.out(broken ? "" : "\n");
        open = name;
        broken = false;
        io.out(`→ ${name}...`);
      },
      stepSucceeded: (name) => close(c.green("✓"), name),
      stepFailed(name, message) {
        close(c.red("✗"), name);
        io.out(`    ${message}\n`);
      },
      stepCanceled: (name) => close(c.yellow("○"), name),
    });
    if (open !== "" && !broken) io.out("\n");
    if (result === "interrupted" || result === "timeout") {
      io.err(interruptedText(session, op.operationId));
      return EXIT.INTERRUPTED;
    }
    // Logs end at the terminal phase; give them a moment to flush.
    await Promise.race([logsDone, new Promise((resolve) => setTimeout(resolve, 200))]);
    io.out(resultLine(session, result));
    return exitCodeOf(result);
  } finally {
    stop.abort();
  }
}

function interruptedText(session: Session, operationId: string): string {
  const server = session.address === "localhost:50051" ? "" : ` --server ${session.address}`;
  return `\n⚠ Interrupted: operation ${operationId} continues on the server.\n` +
    `  follow it:  bmdemo${server} logs ${operationId}\n` +
    `  cancel it:  bmdemo${server} cancel ${operationId}\n`;
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
    deadline: deadlineIn(10_000),
  });
  session.io.out(`✓ Canceled operation ${op.operationId} (phase: ${OperationPhase[op.phase]})\n`);
  return EXIT.OK;
}

/**
 * `ops`: every operation, oldest first.
 *
 * @param session The session.
 * @returns The exit code.
 */
export async function opsCommand(session: Session): Promise<number> {
  const deadline = deadlineIn(10_000);
  const ops: Operation[] = [];
  let pageToken = "";
  do {
    const page = await session.operations.listOperations({ pageToken }, { deadline });
    ops.push(...page.operations);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  session.io.out(ops.length === 0 ? "No operations.\n" : formatOperationTable(ops));
  return EXIT.OK;
}

/**
 * `watch [machine-id]`: prints events until Ctrl+C or the server ends the stream.
 *
 * @param session The session.
 * @param machineId Only this machine's operations, when given.
 * @returns The exit code.
 */
export async function watchCommand(session: Session, machineId?: string): Promise<number> {
  const { io } = session;
  const filter = machineId ? `machine_id=${machineId}` : "";
  io.out("Watching operation events (Ctrl+C to stop)...\n\n");
  try {
    for await (
      const event of session.operations.watchOperations(
        { filter, sendInitialSnapshot: true },
        { signal: session.interrupt },
      )
    ) {
      const op = event.snapshot;
      io.out(
        `[${formatTime(event.ts)}] ${shortId(op?.operationId ?? "")} | ${op?.machineId ?? "-"} | ` +
          `${OperationPhase[op?.phase ?? 0]} | stage=${op?.currentStage || "-"} | ${event.message}\n`,
      );
    }
  } catch (error) {
    if (!(session.interrupt.aborted && isServiceError(error) && error.code === GRPC_CANCELLED)) {
      throw error;
    }
    io.out("\nStopped watching.\n");
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
    if (!(session.interrupt.aborted && isServiceError(error) && error.code === GRPC_CANCELLED)) {
      throw error;
    }
    io.out("\nStopped streaming.\n");
  }
  return EXIT.OK;
}
