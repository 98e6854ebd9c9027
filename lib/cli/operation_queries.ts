/**
 * The commands that read operations without changing them: `ops` (every operation, all
 * pages), `op` (one operation), `watch` (the event stream) and `logs` (one operation's log).
 *
 * @module
 */

import { toJson } from "@bufbuild/protobuf";
import type { Operation, OperationEvent } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  Operation_Phase as OperationPhase,
  OperationEvent_Kind as EventKind,
  OperationEventSchema,
  OperationSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { formatOperationTable, formatTime, prepareWidths, shortId } from "./format.ts";
import type { ListOptions } from "./machines.ts";
import {
  formatOperationDetail,
  formatOperationWideTable,
  JSON_WRITE_OPTIONS,
  type OutputFormat,
  renderStructured,
} from "./output.ts";
import { Code } from "../client/code.ts";
import { EXIT, isServiceError, type Session } from "./session.ts";
import { type ReconnectOptions, watchReconnecting } from "./watch_reconnect.ts";

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
    await prepareWidths(ops);
    session.io.out(
      format === "wide"
        ? formatOperationWideTable(ops)
        : formatOperationTable(ops, session.width?.()),
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

/** The colour of an operation phase in `watch`, as the step marks of the operation commands. */
function phaseText(session: Session, phase: OperationPhase): string {
  const name = OperationPhase[phase] ?? String(phase);
  if (phase === OperationPhase.SUCCEEDED) return session.colors.green(name);
  if (phase === OperationPhase.FAILED) return session.colors.red(name);
  if (phase === OperationPhase.CANCELED) return session.colors.yellow(name);
  return name;
}

async function watchLine(
  session: Session,
  event: OperationEvent,
  format: OutputFormat,
): Promise<string> {
  if (format === "json") {
    return JSON.stringify(toJson(OperationEventSchema, event, JSON_WRITE_OPTIONS)) + "\n";
  }
  // One YAML document per event, so a reader can split the stream at `---`.
  if (format === "yaml") {
    return "---\n" + await renderStructured(OperationEventSchema, event, "yaml");
  }
  const op = event.snapshot;
  return `[${formatTime(event.ts)}] ${shortId(op?.operationId ?? "")} | ${
    op?.machineId ?? "-"
  } | ` +
    `${phaseText(session, op?.phase ?? 0)} | stage=${op?.currentStage || "-"} | ${event.message}\n`;
}

/**
 * `watch [machine-id] [-o table|wide|json|yaml]`: prints events until Ctrl+C. With `json`,
 * stdout carries only events, one compact JSON object per line; with `yaml`, one document per
 * event. The server's snapshot marker is not printed. An unknown machine is refused
 * (MACHINE_NOT_FOUND) before watching; a stream the server ends is an error (exit 3), unless
 * `reconnect` is set (`watch_reconnect.ts`).
 *
 * @param session The session.
 * @param machineId Only this machine's operations, when given.
 * @param format Output format.
 * @param options `reconnect`: outlive the server going away; `sleep`: the wait between retries.
 * @returns The exit code.
 */
export async function watchCommand(
  session: Session,
  machineId?: string,
  format: OutputFormat = "table",
  options: Pick<ReconnectOptions, "sleep"> & { reconnect?: boolean } = {},
): Promise<number> {
  const { io } = session;
  const structured = format === "json" || format === "yaml";
  // The watch filter matches nothing for an unknown machine and would wait forever.
  if (machineId) await session.machines.getMachine({ machineId }, { timeoutMs: 10_000 });
  const filter = machineId ? `machine_id=${machineId}` : "";
  if (!structured) io.out("Watching operation events (Ctrl+C to stop)...\n\n");
  if (options.reconnect) {
    const code = await watchReconnecting(session, {
      filter,
      machineId,
      render: (event) => watchLine(session, event, format),
      sleep: options.sleep,
    });
    if (code === EXIT.OK) {
      if (structured) io.err("Stopped watching.\n");
      else io.out("\nStopped watching.\n");
    }
    return code;
  }
  try {
    for await (
      const event of session.operations.watchOperations(
        { filter, sendInitialSnapshot: true },
        { signal: session.interrupt },
      )
    ) {
      if (event.kind === EventKind.SNAPSHOT_COMPLETE) continue;
      io.out(await watchLine(session, event, format));
    }
  } catch (error) {
    if (!(session.interrupt.aborted && isServiceError(error) && error.code === Code.Canceled)) {
      throw error;
    }
    if (structured) io.err("Stopped watching.\n");
    else io.out("\nStopped watching.\n");
    return EXIT.OK;
  }
  io.err(`error: the bmdemo server at ${session.address} ended the watch\n`);
  return EXIT.RPC;
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
