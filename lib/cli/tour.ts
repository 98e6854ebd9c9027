/**
 * `tour`: the guided presenter tour of reference 8.9 (the original `run-bmdemo.sh`), as a CLI
 * command, so a presenter with only the compiled binary can give it. It runs real CLI commands
 * against the server, each shown as `$ bmdemo-cli ...` under a section header with short
 * talking points, and pauses for Enter between sections only when it is given a way to (stdin
 * is a terminal).
 *
 * It works on a server that already has machines: `import 3` is idempotent, every operation
 * uses a fresh request id, and the machines are moved into the phase each step needs.
 *
 * @module
 */

import type { Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";
import { EXIT, type Session } from "./session.ts";
import { cancelDemo, faultDemo, importUnlessReal, narrate } from "./tour_scenes.ts";

/** How the tour runs commands and waits for the presenter. */
export interface TourOptions {
  /** Runs one CLI command line (as `bmdemo-cli <args>` would) and returns its exit code. */
  run(args: string[], session: Session): Promise<number>;
  /** Waits for the presenter (Enter); absent when stdin is not a terminal. */
  pause?: () => Promise<void>;
  /** The live dashboard's URL (`deno task demo` serves one), for the narration to point at. */
  dashboard?: string;
}

/** A section's rule: the width of the output, at most {@linkcode RULE_MAX} cells. */
function rule(session: Session): string {
  const width = session.width?.() ?? RULE_MAX;
  return "═".repeat(Math.min(width, RULE_MAX));
}

/** The longest rule: a wide terminal gets this, not a line across the whole screen. */
const RULE_MAX = 80;

/** Ends the tour early with an exit code: Ctrl+C, or a command that did not do what it shows. */
class TourStopped extends Error {
  readonly code: number;

  constructor(code: number) {
    super(`the tour stopped with exit code ${code}`);
    this.code = code;
  }
}

/** How long the tour's cleanup may take per call on Ctrl+C (the server may be the problem). */
const CLEANUP_TIMEOUT_MS = 2000;

/**
 * Runs the tour. It stops at the first command that does not behave as the narration says
 * (everything after it would be false), and at once on Ctrl+C, canceling the operations it
 * started that are still running.
 *
 * @param session The session.
 * @param options How to run commands and pause.
 * @returns 0 when every step behaved as the tour expects, 130 on Ctrl+C, else the exit code of
 *   the first command that did not.
 */
export async function tourCommand(session: Session, options: TourOptions): Promise<number> {
  const { io } = session;
  // Unreachable server, bad token...: one error from main, before any narration.
  await session.machines.listMachines({ pageSize: 1 }, { timeoutMs: 10_000 });
  const cleanup = stopOnInterrupt(session);
  try {
    await tourSections(cleanup.session, options, session.interrupt);
    return EXIT.OK;
  } catch (error) {
    if (!(error instanceof TourStopped) && !session.interrupt.aborted) throw error;
    if (session.interrupt.aborted) {
      const canceled = await cleanup.done;
      io.err(
        `\n⚠ Interrupted: the tour stopped` +
          (canceled > 0 ? ` and canceled the operation it had started.\n` : `.\n`),
      );
      return EXIT.INTERRUPTED;
    }
    const { code } = error as TourStopped;
    io.err(
      `\n✗ The tour stopped: that command did not do what the tour shows (exit code ${code}), ` +
        `and the steps after it depend on it.\n`,
    );
    return code;
  } finally {
    cleanup.dispose();
  }
}

/**
 * The session the tour's commands run with: it records every operation they start, and on
 * Ctrl+C cancels those still running before it interrupts the command, so the command reports
 * the operation CANCELED (not "continues on the server") and nothing the tour started is left
 * running. `done` resolves to how many operations it canceled.
 */
function stopOnInterrupt(
  session: Session,
): { session: Session; done: Promise<number>; dispose(): void } {
  const started = new Map<string, Operation>();
  const starting = new Set<Promise<unknown>>();
  const interrupt = new AbortController();
  const cancel = async (op: Operation): Promise<number> => {
    if (isTerminalPhase(op.phase)) return 0;
    try {
      await session.machines.cancelOperation(
        { operationId: op.operationId },
        { timeoutMs: CLEANUP_TIMEOUT_MS },
      );
      return 1;
    } catch {
      return 0; // Already finished, or the server is gone (and its operations with it).
    }
  };
  let resolveDone: (canceled: number) => void = () => {};
  const done = new Promise<number>((resolve) => resolveDone = resolve);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const onInterrupt = async (): Promise<void> => {
    await Promise.allSettled(starting);
    const counts = await Promise.all([...started.values()].map(cancel));
    const canceled = counts.reduce((a, b) => a + b, 0);
    // A command following a canceled operation ends by itself, reporting it CANCELED; it is only
    // interrupted if that does not come in time. Any other command is interrupted at once.
    if (canceled === 0) interrupt.abort();
    else timer = setTimeout(() => interrupt.abort(), CLEANUP_TIMEOUT_MS);
    resolveDone(canceled);
  };
  session.interrupt.addEventListener("abort", onInterrupt, { once: true });
  const starts = new Set([
    "rebootMachine",
    "reimageMachine",
    "enterMaintenance",
    "exitMaintenance",
  ]);
  const machines = new Proxy(session.machines, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof key !== "string" || !starts.has(key) || typeof value !== "function") return value;
      return async (...args: unknown[]): Promise<Operation> => {
        // Ctrl+C may come before the start call answers: the cleanup waits for it.
        const start: Promise<Operation> = value.apply(target, args);
        starting.add(start);
        try {
          const op = await start;
          started.set(op.operationId, op);
          return op;
        } finally {
          starting.delete(start);
        }
      };
    },
  });
  return {
    session: { ...session, machines, interrupt: interrupt.signal },
    done,
    dispose: () => {
      clearTimeout(timer);
      session.interrupt.removeEventListener("abort", onInterrupt);
    },
  };
}

