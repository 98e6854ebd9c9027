/**
 * The benchmark's `list` scenario (`scripts/bench.ts`): full listings of every machine, page by
 * page, timed.
 *
 * @module
 */

import { figure } from "./stats.ts";
import type { BenchContext } from "./context.ts";
import { ensureMachines } from "./register.ts";

/** Machines per ListMachines page. */
const PAGE_SIZE = 1000;

/**
 * Runs the `list` scenario.
 *
 * @param ctx The run.
 */
export async function runList(ctx: BenchContext): Promise<void> {
  const { figures, details, machines, scale } = ctx;
  await ensureMachines(ctx, scale.machines);
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
  for (let r = 0; r < scale.listRepeats; r++) {
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
}
