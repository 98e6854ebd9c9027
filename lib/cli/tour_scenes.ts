/**
 * The tour's scenes that drive the server beyond running commands: the cancellation (watching
 * for the step to cancel at) and "When Hardware Fails" (a fault injected by `--fault` on a
 * simulated server, or by the lab on a real BMC), and the tour's care for machines driven by
 * real BMC drivers (`deno task lab`), which an import would turn back into simulated ones.
 *
 * @module
 */

import {
  type OperationEvent,
  OperationEvent_Kind as EventKind,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { Code } from "../client/code.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";
import { shortId } from "./format.ts";
import { wrapText } from "./layout.ts";
import { EXIT, isServiceError, type Session } from "./session.ts";

/** Runs a CLI command of the tour; a code outside `expected` stops the tour. */
type RunCommand = (args: string[], expected?: number[]) => Promise<number>;

/**
 * Prints the tour's own text laid out for the width, in a pipe too (where the io leaves lines
 * whole): each paragraph is one line in the source, continued under its text.
 *
 * @param session The CLI session the tour runs in.
 * @param text The text, one paragraph per line.
 */
export function narrate(session: Session, text: string): void {
  session.io.out(wrapText(text, session.width?.() ?? Infinity));
}

/** Starts a reimage of machine-3 and cancels it once its second step runs. */
export async function cancelDemo(
  session: Session,
  run: RunCommand,
  stamp: string,
): Promise<void> {
  const stop = new AbortController();
  try {
    const events = session.operations.watchOperations(
      { filter: "machine_id=machine-3", sendInitialSnapshot: true },
      { signal: AbortSignal.any([stop.signal, session.interrupt]) },
    );
    await nextMatching(events, (e) => e.kind === EventKind.SNAPSHOT_COMPLETE);
    const reimage = run(
      ["reimage", "machine-3", "--request-id", `tour-cancel-${stamp}`],
      // CANCELED, or SUCCEEDED when the server is so fast that it finished first.
      [EXIT.CANCELED, EXIT.OK],
    );
    // Awaited below, after the events; until then a stop (Ctrl+C) must not be unhandled.
    reimage.catch(() => {});
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
      narrate(
        session,
        `\n  ℹ The tour canceled it through the API while it ran; from another terminal:\n` +
          // The short id (a unique prefix) keeps the command on one line of a narrow terminal.
          `    bmdemo-cli cancel ${shortId(target.operationId)}\n`,
      );
    } else {
      narrate(session, "\n  ℹ The operation completed before we could cancel it - that's OK!\n");
    }
  } finally {
    stop.abort();
  }
}

/** The machine `deno task demo` starts its server with a fault on (see {@link FAULT_DEMO}). */
const FAULT_MACHINE = "machine-4";

/**
 * The fault `deno task demo --lab` injects into the lab, where `--fault` cannot apply (it affects
 * simulated machines only): machine-4's BMC (an `ipmi_sim`) refuses its next 2 power changes, so
 * both attempts of reboot-to-netboot fail with the driver's error on the first reimage, and the
 * second reimage succeeds.
 */
export const LAB_FAULT_DEMO: { readonly machineId: string; readonly powerChanges: number } = {
  machineId: FAULT_MACHINE,
  powerChanges: 2,
};

/**
 * The `--fault` value `deno task demo` gives its own server: both attempts of repave-image (one
 * retry) fail on machine-4 only, so its first reimage FAILS and the second succeeds.
 */
export const FAULT_DEMO = `repave-image:2@${FAULT_MACHINE}`;

/**
 * Shows a step failing, its retry, the machine in ATTENTION and the recovery by a second
 * reimage, on a server started with `--fault` {@link FAULT_DEMO}, or on a lab whose machine-4 BMC
 * has the fault {@link LAB_FAULT_DEMO}; elsewhere the first reimage succeeds, and the tour says
 * so instead of narrating a failure that did not happen.
 */