async function tourSections(
  session: Session,
  options: TourOptions,
  interrupt: AbortSignal,
): Promise<void> {
  const { io, colors: c } = session;
  const stamp = Date.now().toString(36);
  const interrupted = new Promise<void>((resolve) => {
    if (interrupt.aborted) resolve();
    interrupt.addEventListener("abort", () => resolve(), { once: true });
  });
  const checkInterrupt = (): void => {
    if (interrupt.aborted) throw new TourStopped(EXIT.INTERRUPTED);
  };

  const section = async (title: string, ...points: string[]): Promise<void> => {
    checkInterrupt();
    if (options.pause) {
      io.out(c.dim("\nPress Enter to continue...") + "\n");
      await Promise.race([options.pause(), interrupted]);
      checkInterrupt();
    }
    narrate(session, `\n${c.dim(rule(session))}\n${c.bold(title)}\n${c.dim(rule(session))}\n`);
    for (const point of points) narrate(session, `  ℹ ${point}\n`);
  };
  const run = async (args: string[], expected: number[] = [EXIT.OK]): Promise<number> => {
    checkInterrupt();
    io.out(`\n${c.bold(`$ bmdemo-cli ${args.join(" ")}`)}\n`);
    const code = await options.run(args, session);
    checkInterrupt();
    if (!expected.includes(code)) throw new TourStopped(code === 0 ? EXIT.INTERNAL : code);
    return code;
  };

  narrate(
    session,
    `${c.bold("Baremetal Provisioning Demo")}

  MachineService manages the inventory and starts operations; OperationService reads, \
watches and streams the logs of those operations. Plans and steps are internal: clients see \
an operation's type, phase, current_stage, params, error and timestamps.
`,
  );
  if (options.dashboard) {
    narrate(
      session,
      `  ℹ Live dashboard: ${options.dashboard} (every step below shows up there as it runs)\n`,
    );
  }

  await section(
    "Phase vs Effective State",
    "PHASE is the operator's intent and gates operations: FACTORY, READY, MAINT.",
    "EFFECTIVE is what the machine is doing now, computed by the server, first match wins:",
    "  1. BLOCKED    RMA or Retired",
    "  2. ATTENTION  NeedsIntervention (the last operation failed)",
    "  3. BUSY       an operation is PENDING or RUNNING",
    "  4. MAINT      phase MAINTENANCE",
    "  5. NEW        phase FACTORY_READY",
    "  6. IDLE       otherwise",
  );

  await section(
    "Step 1: Import Machines into Inventory",
    "New machines start in FACTORY_READY; re-running an import only refreshes spec and labels.",
  );
  await importUnlessReal(session, run, 3);
  await run(["list"]);

  await section(
    "Step 2: Enter Maintenance Mode",
    "Only EnterMaintenance and ExitMaintenance change the phase.",
  );
  await run(["enter-maintenance", "machine-1"]);
  await run(["list"]);

  await section(
    "Step 3: Reimage (Full Provisioning Flow), with Live Logs",
    "Reimage requires MAINTENANCE: a safety gate against accidental repaves.",
    "Five internal steps; -v streams the provider's log under each step.",
    ...(options.dashboard
      ? ["On the dashboard: machine-1's tile turns BUSY with its step (3/5)."]
      : []),
  );
  await run(["reimage", "machine-1", "-v"]);
  await run(["list"]);
  narrate(
    session,
    "  ℹ The machine stays in MAINTENANCE after a reimage; now Provisioned and Reachable.\n",
  );

  await section("Step 4: Exit Maintenance", "The machine returns to READY and IDLE.");
  await run(["exit-maintenance", "machine-1"]);
  await run(["list"]);

  const requestId = `tour-idempotent-${stamp}`;
  await section(
    "Step 5: Idempotency",
    "Every operation carries a request_id; a retry with the same one returns the original " +
      "operation, even after it finished, instead of doing the work twice.",
  );
  await run(["enter-maintenance", "machine-2"]);
  await run(["reimage", "machine-2", "--request-id", requestId]);
  narrate(
    session,
    "  ℹ The same request again: same operation id, already SUCCEEDED, no new work.\n",
  );
  await run(["reimage", "machine-2", "--request-id", requestId]);

  await section("Step 6: A Simple Reboot", "Reboot is allowed in READY or MAINTENANCE.");
  await run(["exit-maintenance", "machine-2"]);
  await run(["reboot", "machine-2"]);

  await section(
    "Step 7: Cancellation",
    "A cancel aborts the running step at once; the phase does not change, and the machine " +
      "gets the OperationCanceled condition.",
  );
  await run(["enter-maintenance", "machine-3"]);
  await cancelDemo(session, run, stamp);
  await run(["list"]);

  await faultDemo(session, run, section);

  await section("Step 9: Operation History and Audit Trail", "Every operation, oldest first.");
  await run(["ops"]);

  await section(
    "Demo Complete",
    "Phase gates operations; effective state shows what a machine is doing.",
    "Operations are idempotent, cancellable, and stream their progress and logs.",
    "Plans and steps stay internal, so the workflow engine can change without breaking clients.",
  );
}
