/**
 * `watch --reconnect`: a watch that outlives its server. When the server ends the stream or
 * goes away, one line says so on stderr; the watch retries with a capped, jittered backoff and,
 * once back, resumes without losing a transition silently: the server's initial snapshot is
 * taken again and only what changed while disconnected is printed, each such event marked
 * `Resync: …`, then live events follow as before.
 *
 * What "changed" means, with bounded memory (at most {@linkcode MAX_TRACKED} operations are
 * remembered, at most {@linkcode MAX_RESYNC} resync events printed per reconnect):
 * - an active operation of the new snapshot whose phase or step differs from the last event
 *   printed for it (or that was never seen);
 * - an operation that ended after the last event seen (listed with ListOperations), whether it
 *   was active before or was created and ended while disconnected;
 * - an operation that was active and that the server no longer knows (a fresh server without
 *   `--db`): one stderr line each, as its outcome was never recorded.
 *
 * @module
 */

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import {
  type Operation,
  type OperationEvent,
  OperationEvent_Kind as EventKind,
  OperationEventSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { Code } from "../client/code.ts";
import { connectionFailure } from "./failure.ts";
import { shortId } from "./format.ts";
import { formatDuration } from "./output.ts";
import { EXIT, type Session } from "./session.ts";
import { abortableDelay } from "../model/abort.ts";
import { isTerminalPhase } from "../model/lifecycle.ts";

/** How many operations the watch remembers between reconnects (oldest forgotten first). */
export const MAX_TRACKED = 10_000;
/** How many resync events one reconnect prints; the rest is counted in one line. */
export const MAX_RESYNC = 1_000;
/** The first retry's delay; each retry doubles it up to {@linkcode BACKOFF_CAP_MS}. */
export const BACKOFF_FIRST_MS = 500;
/** The longest delay between two retries. */
export const BACKOFF_CAP_MS = 10_000;

/**
 * The delay before retry `attempt` (0 first): 0.5 s doubling to 10 s, with "equal jitter" (half
 * fixed, half random) so that watchers of one restarted server do not all retry at once.
 *
 * @param attempt The retry, from 0.
 * @param random A number in [0, 1). @default Math.random()
 * @returns Milliseconds.
 *
 * @example
 * ```ts
 * import { backoffDelay } from "./watch_reconnect.ts";
 * backoffDelay(0, 0); // 250
 * backoffDelay(10, 0.999); // just under 10000
 * ```
 */
export function backoffDelay(attempt: number, random: number = Math.random()): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (ceiling / 2) * random;
}

