/**
 * The end-to-end benchmark (`scripts/bench.ts`) at small scale, as a subprocess: it runs every
 * scenario, prints the table, writes JSON, and the burst works. No timing is asserted.
 *
 * @module
 */

import assert from "node:assert/strict";

const SCRIPT = new URL("../scripts/bench.ts", import.meta.url).pathname;
const SCENARIOS = ["register", "get", "list", "burst", "watch", "logs", "cli", "memory", "fanout"];

interface JsonFigure {
  name: string;
  median: number | null;
  text?: string;
}

Deno.test("bench --scale small runs every scenario and writes its figures", async () => {
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
        "--scale",
        "small",
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

    const table = stdout.split("\n").filter((line) => /^[a-z]+\s{2}/.test(line));
    for (const scenario of SCENARIOS) {
      assert(
        table.some((line) => line.startsWith(`${scenario} `)),
        `no table row for ${scenario}:\n${stdout}`,
      );
    }
    assert(!stdout.includes("FAILED"), stdout);

    const report = JSON.parse(await Deno.readTextFile(json));
    assert.deepEqual(report.failures, []);
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
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
