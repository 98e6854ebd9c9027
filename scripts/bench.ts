/**
 * End-to-end benchmark of a bmdemo server over gRPC (issue 6): registration, reads, listing, a
 * burst of reimages watched by several subscribers, log streaming, the CLI's start-to-exit time
 * and the server's memory. Prints one table and writes the figures as JSON.
 *
 * Usage: deno task bench [--server host:port] [--scenarios a,b] [--json out.json]
 *          [--scale full|small] [--server-flags "<deno run flags>"] [--seconds 600] [--db]
 *
 * `soak` (not in the default list) starts a server of its own and runs for `--seconds`; `--db`
 * gives that server a fresh SQLite file (scripts/bench/soak.ts).
 *
 * Without --server it starts `server.ts` of this repository as a separate process (default
 * timings) and stops it at the end. With --server it measures whatever runs there using only the
 * RPCs and fields of the original proto (no send_initial_snapshot, no LogChunk.seq, no
 * ErrorInfo), so the original Go server can be measured too.
 *
 * The task runs this client with `--v8-flags=--max-semi-space-size=2`: with V8's default young
 * generation its scavenges paused it for up to 21 ms (`--trace-gc`), which every call in flight
 * counts as latency; with 2 MB the get p99 dropped from 26-30 ms to 22 ms in A/B runs.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connectClient, ConnectError, statusName } from "../lib/client/mod.ts";
import { create } from "@bufbuild/protobuf";
import {
  MachineService,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_Phase as OperationPhase,
  OperationService,
  type RegisterMachineRequest,
  RegisterMachineRequestSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type Figure, figure, renderTable, textFigure } from "./bench/stats.ts";
import { readRss, type Rss } from "./bench/memory.ts";
import { calibrate } from "./bench/calibration.ts";
import { runScan, SCAN_SCALES } from "./bench/scan.ts";
import { runSoak } from "./bench/soak.ts";
import { fanoutFigures, runFanout } from "./bench/fanout.ts";
import { type ServerProcess, spawnServer } from "./server_process.ts";

const SCENARIOS = [
  "register",
  "get",
  "list",
  "burst",
  "watch",
  "logs",
  "cli",
  "memory",
  "scan",
  "soak",
  "fanout",
] as const;
type Scenario = typeof SCENARIOS[number];
/** `soak` runs 10 minutes by default: only on request. */
const DEFAULT_SCENARIOS = SCENARIOS.filter((s) => s !== "soak");

/** Simulated provider work of one REIMAGE with the default ("normal") timings, in ms. */
const SIMULATED_REIMAGE_MS = 3350;
/** How long the server is left idle after the burst before the memory is sampled again. */
const IDLE_SAMPLE_MS = 3000;
/** A log stream silent this long is stopped (a server whose log streams never end). */
const LOG_SILENCE_MS = 2000;

const USAGE = `usage: deno task bench [--server host:port] [--scenarios ${SCENARIOS.join(",")}] ` +
  `[--json out.json] [--scale full|small] [--server-flags "<deno run flags>"] ` +
  `[--seconds 600] [--db]`;

