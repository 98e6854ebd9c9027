/**
 * The benchmark's `cli` scenario (`scripts/bench.ts`): the CLI's start-to-exit time for `list`
 * against a fresh local server with three machines, through `deno task cli`, as a bundle, and
 * against the cost of starting deno at all.
 *
 * @module
 */

import { connectClient } from "../../lib/client/mod.ts";
import { MachineService } from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { figure } from "./stats.ts";
import type { BenchContext } from "./context.ts";
import { spawnServer } from "../server_process.ts";

const REPO = new URL("../..", import.meta.url).pathname;

/** Runs deno with `args` `runs` times after one warm-up; each run's output must hold `expect`. */
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

/**
 * Runs the `cli` scenario.
 *
 * @param ctx The run.
 */
export async function runCli(ctx: BenchContext): Promise<void> {
  const { figures, details, scale } = ctx;
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
    const runs = scale.cliRuns;
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
}
