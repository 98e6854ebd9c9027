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

import {
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationEvent_Kind as EventKind,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { Code } from "../client/code.ts";
import { EXIT, isServiceError, type Session } from "./session.ts";

/** How the tour runs commands and waits for the presenter. */
export interface TourOptions {
  /** Runs one CLI command line (as `bmdemo-cli <args>` would) and returns its exit code. */
  run(args: string[], session: Session): Promise<number>;
  /** Waits for the presenter (Enter); absent when stdin is not a terminal. */
  pause?: () => Promise<void>;
}

const RULE = "═".repeat(63);

/**
 * Runs the tour.
 *
 * @param session The session.
 * @param options How to run commands and pause.
 * @returns 0 when every step behaved as the tour expects, else the first unexpected exit code.
 */
export async function tourCommand(session: Session, options: TourOptions): Promise<number> {
  const { io, colors: c } = session;
  const stamp = Date.now().toString(36);
  let failure = 0;

  const section = async (title: string, ...points: string[]): Promise<void> => {
    if (options.pause) {
      io.out(c.dim("\nPress Enter to continue...") + "\n");
      await options.pause();
    }
    io.out(`\n${c.dim(RULE)}\n${c.bold(title)}\n${c.dim(RULE)}\n`);
    for (const point of points) io.out(`  ℹ ${point}\n`);
  };
  const run = async (args: string[], expected: number[] = [EXIT.OK]): Promise<number> => {
    io.out(`\n${c.bold(`$ bmdemo-cli ${args.join(" ")}`)}\n`);
    const code = await options.run(args, session);
    if (!expected.includes(code) && failure === 0) failure = code === 0 ? EXIT.INTERNAL : code;
    return code;
  };

  io.out(`${c.bold("Baremetal Provisioning Demo")}

  MachineService manages the inventory and starts operations; OperationService reads,
  watches and streams the logs of those operations. Plans and steps are internal: clients see
  an operation's type, phase, current_stage, params, error and timestamps.
`);

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
  await run(["import", "3"]);
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
  );
  await run(["reimage", "machine-1", "-v"]);
  await run(["list"]);
  io.out("  ℹ The machine stays in MAINTENANCE after a reimage; now Provisioned and Reachable.\n");

  await section("Step 4: Exit Maintenance", "The machine returns to READY and IDLE.");
  await run(["exit-maintenance", "machine-1"]);
  await run(["list"]);

  const requestId = `tour-idempotent-${stamp}`;
  await section(
    "Step 5: Idempotency",
    "Every operation carries a request_id; a retry with the same one returns the original",
    "operation, even after it finished, instead of doing the work twice.",
  );
  await run(["enter-maintenance", "machine-2"]);
  await run(["reimage", "machine-2", "--request-id", requestId]);
  io.out("  ℹ The same request again: same operation id, already SUCCEEDED, no new work.\n");
  await run(["reimage", "machine-2", "--request-id", requestId]);

  await section("Step 6: A Simple Reboot", "Reboot is allowed in READY or MAINTENANCE.");
  await run(["exit-maintenance", "machine-2"]);
  await run(["reboot", "machine-2"]);

  await section(
    "Step 7: Cancellation",
    "A cancel aborts the running step at once; the phase does not change, and the machine",
    "gets the OperationCanceled condition.",
  );
  await run(["enter-maintenance", "machine-3"]);
  await cancelDemo(session, run, stamp);
  await run(["list"]);

  await section("Step 8: Operation History and Audit Trail", "Every operation, oldest first.");
  await run(["ops"]);

  await section(
    "Demo Complete",
    "Phase gates operations; effective state shows what a machine is doing.",
    "Operations are idempotent, cancellable, and stream their progress and logs.",
    "Plans and steps stay internal, so the workflow engine can change without breaking clients.",
  );
  return failure;
}

/** Starts a reimage of machine-3 and cancels it once its second step runs. */
async function cancelDemo(
  session: Session,
  run: (args: string[], expected?: number[]) => Promise<number>,
  stamp: string,
): Promise<void> {
  const { io } = session;
  const stop = new AbortController();
  try {
    const events = session.operations.watchOperations(
      { filter: "machine_id=machine-3", sendInitialSnapshot: true },
      { signal: stop.signal },
    );
    await nextMatching(events, (e) => e.kind === EventKind.SNAPSHOT_COMPLETE);
    const reimage = run(
      ["reimage", "machine-3", "--request-id", `tour-cancel-${stamp}`],
      // CANCELED, or SUCCEEDED when the server is so fast that it finished first.
      [EXIT.CANCELED, EXIT.OK],
    );
    const running = await nextMatching(
      events,
      (e) => (e.kind === EventKind.STEP_STARTED && e.step === "reboot-to-netboot") || isFinished(e),
    );
    const target = running?.snapshot;
    let canceled = false;
    if (target && !isFinished(running)) {
      try {
        await session.machines.cancelOperation({ operationId: target.operationId });
        canceled = true;
      } catch (error) {
        // The operation may finish between its step event and the cancel: that is accepted.
        if (!(isServiceError(error) && error.code === Code.FailedPrecondition)) {
          await reimage;
          throw error;
        }
      }
    }
    await reimage;
    if (target && canceled) {
      io.out(
        `\n  ℹ Canceled from another terminal with: bmdemo-cli cancel ${target.operationId}\n`,
      );
    } else {
      io.out("\n  ℹ The operation completed before we could cancel it - that's OK!\n");
    }
  } finally {
    stop.abort();
  }
}

function isFinished(event: OperationEvent | undefined): boolean {
  const phase = event?.snapshot?.phase;
  return phase === OperationPhase.SUCCEEDED || phase === OperationPhase.FAILED ||
    phase === OperationPhase.CANCELED;
}

async function nextMatching(
  events: AsyncIterator<OperationEvent>,
  predicate: (event: OperationEvent) => boolean,
): Promise<OperationEvent | undefined> {
  for (;;) {
    const { value, done } = await events.next();
    if (done) return undefined;
    if (predicate(value)) return value;
  }
}
