/**
 * The benchmark's `burst` and `watch` scenarios (`scripts/bench.ts`), one run: watchers are
 * proven live with probe operations, every machine enters maintenance, then every machine is
 * reimaged at once; reports the time until all are terminal against the simulated work, the
 * final phases, and (for `watch`) what each watcher received against the union of all.
 *
 * @module
 */

import {
  type Operation,
  Operation_Phase as OperationPhase,
} from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { figure, textFigure } from "./stats.ts";
import {
  type BenchContext,
  delay,
  IN_FLIGHT,
  machineId,
  pool,
  SIMULATED_REIMAGE_MS,
} from "./context.ts";
import { ensureMachines } from "./register.ts";
import { openWatcher, type Sightings, waitTerminal, type Watcher } from "./watchers.ts";

/**
 * Runs the `burst` scenario, with the `watch` figures when `watch` is selected.
 *
 * @param ctx The run.
 * @param onReimages Given the REIMAGE operations' ids as soon as all are accepted (the `logs`
 * scenario reads their logs, even if the burst fails later).
 */
export async function runBurst(
  ctx: BenchContext,
  onReimages: (ids: readonly string[]) => void,
): Promise<void> {
  const { figures, details, notes, machines, operations, scale, run } = ctx;
  const sightings: Sightings = { terminalSeenAt: new Map(), lastEventAt: 0 };
  await ensureMachines(ctx, scale.burst);
  const count = scale.burst;
  const watcherCount = ctx.selected.has("watch") ? scale.watchers : 1;
  const watchers = Array.from(
    { length: watcherCount },
    (_, i) => openWatcher(ctx.address, sightings, i + 1),
  );
  // Prove every subscription is live before the burst: probe operations (only original RPCs,
  // no initial-snapshot marker) until every watcher saw one of them end.
  const probeId = `bench-probe-${run}`;
  await machines.registerMachine({ machine: { machineId: probeId, spec: { provider: "fake" } } });
  const probes: string[] = [];
  const sawProbe = (w: Watcher): boolean => probes.some((id) => w.terminal.has(id));
  const probeDeadline = performance.now() + 10_000;
  let probeSent = 0;
  while (
    watchers.some((w) => !sawProbe(w) && w.error === undefined) &&
    performance.now() < probeDeadline
  ) {
    if (performance.now() - probeSent > 250) {
      const probe = await machines.enterMaintenance({
        machineId: probeId,
        requestId: `probe-${run}-${probes.length}`,
      });
      probes.push(probe.operationId);
      probeSent = performance.now();
    }
    await delay(10);
  }
  const live = watchers.filter(sawProbe).length;

  // ENTER_MAINTENANCE on every machine at once, then wait until all are terminal.
  let t = performance.now();
  const enterOps = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        machines.enterMaintenance({ machineId: machineId(i + 1), requestId: `enter-${run}` }),
    ),
  );
  const enterWait = await waitTerminal(sightings, enterOps.map((op) => op.operationId), {
    operations,
    watchers,
    timeoutMs: 60_000,
  });
  const enterMs = enterWait.endAt - t;

  // REIMAGE on every machine at once: the burst.
  ctx.sampleMemory("beforeBurst");
  t = performance.now();
  const reimages = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        machines.reimageMachine({ machineId: machineId(i + 1), requestId: `reimage-${run}` }),
    ),
  );
  const acceptedMs = performance.now() - t;
  const reimageIds = reimages.map((op) => op.operationId);
  onReimages(reimageIds);
  // GetOperation polling only as a fallback, never during the simulated work itself.
  const wait = await waitTerminal(sightings, reimageIds, {
    operations,
    watchers,
    timeoutMs: 120_000,
    pollNotBeforeMs: SIMULATED_REIMAGE_MS,
  });
  const burstMs = wait.endAt - t;
  ctx.sampleMemory("afterBurst");

  // Final phases, and the server-side span (created_at of the first to finished_at of the last).
  const finals = new Array<Operation>(count);
  await pool(count, IN_FLIGHT, async (i) => {
    finals[i] = await operations.getOperation({ operationId: reimageIds[i] });
  });
  const byPhase: Record<string, number> = {};
  for (const op of finals) {
    const name = OperationPhase[op.phase] ?? String(op.phase);
    byPhase[name] = (byPhase[name] ?? 0) + 1;
  }
  const notSucceeded = finals.filter((op) => op.phase !== OperationPhase.SUCCEEDED).length;
  const ms = (ts: { seconds: bigint; nanos: number } | undefined): number =>
    ts ? Number(ts.seconds) * 1000 + ts.nanos / 1e6 : NaN;
  const serverSpan = Math.max(...finals.map((op) => ms(op.finishedAt))) -
    Math.min(...finals.map((op) => ms(op.createdAt)));
  const perOp = finals.map((op) => ms(op.finishedAt) - ms(op.createdAt)).filter(Number.isFinite);

  if (ctx.selected.has("burst")) {
    notes.push(
      `burst: overhead is measured against ${SIMULATED_REIMAGE_MS} ms of simulated work per ` +
        `REIMAGE (default "normal" provider timings: 250+500+1000+100+1000+500 ms), all ` +
        `${count} running at once.`,
    );
    figures.push(figure("burst", `first REIMAGE call → all ${count} terminal`, "ms", [burstMs]));
    figures.push(
      figure("burst", `overhead over ${SIMULATED_REIMAGE_MS} ms simulated work`, "%", [
        (burstMs / SIMULATED_REIMAGE_MS - 1) * 100,
      ]),
    );
    figures.push(figure("burst", `all ${count} REIMAGE calls answered`, "ms", [acceptedMs]));
    figures.push(figure("burst", "server span created_at→last finished_at", "ms", [serverSpan]));
    figures.push(
      figure("burst", "per-op created_at→finished_at", "ms", perOp, `${perOp.length} ops`),
    );
    figures.push(figure("burst", `ENTER_MAINTENANCE ×${count} → all terminal`, "ms", [enterMs]));
    figures.push(textFigure("burst", "operations not SUCCEEDED", `${notSucceeded}/${count}`));
    figures.push(
      textFigure(
        "burst",
        "final phases",
        Object.entries(byPhase).map(([k, v]) => `${k} ${v}`).join(", "),
      ),
    );
    figures.push(
      textFigure(
        "burst",
        "end detected by",
        wait.foundByPolling === 0
          ? "WatchOperations events"
          : `GetOperation polling for ${wait.foundByPolling}/${count} ops (no watcher progress for 1 s)`,
      ),
    );
    if (wait.timedOut) figures.push(textFigure("burst", "timed out", "after 120 s"));
  }
  details.burst = {
    machines: count,
    simulatedWorkMs: SIMULATED_REIMAGE_MS,
    burstMs,
    overheadPct: (burstMs / SIMULATED_REIMAGE_MS - 1) * 100,
    acceptedMs,
    serverSpanMs: serverSpan,
    enterMaintenanceMs: enterMs,
    notSucceeded,
    byPhase,
    timedOut: wait.timedOut,
    getOperationPolls: wait.polled + enterWait.polled,
    terminalFoundByPolling: wait.foundByPolling,
    watchersLiveBeforeBurst: live,
  };

  // Let the watchers drain: every terminal event, an error, or 2 s without any event.
  const drainDeadline = performance.now() + 30_000;
  while (performance.now() < drainDeadline) {
    const waiting = watchers.filter((w) =>
      w.error === undefined && !w.endedByServer && reimageIds.some((id) => !w.terminal.has(id))
    );
    if (waiting.length === 0 || performance.now() - sightings.lastEventAt > 2000) break;
    await delay(20);
  }
  await Promise.all(watchers.map((w) => w.stop()));

  // Expected events: per REIMAGE operation, the distinct events seen by the union of watchers.
  const union = new Map<string, Set<string>>();
  for (const id of reimageIds) union.set(id, new Set());
  for (const w of watchers) {
    for (const id of reimageIds) for (const key of w.byOp.get(id) ?? []) union.get(id)!.add(key);
  }
  const expected = [...union.values()].reduce((sum, keys) => sum + keys.size, 0);
  const perWatcher = watchers.map((w) => {
    const events = reimageIds.reduce((sum, id) => sum + (w.byOp.get(id)?.size ?? 0), 0);
    const terminal = reimageIds.filter((id) => w.terminal.has(id)).length;
    return {
      watcher: w.index,
      terminal,
      events,
      lost: expected - events,
      error: w.error ?? null,
      endedByServer: w.endedByServer,
    };
  });
  const maxEvents = Math.max(...perWatcher.map((w) => w.events));
  details.watch = {
    watchers: watchers.length,
    liveBeforeBurst: live,
    expectedTerminal: count,
    expectedEventsUnion: expected,
    maxEventsAnyWatcher: maxEvents,
    perWatcher,
  };
  if (ctx.selected.has("watch")) {
    const lagged = perWatcher.filter((w) => w.error !== null);
    figures.push(
      figure(
        "watch",
        `terminal events per watcher (of ${count})`,
        "",
        perWatcher.map((w) => w.terminal),
        `${watchers.length} watchers`,
      ),
    );
    figures.push(
      figure(
        "watch",
        `events per watcher (union ${expected}, max ${maxEvents})`,
        "",
        perWatcher.map((w) => w.events),
        `${watchers.length} watchers`,
      ),
    );
    figures.push(
      figure(
        "watch",
        "events lost vs union",
        "",
        perWatcher.map((w) => w.lost),
        `${watchers.length} watchers`,
      ),
    );
    figures.push(
      textFigure(
        "watch",
        "watchers lagged (ended with error)",
        lagged.length === 0
          ? `0/${watchers.length}`
          : `${lagged.length}/${watchers.length}: ${lagged.map((w) => w.error).join(", ")}`,
      ),
    );
    figures.push(
      textFigure("watch", "watchers live before the burst", `${live}/${watchers.length}`),
    );
  }
}