/** What {@linkcode watchReconnecting} needs besides the session. */
export interface ReconnectOptions {
  /** `machine_id=<id>`, or empty for every operation. */
  filter: string;
  /** The machine watched, re-checked at each reconnect (a fresh server may not know it). */
  machineId?: string;
  /** Renders one event as printed (the format of the command). */
  render(event: OperationEvent): Promise<string>;
  /** Waits between retries. @default abortableDelay (lib/model/abort.ts) */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** What an event says of its operation, to tell a changed operation from one already printed. */
function stateOf(op: Operation): string {
  return `${op.phase}|${op.currentStage}`;
}

/** Whether an error means the server went away (as opposed to refusing the watch). */
function serverGone(session: Session, error: unknown): boolean {
  if (!(error instanceof ConnectError) || session.interrupt.aborted) return false;
  const failure = connectionFailure(error, undefined);
  if (failure === "permission" || failure === "tls") return false;
  // A stopping server sends UNAVAILABLE (its SHUTTING_DOWN ErrorInfo is not decoded here) or
  // drops the stream; a killed one's connection ends as a CANCEL reset of the stream, which we
  // did not ask for (the interrupt is not aborted).
  return failure !== undefined ||
    [Code.Unavailable, Code.Aborted, Code.Canceled].includes(error.code);
}

/** What one reconnect prints besides live events. */
interface Resync {
  /** Operations of the new snapshot. */
  inSnapshot: Set<string>;
  /** Operations printed as ended by this resync: their late live events are older, so skipped. */
  ended: Set<string>;
  printed: number;
  skipped: number;
}

/**
 * Runs the watch until Ctrl+C, reconnecting whenever the server goes away after the first
 * connection (a server that cannot be reached at the start is an error, as without
 * `--reconnect`: a wrong address should not retry forever).
 *
 * @param session The session.
 * @param options The filter, the machine and how an event is printed.
 * @returns 0 on Ctrl+C while connected, 130 on Ctrl+C while reconnecting.
 * @throws The error of a watch the server refused (e.g. NOT_FOUND, UNAUTHENTICATED, TLS), or of
 * the first connection.
 */
export async function watchReconnecting(
  session: Session,
  options: ReconnectOptions,
): Promise<number> {
  const { io, address, interrupt } = session;
  const sleep = options.sleep ?? abortableDelay;
  const program = session.program ?? "bmdemo-cli";
  /** Last printed state of each operation not known to have ended, oldest first. */
  const active = new Map<string, string>();
  /** The server time of the last live event (or sync point) seen: what ended after it is new. */
  let since: number | undefined;
  let resuming = false;
  let wentAwayAt = 0;
  let attempt = 0;

  const remember = (op: Operation): void => {
    active.delete(op.operationId);
    if (isTerminalPhase(op.phase)) return;
    active.set(op.operationId, stateOf(op));
    if (active.size > MAX_TRACKED) active.delete(active.keys().next().value as string);
  };
  const print = async (event: OperationEvent): Promise<void> => {
    io.out(await options.render(event));
    if (event.snapshot) remember(event.snapshot);
  };
  const resyncLine = async (resync: Resync, op: Operation, why: string): Promise<void> => {
    if (resync.printed >= MAX_RESYNC) {
      resync.skipped++;
      return;
    }
    resync.printed++;
    if (isTerminalPhase(op.phase)) resync.ended.add(op.operationId);
    await print(create(OperationEventSchema, {
      ts: op.finishedAt ?? op.startedAt ?? op.createdAt,
      snapshot: op,
      message: `Resync: ${why}`,
      kind: EventKind.SNAPSHOT,
    }));
  };

  for (;;) {
    const resync: Resync = { inSnapshot: new Set(), ended: new Set(), printed: 0, skipped: 0 };
    try {
      if (resuming && options.machineId) {
        await session.machines.getMachine({ machineId: options.machineId }, { timeoutMs: 10_000 });
      }
      let confirmed = false;
      for await (
        const event of session.operations.watchOperations(
          { filter: options.filter, sendInitialSnapshot: true },
          { signal: interrupt },
        )
      ) {
        if (!confirmed) {
          confirmed = true;
          attempt = 0;
          if (resuming) {
            const gap = formatDuration(Date.now() - wentAwayAt);
            io.err(`watch: reconnected to the bmdemo server at ${address} after ${gap}\n`);
          }
        }
        const op = event.snapshot;
        if (event.kind === EventKind.SNAPSHOT && op) {
          resync.inSnapshot.add(op.operationId);
          if (!resuming) await print(event);
          else if (active.get(op.operationId) !== stateOf(op)) {
            const why = active.has(op.operationId) ? "changed while disconnected" : "active";
            await resyncLine(resync, op, why);
          }
          continue;
        }
        if (event.kind === EventKind.SNAPSHOT_COMPLETE) {
          if (resuming) {
            await resyncEnded(session, options.filter, {
              since,
              active,
              inSnapshot: resync.inSnapshot,
              line: (ended, why) => resyncLine(resync, ended, why),
            });
          }
          if (resync.skipped > 0) {
            io.err(
              `watch: ${resync.skipped} more operations changed while disconnected; ` +
                `${program} ops lists them\n`,
            );
          }
          resuming = false;
        } else if (op && resync.ended.has(op.operationId)) {
          continue;
        } else {
          await print(event);
        }
        if (event.ts) since = timestampMs(event.ts);
      }
      // A clean end of the stream: the server closed it (it stopped, or we fell behind).
    } catch (error) {
      if (interrupt.aborted) return EXIT.OK;
      if (since === undefined || !serverGone(session, error)) throw error;
    }
    if (interrupt.aborted) return EXIT.OK;
    if (!resuming) {
      wentAwayAt = Date.now();
      io.err(
        `watch: the bmdemo server at ${address} went away; reconnecting (Ctrl+C to stop)\n`,
      );
      resuming = true;
    }
    try {
      await sleep(backoffDelay(attempt++), interrupt);
    } catch {
      io.err("Stopped watching while disconnected.\n");
      return EXIT.INTERRUPTED;
    }
  }
}

/**
 * After a new snapshot: prints the operations that ended while disconnected (after `since`, not
 * in the snapshot), and one stderr line for each operation that was active and that the server
 * no longer knows.
 */
async function resyncEnded(
  session: Session,
  filter: string,
  state: {
    since: number | undefined;
    active: Map<string, string>;
    inSnapshot: Set<string>;
    line(op: Operation, why: string): Promise<void>;
  },
): Promise<void> {
  const { since, active, inSnapshot } = state;
  const listed = new Set<string>();
  let pageToken = "";
  do {
    const page = await session.operations.listOperations({ pageToken, filter }, {
      timeoutMs: 30_000,
      signal: session.interrupt,
    });
    for (const op of page.operations) {
      if (active.has(op.operationId)) listed.add(op.operationId);
      if (!isTerminalPhase(op.phase) || inSnapshot.has(op.operationId)) continue;
      const ended = op.finishedAt ? timestampMs(op.finishedAt) : 0;
      // Without a last event (the first stream ended before its first one) there is nothing
      // to resume from. An operation that ended in the very millisecond of the last event seen is
      // new only if its end was not that event.
      if (
        since === undefined || ended < since || (ended === since && !active.has(op.operationId))
      ) {
        continue;
      }
      await state.line(op, "ended while disconnected");
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  for (const operationId of [...active.keys()]) {
    if (inSnapshot.has(operationId) || listed.has(operationId)) continue;
    active.delete(operationId);
    session.io.err(
      `watch: operation ${shortId(operationId)} is unknown to the server since it restarted; ` +
        `its outcome was not recorded\n`,
    );
  }
}