const { values } = parseArgs({
  options: {
    server: { type: "string" },
    scenarios: { type: "string", default: DEFAULT_SCENARIOS.join(",") },
    json: { type: "string" },
    scale: { type: "string", default: "full" },
    "server-flags": { type: "string", default: "" },
    seconds: { type: "string", default: "600" },
    db: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
  allowPositionals: false,
});
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const selected = new Set<Scenario>();
for (const name of values.scenarios.split(",").map((s) => s.trim()).filter(Boolean)) {
  if (!(SCENARIOS as readonly string[]).includes(name)) {
    console.error(`bench: unknown scenario "${name}"\n${USAGE}`);
    Deno.exit(2);
  }
  selected.add(name as Scenario);
}
const soakSeconds = Number(values.seconds);
if (!(soakSeconds > 0)) {
  console.error(`bench: --seconds must be a positive number: got "${values.seconds}"\n${USAGE}`);
  Deno.exit(2);
}
if (values.scale !== "full" && values.scale !== "small") {
  console.error(`bench: --scale must be full or small: got "${values.scale}"\n${USAGE}`);
  Deno.exit(2);
}

const SCALE = values.scale === "full"
  ? {
    machines: 10_000,
    registerChunks: 5,
    getCalls: 20_000,
    getRepeats: 4,
    listRepeats: 10,
    burst: 1000,
    watchers: 10,
    cliRuns: 15,
  }
  : {
    machines: 100,
    registerChunks: 2,
    getCalls: 1000,
    getRepeats: 2,
    listRepeats: 3,
    burst: 100,
    watchers: 2,
    cliRuns: 3,
  };
const IN_FLIGHT = 50;
const LOG_IN_FLIGHT = 10;
const PAGE_SIZE = 1000;
const REPO = new URL("..", import.meta.url).pathname;
const RUN = crypto.randomUUID().slice(0, 8);

function log(message: string): void {
  console.error(`[bench] ${message}`);
}

function codeName(error: unknown): string {
  if (error instanceof ConnectError) return statusName(error.code);
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

/** Runs `fn(0..count-1)` with at most `inFlight` calls pending; returns each call's latency (ms). */
async function pool(
  count: number,
  inFlight: number,
  fn: (i: number) => Promise<unknown>,
): Promise<number[]> {
  const latencies = new Array<number>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const start = performance.now();
      await fn(i);
      latencies[i] = performance.now() - start;
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
  return latencies;
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const isTerminal = (op: Operation | undefined): boolean =>
  op !== undefined && op.phase >= OperationPhase.SUCCEEDED;
const machineId = (n: number): string => `bench-${n}`;

// ---------------------------------------------------------------------------------------------

const figures: Figure[] = [];
const details: Record<string, unknown> = {};
const failures: string[] = [];
const notes: string[] = [];

const calibration = await calibrate();

let server: ServerProcess | undefined;
const address = values.server ?? (server = await spawnServer([], {
  denoFlags: values["server-flags"].split(/\s+/).filter(Boolean),
})).address;
log(
  server
    ? `started server.ts (pid ${server.pid}) on ${address}`
    : `measuring the server at ${address}`,
);
const machines = connectClient(MachineService, address);
const operations = connectClient(OperationService, address);

const memory: Record<string, Rss | null> = {};
function sampleMemory(label: string): void {
  memory[label] = server ? readRss(server.pid) : null;
}
sampleMemory("idle");

async function scenario(name: Scenario, body: () => Promise<void>): Promise<void> {
  log(`${name}...`);
  const start = performance.now();
  try {
    await body();
  } catch (error) {
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    failures.push(`${name}: ${message}`);
    figures.push(textFigure(name, "error", message));
    log(`${name} failed: ${error instanceof Error ? error.stack : message}`);
  }
  log(`${name} done in ${((performance.now() - start) / 1000).toFixed(1)} s`);
}

/**
 * The RegisterMachine request of machine `n`, built as a message: the client sends a message it
 * is given as is, so requests built before a timed run cost the run only their encoding.
 */
function registerRequest(n: number): RegisterMachineRequest {
  const hi = Math.floor(n / 256) % 256;
  const lo = n % 256;
  const hex = (v: number): string => v.toString(16).padStart(2, "0");
  return create(RegisterMachineRequestSchema, {
    machine: {
      machineId: machineId(n),
      spec: {
        provider: "fake",
        macAddresses: [`02:00:00:${hex(Math.floor(n / 65536) % 256)}:${hex(hi)}:${hex(lo)}`],
        serial: `SN-BENCH-${n}`,
        sshEndpoint: `10.${Math.floor(n / 65536) % 256}.${hi}.${Math.min(lo + 1, 254)}:22`,
        rack: `rack-${Math.floor(n / 40)}`,
      },
      status: { phase: MachinePhase.FACTORY_READY },
      labels: { role: "worker", bench: "true" },
    },
  });
}

let registered = 0;
async function ensureMachines(count: number): Promise<void> {
  if (registered >= count) return;
  const from = registered;
  const requests = Array.from({ length: count - from }, (_, i) => registerRequest(from + i + 1));
  await pool(requests.length, IN_FLIGHT, (i) => machines.registerMachine(requests[i]));
  registered = count;
}

// 1. register ---------------------------------------------------------------------------------
if (selected.has("register")) {
  await scenario("register", async () => {
    const chunk = Math.ceil(SCALE.machines / SCALE.registerChunks);
    const rates: number[] = [];
    const latencies: number[] = [];
    const start = performance.now();
    for (let from = 0; from < SCALE.machines; from += chunk) {
      const size = Math.min(chunk, SCALE.machines - from);
      const requests = Array.from({ length: size }, (_, i) => registerRequest(from + i + 1));
      const t = performance.now();
      latencies.push(...await pool(size, IN_FLIGHT, (i) => machines.registerMachine(requests[i])));
      rates.push(size / ((performance.now() - t) / 1000));
    }
    const total = performance.now() - start;
    registered = SCALE.machines;
    const over = `${rates.length} chunks of ${chunk.toLocaleString("en-US")}`;
    figures.push(figure("register", `machines/s (${IN_FLIGHT} in flight)`, "1/s", rates, over));
    figures.push(
      figure("register", "overall machines/s", "1/s", [SCALE.machines / (total / 1000)]),
    );
    figures.push(figure("register", "call latency", "ms", latencies, `${latencies.length} calls`));
    details.register = { machines: SCALE.machines, totalMs: total, ratesPerChunk: rates };
  });
}
sampleMemory("afterRegister");

// 2. get --------------------------------------------------------------------------------------
if (selected.has("get")) {
  await scenario("get", async () => {
    await ensureMachines(SCALE.machines);
    // A fixed pseudo-random walk over the machines (stride coprime with most counts).
    const pick = (i: number): string => machineId(((i * 7919) % SCALE.machines) + 1);
    await pool(200, IN_FLIGHT, (i) => machines.getMachine({ machineId: pick(i) })); // warm-up
    const per = Math.ceil(SCALE.getCalls / SCALE.getRepeats);
    const result: Record<string, unknown> = {};
    for (const inFlight of [1, IN_FLIGHT]) {
      const rates: number[] = [];
      const latencies: number[] = [];
      for (let r = 0; r < SCALE.getRepeats; r++) {
        const t = performance.now();
        latencies.push(
          ...await pool(
            per,
            inFlight,
            (i) => machines.getMachine({ machineId: pick(r * per + i) }),
          ),
        );
        rates.push(per / ((performance.now() - t) / 1000));
      }
      const mode = inFlight === 1 ? "sequential" : `${inFlight} in flight`;
      const over = `${SCALE.getRepeats} repeats of ${per.toLocaleString("en-US")}`;
      figures.push(figure("get", `calls/s (${mode})`, "1/s", rates, over));
      figures.push(
        figure("get", `latency (${mode})`, "ms", latencies, `${latencies.length} calls`),
      );
      result[mode] = { rates, calls: latencies.length };
    }
    details.get = result;
  });
}

// 3. list -------------------------------------------------------------------------------------
if (selected.has("list")) {
  await scenario("list", async () => {
    await ensureMachines(SCALE.machines);
    const listAll = async (): Promise<{ count: number; pages: number }> => {
      let token = "";
      let count = 0;
      let pages = 0;
      do {
        const page = await machines.listMachines({ pageSize: PAGE_SIZE, pageToken: token });
        count += page.machines.length;
        pages++;
        token = page.nextPageToken;
      } while (token !== "");
      return { count, pages };
    };
    const warm = await listAll();
    const samples: number[] = [];
    for (let r = 0; r < SCALE.listRepeats; r++) {
      const t = performance.now();
      await listAll();
      samples.push(performance.now() - t);
    }
    figures.push(
      figure(
        "list",
        `full listing of ${warm.count.toLocaleString("en-US")} (${warm.pages} pages)`,
        "ms",
        samples,
        `${samples.length} repeats`,
      ),
    );
    details.list = { machines: warm.count, pages: warm.pages, pageSize: PAGE_SIZE, samples };
  });
}

// 4./5. burst and watch -----------------------------------------------------------------------

interface Watcher {
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
  stop(): Promise<void>;
}

const terminalSeenAt = new Map<string, number>();
let lastEventAt = 0;

function openWatcher(index: number): Watcher {
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
        lastEventAt = performance.now();
        let keys = watcher.byOp.get(op.operationId);
        if (!keys) watcher.byOp.set(op.operationId, keys = new Set());
        const ts = event.ts ? `${event.ts.seconds}.${event.ts.nanos}` : "";
        keys.add(`${ts}|${event.message}|${op.phase}|${op.currentStage}`);
        if (isTerminal(op)) {
          watcher.terminal.add(op.operationId);
          if (!terminalSeenAt.has(op.operationId)) {
            terminalSeenAt.set(op.operationId, performance.now());
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

/**
 * Waits until every operation is terminal, as seen by the watchers, with GetOperation as a
 * fallback when no watcher reported progress for a second (or none is alive).
 */
async function waitTerminal(
  ids: readonly string[],
  watchers: readonly Watcher[],
  timeoutMs: number,
  pollNotBeforeMs = 0,
): Promise<{ endAt: number; polled: number; foundByPolling: number; timedOut: boolean }> {
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

let reimageIds: string[] = [];
if (selected.has("burst") || selected.has("watch") || selected.has("logs")) {
  await scenario("burst", async () => {
    await ensureMachines(SCALE.burst);
    const count = SCALE.burst;
    const watcherCount = selected.has("watch") ? SCALE.watchers : 1;
    const watchers = Array.from({ length: watcherCount }, (_, i) => openWatcher(i + 1));
    // Prove every subscription is live before the burst: probe operations (only original RPCs,
    // no initial-snapshot marker) until every watcher saw one of them end.
    const probeId = `bench-probe-${RUN}`;
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
          requestId: `probe-${RUN}-${probes.length}`,
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
          machines.enterMaintenance({ machineId: machineId(i + 1), requestId: `enter-${RUN}` }),
      ),
    );
    const enterWait = await waitTerminal(enterOps.map((op) => op.operationId), watchers, 60_000);
    const enterMs = enterWait.endAt - t;

    // REIMAGE on every machine at once: the burst.
    sampleMemory("beforeBurst");
    t = performance.now();
    const reimages = await Promise.all(
      Array.from(
        { length: count },
        (_, i) =>
          machines.reimageMachine({ machineId: machineId(i + 1), requestId: `reimage-${RUN}` }),
      ),
    );
    const acceptedMs = performance.now() - t;
    reimageIds = reimages.map((op) => op.operationId);
    // GetOperation polling only as a fallback, never during the simulated work itself.
    const wait = await waitTerminal(reimageIds, watchers, 120_000, SIMULATED_REIMAGE_MS);
    const burstMs = wait.endAt - t;
    sampleMemory("afterBurst");

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

    if (selected.has("burst")) {
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
      if (waiting.length === 0 || performance.now() - lastEventAt > 2000) break;
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
    if (selected.has("watch")) {
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
  });
}

// Memory once the server has been quiet for a while after the burst: a server may give memory
// back when idle, which the sample taken the moment the burst ends cannot show.
if (selected.has("memory") && server && reimageIds.length > 0) {
  await delay(IDLE_SAMPLE_MS);
  sampleMemory("afterBurstIdle");
}

// 6. logs -------------------------------------------------------------------------------------
if (selected.has("logs")) {
  await scenario("logs", async () => {
    if (reimageIds.length === 0) throw new Error("no burst operations to read the logs of");
    const lines: number[] = [];
    const bytes: number[] = [];
    let ended = 0;
    let silent = 0;
    const errors: string[] = [];
    const t = performance.now();
    await pool(reimageIds.length, LOG_IN_FLIGHT, async (i) => {
      const stream = operations.streamOperationLogs({ operationId: reimageIds[i] });
      let n = 0;
      let size = 0;
      try {
        while (true) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const next = stream.next();
          next.catch(() => {});
          const result = await Promise.race([
            next,
            new Promise<"silence">((resolve) => {
              timer = setTimeout(() => resolve("silence"), LOG_SILENCE_MS);
            }),
          ]);
          clearTimeout(timer);
          if (result === "silence") {
            silent++;
            await stream.return?.().catch(() => {});
            break;
          }
          if (result.done) {
            ended++;
            break;
          }
          size += result.value.data.length;
          for (const byte of result.value.data) if (byte === 10) n++;
        }
      } catch (error) {
        errors.push(codeName(error));
      }
      lines.push(n);
      bytes.push(size);
    });
    const totalMs = performance.now() - t;
    const totalLines = lines.reduce((a, b) => a + b, 0);
    const count = reimageIds.length;
    figures.push(
      figure("logs", `lines/s (${LOG_IN_FLIGHT} streams in flight)`, "1/s", [
        totalLines / (totalMs / 1000),
      ]),
    );
    figures.push(figure("logs", "lines per operation", "", lines, `${count} ops`));
    figures.push(figure("logs", `all ${count} logs read`, "ms", [totalMs]));
    figures.push(textFigure("logs", "streams ended by the server", `${ended}/${count}`));
    if (silent > 0) {
      figures.push(
        textFigure(
          "logs",
          "log streams do not end",
          `${silent}/${count} stopped after ${LOG_SILENCE_MS} ms of silence`,
        ),
      );
    }
    const sameLength = Math.min(...lines) === Math.max(...lines);
    figures.push(
      textFigure(
        "logs",
        "whole log came back",
        ended === count && errors.length === 0 && sameLength
          ? "yes (every stream ended with OK, same line count for every op)"
          : `no: ${count - ended} not ended, ${errors.length} errors` +
            (sameLength ? "" : ", line counts differ"),
      ),
    );
    if (errors.length > 0) {
      figures.push(textFigure("logs", "errors", errors.slice(0, 5).join(", ")));
    }
    details.logs = { operations: count, totalLines, totalMs, ended, silent, errors, lines, bytes };
  });
}
sampleMemory("afterLogs");

// 7. cli --------------------------------------------------------------------------------------

async function timeRuns(
  args: string[],
  runs: number,
  expect: string,
): Promise<number[]> {
  const samples: number[] = [];
  for (let r = -1; r < runs; r++) { // r = -1: warm-up, not counted
    const t = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: REPO,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const ms = performance.now() - t;
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success || !text.includes(expect)) {
      throw new Error(
        `deno ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    if (r >= 0) samples.push(ms);
  }
  return samples;
}

if (selected.has("cli")) {
  await scenario("cli", async () => {
    // Always a fresh server of this repository with exactly 3 machines (the measured server may
    // hold 10,000, or be remote).
    const cliServer = await spawnServer();
    const tmp = await Deno.makeTempDir({ prefix: "bmdemo-bench-" });
    try {
      const client = connectClient(MachineService, cliServer.address);
      for (let i = 1; i <= 3; i++) {
        await client.registerMachine({
          machine: { machineId: `cli-${i}`, spec: { provider: "fake" } },
        });
      }
      client.close();
      const runs = SCALE.cliRuns;
      const over = `${runs} runs (+1 warm-up)`;
      const task = await timeRuns(
        ["task", "--quiet", "cli", "--server", cliServer.address, "list"],
        runs,
        "cli-3",
      );
      figures.push(figure("cli", "deno task cli list", "ms", task, over));
      const bundle = `${tmp}/bmdemo-cli.js`;
      let t = performance.now();
      const built = await new Deno.Command(Deno.execPath(), {
        args: ["bundle", "--quiet", "--platform", "deno", "-o", bundle, "cli.ts"],
        cwd: REPO,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!built.success) {
        throw new Error(`deno bundle failed: ${new TextDecoder().decode(built.stderr)}`);
      }
      const bundleMs = performance.now() - t;
      const bundled = await timeRuns(
        [
          "run",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          bundle,
          "--server",
          cliServer.address,
          "list",
        ],
        runs,
        "cli-3",
      );
      figures.push(figure("cli", "bundled CLI list (deno run bmdemo-cli.js)", "ms", bundled, over));
      // Baseline: the cost of starting deno at all.
      const empty = `${tmp}/empty.js`;
      await Deno.writeTextFile(empty, "");
      t = performance.now();
      const baseline = await timeRuns(["run", empty], runs, "");
      figures.push(figure("cli", "baseline: deno run of an empty file", "ms", baseline, over));
      figures.push(figure("cli", "deno bundle cli.ts (once)", "ms", [bundleMs]));
      details.cli = { task, bundled, baseline, bundleMs, server: "fresh local server, 3 machines" };
    } finally {
      await cliServer.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  });
}

// 9. fanout (scripts/bench/fanout.ts) ---------------------------------------------------------
if (selected.has("fanout")) {
  await scenario("fanout", async () => {
    const result = await runFanout({
      address,
      machines: SCALE.burst,
      watchers: values.scale === "full" ? 200 : 10,
      prefix: `fanout-${RUN}`,
      simulatedMs: SIMULATED_REIMAGE_MS,
      serverPid: server?.pid,
    });
    figures.push(...fanoutFigures(result));
    details.fanout = result;
  });
}

// 8. memory -----------------------------------------------------------------------------------
if (selected.has("memory")) {
  await scenario("memory", () => {
    const labels: [string, string][] = [
      ["idle", "idle"],
      ["afterRegister", "after register"],
      ["afterBurst", "after burst"],
      ["afterBurstIdle", `after burst, ${IDLE_SAMPLE_MS / 1000} s idle`],
      ["afterLogs", "after logs"],
    ];
    for (const [key, label] of labels) {
      if (!(key in memory)) continue;
      const rss = memory[key];
      if (rss === null) {
        figures.push(textFigure("memory", `server RSS ${label}`, "n/a"));
      } else {
        figures.push(figure("memory", `server VmRSS ${label}`, "MB", [rss.rssMb]));
        figures.push(figure("memory", `server VmHWM ${label}`, "MB", [rss.hwmMb]));
      }
    }
    details.memory = memory;
    return Promise.resolve();
  });
}

// 9. scan (its own server on a seeded --db file) ---------------------------------------------
if (selected.has("scan")) {
  await scenario("scan", async () => {
    const result = await runScan(SCAN_SCALES[values.scale as "full" | "small"], {
      denoFlags: values["server-flags"].split(/\s+/).filter(Boolean),
      log,
    });
    figures.push(...result.figures);
    details.scan = result.details;
  });
}

// 10. soak: a server of its own under a fixed-rate mixed load (scripts/bench/soak.ts) ---------
if (selected.has("soak")) {
  await scenario("soak", async () => {
    const result = await runSoak({
      seconds: soakSeconds,
      db: values.db,
      denoFlags: values["server-flags"].split(/\s+/).filter(Boolean),
      log,
    });
    figures.push(...result.figures);
    details.soak = result.details;
  });
}

// ---------------------------------------------------------------------------------------------

machines.close();
operations.close();
let serverExit: number | undefined;
if (server) {
  const status = await server.stop();
  serverExit = status.code;
  if (!status.success && status.signal !== "SIGTERM") {
    notes.push(`server exited with code ${status.code}`);
  }
}

const header = `bmdemo bench: scale ${values.scale}, server ${
  server ? `server.ts started by the tool (${address})` : address
}, ${navigator.hardwareConcurrency} CPUs, deno ${Deno.version.deno}, calibration: CPU loop ${
  calibration.cpuMs.toFixed(0)
} ms, bare node:http2 ${
  Math.round(calibration.http2CallsPerSecond).toLocaleString("en-US")
} round trips/s (one process), load average ${calibration.loadAverage ?? "n/a"}`;
console.log(header);
console.log(renderTable(figures));
for (const note of notes) console.log(`note: ${note}`);
if (failures.length > 0) console.log(`FAILED: ${failures.join("; ")}`);

if (values.json) {
  const byScenario: Record<string, Figure[]> = {};
  for (const f of figures) (byScenario[f.scenario] ??= []).push(f);
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        scale: values.scale,
        scaleParameters: SCALE,
        server: server ? { address, startedByTool: true, pid: server.pid, exitCode: serverExit } : {
          address,
          startedByTool: false,
        },
        deno: Deno.version.deno,
        cpus: navigator.hardwareConcurrency,
        calibration,
        scenarios: [...selected],
        figures: byScenario,
        details,
        notes,
        failures,
      },
      null,
      2,
    ) + "\n",
  );
  log(`wrote ${values.json}`);
}
Deno.exit(failures.length === 0 ? 0 : 1);
