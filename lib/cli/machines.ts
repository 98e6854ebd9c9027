/**
 * `import` and `list`.
 *
 * @module
 */

import { MachineStatus_Phase as MachinePhase } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { Machine, MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { formatMachineTable, formatTable } from "./format.ts";
import { deadlineIn, EXIT, type Session, UsageError } from "./session.ts";

/** Most machines `import` registers: the addressing scheme has 256 × 256 slots. */
export const MAX_IMPORT = 65536;

/**
 * Parses the count of `import <N>`.
 *
 * @param arg The argument.
 * @returns The count.
 * @throws {UsageError} When it is not an integer in 1..65536.
 */
export function parseCount(arg: string | undefined): number {
  if (arg === undefined) throw new UsageError("missing <N>", "import");
  if (!/^\d+$/.test(arg) || Number(arg) < 1 || Number(arg) > MAX_IMPORT) {
    throw new UsageError(
      `invalid count: ${arg} (must be an integer from 1 to ${MAX_IMPORT})`,
      "import",
    );
  }
  return Number(arg);
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/**
 * The spec of the i-th imported machine (0-based): `machine-<i+1>`, a MAC and an SSH endpoint
 * derived from i, the last octet capped to a valid host address.
 *
 * @param i Index.
 * @returns The machine to register.
 */
export function importedMachine(i: number): MessageInitShape<typeof MachineSchema> {
  const hi = Math.floor(i / 256);
  const lo = i % 256;
  return {
    machineId: `machine-${i + 1}`,
    spec: {
      provider: "fake",
      macAddresses: [`02:00:00:00:${hex2(hi)}:${hex2(lo)}`],
      sshEndpoint: `10.0.${hi}.${Math.min(lo + 10, 254)}:22`,
    },
    status: { phase: MachinePhase.FACTORY_READY },
    labels: { role: "worker", imported: "true" },
  };
}

/**
 * `import <N>`: registers machine-1..N; existing machines keep their status.
 *
 * @param session The session.
 * @param count How many.
 * @returns The exit code.
 */
export async function importCommand(session: Session, count: number): Promise<number> {
  const deadline = deadlineIn(30_000);
  const rows: string[][] = [];
  for (let i = 0; i < count; i++) {
    const machine = importedMachine(i);
    const registered = await session.machines.registerMachine({
      machine,
    }, { deadline });
    rows.push([
      registered.machineId,
      MachinePhase[registered.status?.phase ?? MachinePhase.PHASE_UNSPECIFIED],
    ]);
  }
  session.io.out(formatTable([], rows));
  return EXIT.OK;
}

/**
 * Lists every machine, following pages.
 *
 * @param session The session.
 * @returns The machines in server order.
 */
export async function listAllMachines(session: Session): Promise<Machine[]> {
  const deadline = deadlineIn(10_000);
  const machines: Machine[] = [];
  let pageToken = "";
  do {
    const page = await session.machines.listMachines({ pageToken }, { deadline });
    machines.push(...page.machines);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return machines;
}

/**
 * `list`.
 *
 * @param session The session.
 * @returns The exit code.
 */
export async function listCommand(session: Session): Promise<number> {
  const machines = await listAllMachines(session);
  if (machines.length === 0) {
    session.io.out("No machines registered. Use 'import <N>' to create fake machines.\n");
  } else {
    session.io.out(formatMachineTable(machines));
  }
  return EXIT.OK;
}
