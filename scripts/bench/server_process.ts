/**
 * Starts `server.ts` of this repository as a separate process for the benchmark (as
 * `test/server_process.ts` does, plus extra `deno run` flags such as `--cpu-prof`), reads its
 * memory from `/proc`, and stops exactly that process.
 *
 * @module
 */

/** A server process started by the benchmark. */
export interface BenchServer {
  /** `host:port` it listens on. */
  address: string;
  /** Its process id. */
  pid: number;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM (then SIGKILL after 15 s) and wait for the exit. */
  stop(): Promise<Deno.CommandStatus>;
}

const SERVER = new URL("../../server.ts", import.meta.url).pathname;

/**
 * Starts `deno run --allow-net --allow-env --allow-read [denoFlags] server.ts --port 0`.
 *
 * @param denoFlags Extra `deno run` flags, e.g. `["--cpu-prof", "--cpu-prof-dir=/tmp/prof"]`.
 * @returns The running server, once it printed its "listening on" line.
 */
export async function startServer(denoFlags: string[] = []): Promise<BenchServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      ...denoFlags,
      SERVER,
      "--port",
      "0",
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  let errText = "";
  const decoder = new TextDecoder();
  const errDone = (async () => {
    for await (const chunk of child.stderr) {
      errText += decoder.decode(chunk, { stream: true });
      // Keep only the tail: a long run must not grow the benchmark's own memory.
      if (errText.length > 200_000) errText = errText.slice(-100_000);
    }
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let address: string | undefined;
  while (address === undefined) {
    const { value, done } = await reader.read();
    if (done) {
      await errDone;
      const status = await child.status;
      throw new Error(`server exited (${status.code}) before listening:\n${out}\n${errText}`);
    }
    out += value;
    address = /listening on (\S+)/.exec(out)?.[1];
  }
  const outDone = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  let stopped: Promise<Deno.CommandStatus> | undefined;
  return {
    address,
    pid: child.pid,
    stderr: () => errText,
    stop() {
      if (!stopped) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
        const force = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // Already exited.
          }
        }, 15_000);
        stopped = Promise.all([child.status, outDone, errDone]).then(([s]) => {
          clearTimeout(force);
          return s;
        });
      }
      return stopped;
    },
  };
}

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
