/**
 * `import`, `list` and `get`.
 *
 * @module
 */

import {
  MachineSchema,
  MachineStatus_Phase as MachinePhase,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import type { Machine } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { formatMachineTable, formatTable, prepareWidths } from "./format.ts";
import {
  formatMachineDetail,
  formatMachineWideTable,
  type OutputFormat,
  renderStructured,
} from "./output.ts";
import { EXIT, type Session, UsageError } from "./session.ts";

/** Options of the list commands (`list`, `ops`). */
export interface ListOptions {
  /** Output format. @default "table" */
  format?: OutputFormat;
  /** Server-side filter, e.g. `phase=MAINTENANCE`. @default "" (all) */
  filter?: string;
  /** Page size of each request; every page is read. @default 0 (the server's default) */
  pageSize?: number;
}

/**
 * Parses `--page-size`.
 *
 * @param arg The option value.
 * @param command The command, for the usage text.
 * @returns The page size, or 0 when absent.
 * @throws {UsageError} When it is not a positive integer.
 */
export function parsePageSize(arg: string | undefined, command?: string): number {
  if (arg === undefined) return 0;
  if (!/^\d+$/.test(arg) || Number(arg) < 1 || Number(arg) > 10_000) {
    throw new UsageError(`invalid page size: ${arg} (must be an integer from 1 to 10000)`, command);
  }
  return Number(arg);
}

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
  const deadline = Date.now() + 30_000;
  const rows: string[][] = [];
  for (let i = 0; i < count; i++) {
    const machine = importedMachine(i);
    const registered = await session.machines.registerMachine({
      machine,
    }, { timeoutMs: deadline - Date.now() });
    rows.push([
      registered.machineId,
      MachinePhase[registered.status?.phase ?? MachinePhase.PHASE_UNSPECIFIED],
    ]);
  }
  await prepareWidths(rows);
  session.io.out(formatTable([], rows));
  return EXIT.OK;
}

/**
 * Lists every machine, following pages.
 *
 * @param session The session.
 * @param options Filter and page size.
 * @returns The machines in server order.
 */
export async function listAllMachines(
  session: Session,
  options: ListOptions = {},
): Promise<Machine[]> {
  const { filter = "", pageSize = 0 } = options;
  const deadline = Date.now() + 30_000;
  const machines: Machine[] = [];
  let pageToken = "";
  do {
    const page = await session.machines.listMachines({ pageToken, filter, pageSize }, {
      timeoutMs: deadline - Date.now(),
    });
    machines.push(...page.machines);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return machines;
}

/**
 * `list [-o table|wide|json|yaml] [--filter <expr>] [--page-size <n>]`.
 *
 * @param session The session.
 * @param options Format, filter and page size.
 * @returns The exit code.
 */
export async function listCommand(session: Session, options: ListOptions = {}): Promise<number> {
  const { format = "table", filter = "" } = options;
  const machines = await listAllMachines(session, options);
  if (format === "json" || format === "yaml") {
    session.io.out(await renderStructured(MachineSchema, machines, format));
  } else if (machines.length === 0) {
    session.io.out(
      filter === ""
        ? "No machines registered. Use 'import <N>' to create fake machines.\n"
        : "No machines match the filter.\n",
    );
  } else {
    await prepareWidths(machines);
    session.io.out(
      format === "wide"
        ? formatMachineWideTable(machines)
        : formatMachineTable(machines, session.width?.()),
    );
  }
  return EXIT.OK;
}

/**
 * `get <machine-id> [-o table|wide|json|yaml]`: the whole machine.
 *
 * @param session The session.
 * @param machineId The machine.
 * @param format Output format.
 * @returns The exit code.
 */
export async function getCommand(
  session: Session,
  machineId: string,
  format: OutputFormat = "table",
): Promise<number> {
  const machine = await session.machines.getMachine({ machineId }, {
    timeoutMs: 10_000,
  });
  if (format === "json" || format === "yaml") {
    session.io.out(await renderStructured(MachineSchema, machine, format));
  } else {
    await prepareWidths(machine);
    session.io.out(formatMachineDetail(machine, session.width?.()));
  }
  return EXIT.OK;
}
