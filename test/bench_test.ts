/**
 * The end-to-end benchmark (`scripts/bench.ts`) at small scale, as a subprocess: it runs every
 * scenario, prints the table, writes JSON, and the burst works; the soak for a few seconds. No
 * timing is asserted.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SANITIZE } from "./helpers.ts";

const SCRIPT = new URL("../scripts/bench.ts", import.meta.url).pathname;
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
  "fanout",
  "metrics",
];

interface JsonFigure {
  name: string;
  median: number | null;
  text?: string;
}

/** Runs the bench with `args` plus `--json`; returns its stdout and parsed JSON report. */
async function runBench(
  args: string[],
  // deno-lint-ignore no-explicit-any
): Promise<{ stdout: string; report: any }> {
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-bench-test-" });
  try {
    const json = `${dir}/bench.json`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--allow-write",
        "--allow-run",
        "--allow-sys",
        SCRIPT,
        ...args,
        "--json",
        json,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.deepEqual(out.code, 0, `bench failed:\n${stdout}\n${stderr}`);
    return { stdout, report: JSON.parse(await Deno.readTextFile(json)) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bench --scale small runs every scenario and writes its figures", SANITIZE, async () => {
  const { stdout, report } = await runBench(["--scale", "small"]);
  const table = stdout.split("\n").filter((line) => /^[a-z]+\s{2}/.test(line));
  for (const scenario of SCENARIOS) {
    assert(
      table.some((line) => line.startsWith(`${scenario} `)),
      `no table row for ${scenario}:\n${stdout}`,
    );
  }
  assert(!stdout.includes("FAILED"), stdout);

  assert.deepEqual(report.failures, []);
  // The 10-minute soak runs only on request.
  assert(!report.scenarios.includes("soak"), report.scenarios);
  for (const scenario of SCENARIOS) {
    const figures: JsonFigure[] = report.figures[scenario] ?? [];
    assert(
      figures.some((f) => f.median !== null || f.text !== undefined),
      `no figure for ${scenario} in the JSON`,
    );
    assert(!figures.some((f) => f.name === "error"), `${scenario}: ${JSON.stringify(figures)}`);
  }
  // The tool started the server itself: memory is measured, not "n/a".
  assert(report.figures.memory.some((f: JsonFigure) => typeof f.median === "number"));

  const burst = report.details.burst;
  assert.deepEqual(burst.machines, 100);
  assert.deepEqual(burst.notSucceeded, 0, JSON.stringify(burst.byPhase));
  assert.deepEqual(burst.byPhase, { SUCCEEDED: 100 });
  const watch = report.details.watch;
  assert.deepEqual(watch.watchers, 2);
  assert.deepEqual(watch.liveBeforeBurst, 2);
  for (const watcher of watch.perWatcher) {
    assert.deepEqual(watcher.error, null);
    assert.deepEqual(watcher.terminal, 100, JSON.stringify(watcher));
  }
  // fanout: every watcher got every event of every REIMAGE of its burst, latency measured.
  const fanout = report.details.fanout;
  assert.deepEqual([fanout.machines, fanout.watchers, fanout.timedOut], [100, 10, false]);
  for (const watcher of fanout.perWatcher) {
    assert.deepEqual(watcher, {
      events: fanout.expectedEventsPerWatcher,
      terminal: 100,
      error: null,
    });
  }
  assert.ok(fanout.latencyMs.n >= 10 * fanout.expectedEventsPerWatcher, JSON.stringify(fanout));
  const logs = report.details.logs;
  assert.deepEqual(logs.ended, 100);
  assert.deepEqual(logs.errors, []);
  // metrics: both servers (metrics on, --no-metrics) answered every round of both modes.
  const metrics = report.details.metrics;
  for (const mode of ["sequential", "50 in flight"]) {
    assert.equal(metrics.ratios[mode].length, 2, JSON.stringify(metrics));
    for (const ratio of metrics.ratios[mode]) assert(ratio > 0, JSON.stringify(metrics));
  }
  const scan = report.details.scan;
  assert.deepEqual(scan.operations, 2000);
  assert(scan.listCallsDuringBusy > 0, JSON.stringify(scan));
  assert(scan.noMatchP99 > 0 && scan.ratio > 0, JSON.stringify(scan));
});

Deno.test(
  "bench --scenarios soak --db samples RSS and the database under a fixed-rate load",
  SANITIZE,
  async () => {
    const { stdout, report } = await runBench(["--scenarios", "soak", "--seconds", "3", "--db"]);
    assert.deepEqual(report.failures, []);
    const soak = report.details.soak;
    assert.deepEqual(soak.serverArgs.slice(0, 2), ["--timing", "zero"]);
    // Start, every quarter of a short run, and the end.
    assert(soak.samples.length >= 5, JSON.stringify(soak.samples));
    for (const sample of soak.samples) {
      assert(sample.rssMb > 0, JSON.stringify(sample));
      assert(sample.dbMb > 0, JSON.stringify(sample));
    }
    for (const call of ["get", "operation", "listMachines", "listOperations", "logs", "register"]) {
      assert(soak.calls[call] > 0, `no ${call} call: ${JSON.stringify(soak.calls)}`);
    }
    assert.deepEqual(soak.errors, {});
    assert.deepEqual(soak.watcherDrops, 0);
    for (const events of soak.watcherEvents) assert(events > 0, JSON.stringify(soak));
    assert.equal(typeof soak.rssFlat, "boolean");
    assert.equal(typeof soak.dbFlat, "boolean");
    for (const row of ["server RSS end <= half-way + 10%", "SQLite file + WAL end <= half-way"]) {
      assert(stdout.includes(row), `no "${row}" row:\n${stdout}`);
    }
  },
);
