/**
 * `demo`: a scripted run printed as Markdown for design docs. It uses its own machines
 * (`demo-1..3`, registered idempotently), so it runs on a server that already has machines;
 * waits follow the event stream (never a poll) and print each step once, and end with an error
 * rather than wait forever when the server goes away.
 *
 * @module
 */

import type { Machine, Operation } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  MachineStatus_Phase as MachinePhase,
  Operation_Phase as OperationPhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";
import {
  effectiveLabel,
  formatRpcError,
  formatTable,
  operationTypeName,
  phaseLabel,
  prepareWidths,
} from "./format.ts";
import { followOperation, openMachineWatch } from "./follow.ts";
import { exitCodeOf, type OperationCommand, startOperation } from "./operations.ts";
import { EXIT, isServiceError, type Session } from "./session.ts";

const DEMO_MACHINES = ["demo-1", "demo-2", "demo-3"];
const FENCE = "```";

function machineStateBlock(machines: readonly Machine[], width: number): string {
  const rows = machines.map((m) => {
    const on = (m.status?.conditions ?? []).filter((c) => c.status).map((c) => `${c.type}=✓`);
    return [m.machineId, phaseLabel(m), effectiveLabel(m), on.length > 0 ? on.join(", ") : "-"];
  });
  return `### Machine State\n\n${FENCE}text\n` +
    formatTable(["MACHINE", "PHASE", "OBSERVED", "CONDITIONS"], rows, {
      firstGap: 2,
      width,
      fit: [undefined, undefined, undefined, { min: 12 }],
    }) +
    `${FENCE}\n\n`;
}

async function showState(session: Session): Promise<void> {
  const machines = await Promise.all(
    DEMO_MACHINES.map((machineId) =>
      session.machines.getMachine({ machineId }, { timeoutMs: 10_000 })
    ),
  );
  await prepareWidths(machines);
  session.io.out(machineStateBlock(machines, session.width?.() ?? Infinity));
}

/** Runs one operation in a fenced block; returns the exit code of its outcome. */
async function demoOperation(
  session: Session,
  title: string,
  command: OperationCommand,
  machineId: string,
): Promise<number> {
  const { io } = session;
  io.out(`## ${title}\n\n${FENCE}text\n`);
  const stop = new AbortController();
  try {
    const events = await openMachineWatch(session, machineId, stop.signal);
    const op = await startOperation(session, command, {
      machineId,
      requestId: crypto.randomUUID(),
    });
    io.out(
      `operation_id=${op.operationId.slice(0, 8)}  machine=${machineId}  ` +
        `type=${operationTypeName(op)}  phase=${OperationPhase[op.phase]}\n`,
    );
    const result: Operation | "interrupted" = isTerminalPhase(op.phase)
      ? op
      : await followOperation(session, events, op, {
        stepStarted: (name) => io.out(`  step: ${name}\n`),
        stepSucceeded: () => {},
        stepFailed: (name, message) => io.out(`  step ${name} failed: ${message}\n`),
      });
    if (result === "interrupted") {
      io.out(`result: INTERRUPTED\n${FENCE}\n\n`);
      return EXIT.INTERRUPTED;
    }
    io.out(`result: ${OperationPhase[result.phase]}\n${FENCE}\n\n`);
    return exitCodeOf(result);
  } finally {
    stop.abort();
  }
}

/**
 * `demo`.
 *
 * @param session The session.
 * @returns The exit code: 0, or the first failing step's.
 */
export async function demoCommand(session: Session): Promise<number> {
  const { io } = session;
  io.out("# Baremetal Lifecycle Demo\n\n## 1. Import Factory-Ready Machines\n\n");
  const rows: string[][] = [];
  for (const [i, machineId] of DEMO_MACHINES.entries()) {
    const machine = await session.machines.registerMachine({
      machine: {
        machineId,
        spec: {
          provider: "fake",
          macAddresses: [`02:00:00:00:ff:0${i + 1}`],
          sshEndpoint: `10.0.255.${10 + i}:22`,
        },
        status: { phase: MachinePhase.FACTORY_READY },
        labels: { role: "worker", demo: "true" },
      },
    }, { timeoutMs: 10_000 });
    rows.push([machineId, machine.spec?.macAddresses[0] ?? "-", phaseLabel(machine)]);
  }
  await prepareWidths(rows);
  io.out(`${FENCE}text\n${formatTable(["MACHINE", "MAC", "PHASE"], rows)}${FENCE}\n\n`);
  await showState(session);

  const steps: [string, OperationCommand][] = [
    ["2. Enter Maintenance for demo-1", "enter-maintenance"],
    ["3. Reimage demo-1 (requires MAINTENANCE)", "reimage"],
    ["4. Exit Maintenance for demo-1", "exit-maintenance"],
  ];
  for (const [title, command] of steps) {
    const code = await demoOperation(session, title, command, "demo-1");
    await showState(session);
    if (code !== EXIT.OK) return code;
  }

  io.out(`## 5. Try to Reimage demo-2 without MAINTENANCE (should fail)\n\n${FENCE}text\n`);
  const demo2 = await session.machines.getMachine({ machineId: "demo-2" });
  if (demo2.status?.phase === MachinePhase.MAINTENANCE) {
    io.out("Skipped: demo-2 is in MAINTENANCE on this server, so a reimage would run.\n");
  } else {
    try {
      await session.machines.reimageMachine({
        machineId: "demo-2",
        requestId: crypto.randomUUID(),
      }, { timeoutMs: 10_000 });
      io.out("Unexpected: the reimage was accepted\n");
    } catch (error) {
      if (!isServiceError(error)) throw error;
      io.out(`Expected error: ${formatRpcError(error.code, error.rawMessage)}\n`);
    }
  }
  io.out(`${FENCE}\n\n## Final State\n\n`);
  await showState(session);
  io.out(
    "---\n\n*Demo complete. Shows: MAINTENANCE required for reimage, proper phase transitions.*\n",
  );
  return EXIT.OK;
}
