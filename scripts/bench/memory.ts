/**
 * Reads a server process's memory from `/proc` for the benchmark (the process itself is started
 * by `scripts/server_process.ts`).
 *
 * @module
 */

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