export async function faultDemo(
  session: Session,
  run: RunCommand,
  section: (title: string, ...points: string[]) => Promise<void>,
): Promise<void> {
  const driver = (await realMachines(session, 4)).get(FAULT_MACHINE);
  const powerChanges = LAB_FAULT_DEMO.powerChanges;
  await section(
    "Step 8: When Hardware Fails",
    ...driver === undefined
      ? [
        `A server started with --fault ${FAULT_DEMO} (deno task demo's is) fails writing the ` +
        `image on ${FAULT_MACHINE}; every other machine works.`,
        "A failed step is retried (repave-image: 2 attempts); when every attempt fails, the " +
        "operation FAILS and the machine gets NeedsIntervention: effective state ATTENTION.",
      ]
      : [
        `${FAULT_MACHINE} is driven by the real ${driver} driver (--fault affects simulated ` +
        `machines only). deno task demo --lab makes its BMC refuse the next ${powerChanges} ` +
        "power changes, as a broken BMC does: the driver's error is what you see.",
        "A failed step is retried (reboot-to-netboot: 2 attempts); when every attempt fails, " +
        "the operation FAILS and the machine gets NeedsIntervention: effective state ATTENTION.",
      ],
  );
  await importUnlessReal(session, run, 4);
  await run(["enter-maintenance", FAULT_MACHINE]);
  const code = await run(["reimage", FAULT_MACHINE, "-v"], [EXIT.FAILED, EXIT.OK]);
  if (code === EXIT.OK) {
    narrate(
      session,
      driver === undefined
        ? `  ℹ This server has no fault on ${FAULT_MACHINE}, so the reimage succeeded; to see the ` +
          `failure, start it with: bmdemo-server --fault ${FAULT_DEMO}\n`
        : `  ℹ ${FAULT_MACHINE}'s BMC has no fault, so the reimage succeeded; deno task demo ` +
          `--lab injects one (its BMC refuses ${powerChanges} power changes)\n`,
    );
    return;
  }
  await run(["list"]);
  narrate(
    session,
    `  ℹ ${FAULT_MACHINE} is in ATTENTION. The operator fixes the hardware and reimages again; ` +
      "a success clears NeedsIntervention (the fault here is spent after " +
      (driver === undefined ? "2 attempts" : `${powerChanges} refused power changes`) + ").\n",
  );
  await run(["reimage", FAULT_MACHINE]);
  await run(["list"]);
}

/**
 * Which of machine-1..count are driven by real BMC drivers (the ones `deno task lab` registers),
 * by machine id, with their driver.
 */
async function realMachines(session: Session, count: number): Promise<Map<string, string>> {
  const real = new Map<string, string>();
  for (let n = 1; n <= count; n++) {
    try {
      const machine = await session.machines.getMachine({ machineId: `machine-${n}` });
      const provider = machine.spec?.provider ?? "";
      if (provider === "redfish" || provider === "ipmi") real.set(machine.machineId, provider);
    } catch (error) {
      if (!(isServiceError(error) && error.code === Code.NotFound)) throw error;
    }
  }
  return real;
}

/**
 * `import <count>`, unless machine-1..count include machines driven by real BMC drivers (the
 * ones `deno task lab` registers): an import would turn them back into simulated machines.
 */
export async function importUnlessReal(
  session: Session,
  run: RunCommand,
  count: number,
): Promise<void> {
  const real = await realMachines(session, count);
  if (real.size === 0) {
    await run(["import", String(count)]);
    return;
  }
  const listed = [...real].map(([id, provider]) => `${id} (${provider})`);
  narrate(
    session,
    `\n  ℹ Not importing: ${listed.join(", ")} are driven by real BMC drivers (deno task lab), ` +
      "and an import would make them simulated again.\n",
  );
}

function isFinished(event: OperationEvent | undefined): boolean {
  return event?.snapshot !== undefined && isTerminalPhase(event.snapshot.phase);
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
