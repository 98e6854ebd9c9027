/**
 * The benchmark's `memory` scenario: reads a server process's memory from `/proc` (the process
 * itself is started by `scripts/server_process.ts`) and turns the samples `scripts/bench.ts`
 * takes between scenarios into figures.
 *
 * @module
 */

import { type Figure, figure, textFigure } from "./stats.ts";

/** Resident memory of a process, in MB. */
export interface Rss {
  /** VmRSS: resident now. */
  rssMb: number;
  /** VmHWM: peak resident so far. */
  hwmMb: number;
}

/**
 * Reads VmRSS and VmHWM of a process from `/proc/<pid>/status` (through `cat`).
 *
 * @param pid Process id.
 * @returns The figures, or null when unreadable (not Linux, process gone).
 */
export function readRss(pid: number): Rss | null {
  try {
    // Deno refuses to read /proc/<pid>/ without --allow-all; `cat` only needs --allow-run.
    const out = new Deno.Command("cat", {
      args: [`/proc/${pid}/status`],
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).outputSync();
    if (!out.success) return null;
    const status = new TextDecoder().decode(out.stdout);
    const kb = (key: string): number =>
      Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1]);
    const rss = kb("VmRSS");
    const hwm = kb("VmHWM");
    if (!Number.isFinite(rss) || !Number.isFinite(hwm)) return null;
    return { rssMb: rss / 1024, hwmMb: hwm / 1024 };
  } catch {
    return null;
  }
}

/**
 * The figures of the memory samples taken so far, in the order of the run.
 *
 * @param memory Samples by key (`idle`, `afterRegister`, `afterBurst`, `afterBurstIdle`,
 * `afterLogs`); null where the server's memory could not be read.
 * @param idleSampleMs How long the server was left idle before `afterBurstIdle`.
 * @returns VmRSS and VmHWM of each sample, or "n/a".
 */
export function memoryFigures(memory: Record<string, Rss | null>, idleSampleMs: number): Figure[] {
  const figures: Figure[] = [];
  const labels: [string, string][] = [
    ["idle", "idle"],
    ["afterRegister", "after register"],
    ["afterBurst", "after burst"],
    ["afterBurstIdle", `after burst, ${idleSampleMs / 1000} s idle`],
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
  return figures;
}
