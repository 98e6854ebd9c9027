/**
 * End-to-end benchmark of a bmdemo server over gRPC (issue 6): registration, reads, listing, a
 * burst of reimages watched by several subscribers, log streaming, the CLI's start-to-exit time
 * and the server's memory. Prints one table and writes the figures as JSON.
 *
 * Usage: deno task bench [--server host:port] [--scenarios a,b] [--json out.json]
 *          [--scale full|small] [--server-flags "<deno run flags>"] [--seconds 600] [--db]
 *
 * Each scenario is a module of scripts/bench/ (register, get, list, burst with watch, logs, cli,
 * memory, fanout, scan, soak, metrics; `context.ts` holds what they share); this one parses the flags,
 * starts the server, runs the scenarios asked for and prints the report.
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

import { parseScriptArgs, usageError } from "./cli_args.ts";
import { connectClient } from "../lib/client/mod.ts";
import { MachineService, OperationService } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type Figure, renderTable, textFigure } from "./bench/stats.ts";
import { memoryFigures, readRss, type Rss } from "./bench/memory.ts";
import { calibrate } from "./bench/calibration.ts";
import { runScan, SCAN_SCALES } from "./bench/scan.ts";
import { runSoak } from "./bench/soak.ts";
import { fanoutFigures, runFanout } from "./bench/fanout.ts";
import {
  BENCH_SCALES,
  type BenchContext,
  delay,
  log,
  type Scenario,
  SCENARIOS,
  SIMULATED_REIMAGE_MS,
} from "./bench/context.ts";
import { runRegister } from "./bench/register.ts";
import { runGet } from "./bench/get.ts";
import { runList } from "./bench/list.ts";
import { runBurst } from "./bench/burst.ts";
import { runLogs } from "./bench/logs.ts";
import { runCli } from "./bench/cli.ts";
import { runMetricsCost } from "./bench/metrics.ts";
import { type ServerProcess, spawnServer } from "./server_process.ts";

/** `soak` runs 10 minutes by default: only on request. */
const DEFAULT_SCENARIOS = SCENARIOS.filter((s) => s !== "soak");

/** How long the server is left idle after the burst before the memory is sampled again. */
const IDLE_SAMPLE_MS = 3000;

const PROGRAM = "deno task bench";
const HELP = `usage: ${PROGRAM} [flags]

End-to-end benchmark of a bmdemo server over gRPC: runs the scenarios, prints one table and
writes the figures as JSON. Without --server it starts server.ts of this repository and stops it.

  --server host:port       measure the server there (original-proto RPCs only) instead
  --scenarios a,b          scenarios to run, of ${SCENARIOS.join(",")}
                           (default: all but soak)
  --json out.json          write the figures to this file
  --scale full|small       full (default) or a small quick run
  --server-flags "<flags>" deno run flags for the server it starts
  --seconds N              how long soak runs (default 600)
  --db                     give soak's server a fresh SQLite file
  -h, --help               this help`;

const { values } = parseScriptArgs({
  options: {
    server: { type: "string" },
    scenarios: { type: "string", default: DEFAULT_SCENARIOS.join(",") },
    json: { type: "string" },
    scale: { type: "string", default: "full" },
    "server-flags": { type: "string", default: "" },
    seconds: { type: "string", default: "600" },
    db: { type: "boolean", default: false },
  },
  allowPositionals: false,
}, { program: PROGRAM, help: HELP });
const selected = new Set<Scenario>();
for (const name of values.scenarios.split(",").map((s) => s.trim()).filter(Boolean)) {
  if (!(SCENARIOS as readonly string[]).includes(name)) {
    usageError(PROGRAM, `unknown scenario "${name}": use ${SCENARIOS.join(", ")}`);
  }
  selected.add(name as Scenario);
}
const soakSeconds = Number(values.seconds);
if (!(soakSeconds > 0)) {
  usageError(PROGRAM, `--seconds must be a positive number: got "${values.seconds}"`);
}
if (values.scale !== "full" && values.scale !== "small") {
  usageError(PROGRAM, `--scale must be full or small: got "${values.scale}"`);
}

const SCALE = BENCH_SCALES[values.scale];
const RUN = crypto.randomUUID().slice(0, 8);

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

const ctx: BenchContext = {
  address,
  run: RUN,
  scale: SCALE,
  selected,
  machines,
  operations,
  figures,
  details,
  notes,
  registered: 0,
  sampleMemory,
};

// 1. register ---------------------------------------------------------------------------------
if (selected.has("register")) await scenario("register", () => runRegister(ctx));
sampleMemory("afterRegister");

// 2. get --------------------------------------------------------------------------------------
if (selected.has("get")) await scenario("get", () => runGet(ctx));

// 3. list -------------------------------------------------------------------------------------
if (selected.has("list")) await scenario("list", () => runList(ctx));

// 4./5. burst and watch -----------------------------------------------------------------------
let reimageIds: readonly string[] = [];
if (selected.has("burst") || selected.has("watch") || selected.has("logs")) {
  await scenario("burst", () => runBurst(ctx, (ids) => reimageIds = ids));
}

// Memory once the server has been quiet for a while after the burst: a server may give memory
// back when idle, which the sample taken the moment the burst ends cannot show.
if (selected.has("memory") && server && reimageIds.length > 0) {
  await delay(IDLE_SAMPLE_MS);
  sampleMemory("afterBurstIdle");
}

// 6. logs -------------------------------------------------------------------------------------
if (selected.has("logs")) await scenario("logs", () => runLogs(ctx, reimageIds));
sampleMemory("afterLogs");

// 7. cli --------------------------------------------------------------------------------------
if (selected.has("cli")) await scenario("cli", () => runCli(ctx));

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

// 11. metrics: what the Prometheus metrics cost GetMachine, two servers of its own -------------
if (selected.has("metrics")) {
  await scenario("metrics", async () => {
    if (values.server) {
      notes.push("metrics: skipped with --server (it compares two servers it starts itself)");
      return;
    }
    const result = await runMetricsCost({
      machines: SCALE.machines,
      calls: SCALE.metricsCalls,
      rounds: SCALE.metricsRounds,
      denoFlags: values["server-flags"].split(/\s+/).filter(Boolean),
      log,
    });
    figures.push(...result.figures);
    details.metrics = result.details;
  });
}

// 8. memory -----------------------------------------------------------------------------------
if (selected.has("memory")) {
  await scenario("memory", () => {
    figures.push(...memoryFigures(memory, IDLE_SAMPLE_MS));
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
