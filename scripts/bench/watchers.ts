/**
 * Watchers of the benchmark's burst (`scripts/bench/burst.ts`): WatchOperations subscribers, each
 * on its own connection, that record every event and when each operation is first seen
 * terminal; and the wait until every operation of a batch is terminal.
 *
 * @module
 */

import { connectClient } from "../../lib/client/mod.ts";
import {
  type Operation,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type BenchContext, codeName, delay, IN_FLIGHT, pool } from "./context.ts";

/** One WatchOperations subscriber of the burst, on its own connection. */
export interface Watcher {
  /** From 1. */
  index: number;
  /** Event keys per operation id. */
  byOp: Map<string, Set<string>>;
  /** Every event received. */
  events: number;
  /** Operation ids seen in a terminal phase. */
  terminal: Set<string>;
  /** Status code name when the stream failed. */
  error?: string;
  /** The server ended the stream with OK. */
  endedByServer: boolean;
  /** Ends the stream and closes its connection. */
  stop(): Promise<void>;
}

/** When each operation was first seen terminal (by any watcher or by polling), and the last event. */
export interface Sightings {
  /** Operation id to `performance.now()` of its first terminal sighting. */
  terminalSeenAt: Map<string, number>;
  /** `performance.now()` of the last event any watcher got. */
  lastEventAt: number;
}

/**
 * Opens a watcher of every operation event.
 *
 * @param address `host:port` of the server.
 * @param sightings Where the watcher records terminal operations and its last event.
 * @param index The watcher's number, from 1.
 * @returns The watcher, already reading.
 */
export function openWatcher(address: string, sightings: Sightings, index: number): Watcher {
  // Each subscriber on its own connection, as separate clients would be.
  const client = connectClient(OperationService, address);
  const stream = client.watchOperations({ filter: "" });
  let stopping = false;
  const watcher: Watcher = {
    index,
    byOp: new Map(),
    events: 0,
    terminal: new Set(),
    endedByServer: false,
    async stop() {
      stopping = true;
      await stream.return?.();
      await done;
      client.close();
    },
  };
  const done = (async () => {
    try {
      for await (const event of stream) {
        const op = event.snapshot;
        if (op === undefined) continue;
        watcher.events++;
        sightings.lastEventAt = performance.now();
        let keys = watcher.byOp.get(op.operationId);
        if (!keys) watcher.byOp.set(op.operationId, keys = new Set());
        const ts = event.ts ? `${event.ts.seconds}.${event.ts.nanos}` : "";
        keys.add(`${ts}|${event.message}|${op.phase}|${op.currentStage}`);
        if (isTerminal(op)) {
          watcher.terminal.add(op.operationId);
          if (!sightings.terminalSeenAt.has(op.operationId)) {
            sightings.terminalSeenAt.set(op.operationId, performance.now());
          }
        }
      }
      if (!stopping) watcher.endedByServer = true;
    } catch (error) {
      if (!stopping) watcher.error = codeName(error);
    }
  })();
  return watcher;
}

/** Options of {@linkcode waitTerminal}. */
export interface WaitTerminalOptions {
  /** Client for the GetOperation fallback. */
  operations: BenchContext["operations"];
  /** The watchers whose sightings count. */
  watchers: readonly Watcher[];
  /** Give up after this long. */
  timeoutMs: number;
  /** No GetOperation polling before this long has passed. @default 0 */
  pollNotBeforeMs?: number;
}

/** What {@linkcode waitTerminal} saw. */
export interface TerminalWait {
  /** `performance.now()` when the last operation was seen terminal. */
  endAt: number;
  /** GetOperation calls made. */
  polled: number;
  /** Operations whose end only polling found. */
  foundByPolling: number;
  /** Not every operation was seen terminal within the timeout. */
  timedOut: boolean;
}

/**
 * Waits until every operation is terminal, as seen by the watchers, with GetOperation as a
 * fallback when no watcher reported progress for a second (or none is alive).
 *
 * @param sightings The watchers' sightings, which polling adds to.
 * @param ids The operations.
 * @param options The client to poll with, watchers, timeout and when polling may start.
 * @returns When they ended and how the ends were found.
 */
export async function waitTerminal(
  sightings: Sightings,
  ids: readonly string[],
  options: WaitTerminalOptions,
): Promise<TerminalWait> {
  const { operations, watchers, timeoutMs, pollNotBeforeMs = 0 } = options;
  const { terminalSeenAt } = sightings;
  const start = performance.now();
  const deadline = start + timeoutMs;
  let polled = 0;
  let foundByPolling = 0;
  let lastProgress = performance.now();
  let lastCount = -1;
  while (true) {
    const pending = ids.filter((id) => !terminalSeenAt.has(id));
    if (pending.length === 0) {
      return {
        endAt: Math.max(...ids.map((id) => terminalSeenAt.get(id)!)),
        polled,
        foundByPolling,
        timedOut: false,
      };
    }
    if (performance.now() > deadline) {
      return { endAt: performance.now(), polled, foundByPolling, timedOut: true };
    }
    if (pending.length !== lastCount) {
      lastCount = pending.length;
      lastProgress = performance.now();
    }
    const alive = watchers.some((w) => w.error === undefined && !w.endedByServer);
    const mayPoll = performance.now() - start >= pollNotBeforeMs;
    // Progress is judged from the moment polling is allowed, not from the start.
    lastProgress = Math.max(lastProgress, start + pollNotBeforeMs);
    if (mayPoll && (!alive || performance.now() - lastProgress > 1000)) {
      await pool(pending.length, IN_FLIGHT, async (i) => {
        const op = await operations.getOperation({ operationId: pending[i] });
        polled++;
        if (isTerminal(op) && !terminalSeenAt.has(op.operationId)) {
          terminalSeenAt.set(op.operationId, performance.now());
          foundByPolling++;
        }
      });
      lastProgress = performance.now();
    }
    await delay(5);
  }
}

/**
 * Whether an operation is in a terminal phase.
 *
 * @param op The operation, if any.
 * @returns True for SUCCEEDED, FAILED and CANCELED.
 */
export function isTerminal(op: Operation | undefined): boolean {
  return op !== undefined && op.phase >= OperationPhase.SUCCEEDED;
}
