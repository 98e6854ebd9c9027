/**
 * Following an operation's progress: the machine's watch opened and confirmed before the
 * operation starts ({@linkcode openMachineWatch}), the step events read from their structured
 * fields ({@linkcode followOperation}), the `--logs` alternative driven by the log stream
 * ({@linkcode followLogs}), and the step lines they print ({@linkcode StepPrinter}).
 *
 * A slow GetOperation read is only a safety net for a watch that ends or lags.
 *
 * @module
 */

import type { Operation, OperationEvent } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  Operation_Phase as OperationPhase,
  OperationEvent_Kind as EventKind,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";
import { OutcomeUnknownError } from "./failure.ts";
import type { Session } from "./session.ts";
import { Spinner, type Ticker } from "./spinner.ts";
import { widthAtMost } from "./width.ts";

/** What {@linkcode followOperation} reports while an operation runs. */
export interface FollowHandlers {
  stepStarted(name: string): void;
  stepSucceeded(name: string): void;
  stepFailed(name: string, message: string): void;
  /** The operation was canceled while a step ran. */
  stepCanceled?(name: string): void;
  /** Ends an open progress line, so that an error is printed on a line of its own. */
  end?(): void;
}

/** A machine's event stream, opened and confirmed by {@linkcode openMachineWatch}. */
export type MachineWatch = AsyncIterator<OperationEvent>;

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
    if (value.kind === EventKind.SNAPSHOT_COMPLETE) return events;
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
      // The stream failed (e.g. RESOURCE_EXHAUSTED, the server stopping): fall back to one
      // read of the operation; when that fails too, its outcome cannot be learnt.
      handlers.end?.();
      let op: Operation;
      try {
        op = await session.operations.getOperation({ operationId: id }, { timeoutMs: 10_000 });
      } catch {
        throw new OutcomeUnknownError(id, error);
      }
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
    switch (event.kind) {
      case EventKind.STEP_STARTED:
        openStep = event.step;
        handlers.stepStarted(event.step);
        break;
      case EventKind.STEP_SUCCEEDED:
        openStep = "";
        handlers.stepSucceeded(event.step);
        break;
      case EventKind.STEP_FAILED:
        openStep = "";
        handlers.stepFailed(event.step, event.detail);
        break;
    }
    if (isTerminalPhase(op.phase)) {
      if (openStep !== "" && op.phase === OperationPhase.CANCELED) {
        handlers.stepCanceled?.(openStep);
      }
      return op;
    }
  }
}

/** Options of {@linkcode StepPrinter}. */
export interface StepPrinterOptions {
  /** The clock and timer of the spinner (tests step it by hand). @default REAL_TICKER */
  ticker?: Ticker;
}

/**
 * Prints step progress: `→ name... ✓` on one line, or, when log lines come between, the
 * `→ name...` line, the log lines (`  │ ...`), then `  ✓ name`.
 *
 * On a terminal (`session.live`) a running step also shows a spinner and its elapsed time:
 * after `→ name...` (`→ name... ⠙ 3.2s`), or, once log lines came, on a status line under
 * them (`  ⠙ 3.2s name`) that each log line moves down; the mark then says how long the step
 * took (`→ name... ✓ 8.1s`). Elsewhere it prints exactly the lines above.
 */
export class StepPrinter implements FollowHandlers, Disposable {
  readonly #session: Session;
  readonly #spinner: Spinner | undefined;
  #open = "";
  #broken = false;
  /** Cells of the spinner text drawn last on the current line (0: none). */
  #drawn = 0;

  /**
   * @param session Where to print, its colours, and whether to draw a spinner.
   * @param options The spinner's clock.
   */
  constructor(session: Session, options: StepPrinterOptions = {}) {
    this.#session = session;
    this.#spinner = session.live ? new Spinner(options.ticker) : undefined;
  }

  /** Opens the line of step `name`. */
  stepStarted(name: string): void {
    this.end();
    this.#open = name;
    this.#session.io.out(this.#prefix());
    this.#spinner?.start((tail) => this.#draw(tail));
  }

  /** Marks step `name` ✓. */
  stepSucceeded(name: string): void {
    this.#close(this.#session.colors.green("✓"), name);
  }

  /** Marks step `name` ✗ and prints why under it. */
  stepFailed(name: string, message: string): void {
    this.#close(this.#session.colors.red("✗"), name);
    this.#session.io.out(`    ${message}\n`);
  }

  /** Marks step `name` ○ (canceled while it ran). */
  stepCanceled(name: string): void {
    this.#close(this.#session.colors.yellow("○"), name);
  }

  /** Prints a log line under the open step. */
  log(line: string, stream: string): void {
    const { io, colors } = this.#session;
    if (this.#open !== "" && !this.#broken) {
      io.out(this.#erase() + "\n");
      this.#broken = true;
    } else {
      io.out(this.#erase());
    }
    const bar = stream === "stderr" ? "│!" : "│";
    io.out(colors.dim(`  ${bar} ${line}`) + "\n");
    if (this.#open !== "" && this.#spinner) this.#draw(this.#spinner.tail());
  }

  /** Ends an open step line that got no mark. */
  end(): void {
    this.#spinner?.stop();
    const erase = this.#erase();
    if (this.#open !== "" && !this.#broken) this.#session.io.out(erase + "\n");
    else if (erase !== "") this.#session.io.out(erase);
    this.#open = "";
    this.#broken = false;
  }

  /** Ends an open step line and stops the spinner. */
  [Symbol.dispose](): void {
    this.end();
  }

  /** The step whose line is open, if any. */
  get open(): string {
    return this.#open;
  }

  #prefix(): string {
    return `→ ${this.#open}...`;
  }

  /** Draws the spinner's tail: after the step's line, or on the status line under its logs. */
  #draw(tail: string): void {
    const { io, colors, width } = this.#session;
    const line = this.#broken ? `  ${tail} ${this.#open}` : `${this.#prefix()} ${tail}`;
    const cells = widthAtMost(line);
    // A line the terminal would wrap could not be redrawn in place.
    if (cells > (width?.() ?? Infinity)) return;
    const head = this.#broken ? "" : this.#prefix();
    const drawn = colors.dim(line.slice(head.length));
    io.out(`\r${head}${drawn}${" ".repeat(Math.max(0, this.#drawn - cells))}`);
    this.#drawn = cells;
  }

  /** What removes the drawn spinner, leaving the cursor where the line's own text ends. */
  #erase(): string {
    if (this.#drawn === 0) return "";
    const head = this.#broken ? "" : this.#prefix();
    const text = `\r${" ".repeat(this.#drawn)}\r${head}`;
    this.#drawn = 0;
    return text;
  }

  #close(mark: string, name: string): void {
    this.#spinner?.stop();
    const time = this.#spinner ? " " + this.#session.colors.dim(this.#spinner.elapsed()) : "";
    const erase = this.#erase();
    if (this.#open === name && !this.#broken) this.#session.io.out(`${erase} ${mark}${time}\n`);
    else this.#session.io.out(`${erase}  ${mark} ${name}${time}\n`);
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
 *
 * @param session The session (its interrupt stops following).
 * @param op The operation as the start RPC returned it.
 * @param steps Where steps and log lines are printed.
 * @param signal Ends the log stream.
 * @returns The terminal operation, or `"interrupted"` (Ctrl+C).
 */
export async function followLogs(
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
