/**
 * Runs `server.ts` (or a bundle of it) as a separate process, for cross-process tests, the load
 * script and the benchmark: waits for its "listening on" line without sleeping, collects (the
 * tail of) its stderr, and stops exactly that process.
 *
 * @module
 */

/** A server running in a child process. */
export interface ServerProcess extends AsyncDisposable {
  /** `host:port` it listens on. */
  address: string;
  /** The dashboard's URL (with `--http-port`), from its "dashboard on" line. */
  dashboard?: string;
  /** What it printed on stdout up to its "listening on" line. */
  startup: string;
  /** The child process. */
  child: Deno.ChildProcess;
  /** Its process id. */
  pid: number;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Options of {@linkcode spawnServer}. */
export interface SpawnServerOptions {
  /** Script to run. @default server.ts of this repository */
  script?: string;
  /** Extra environment. */
  env?: Record<string, string>;
  /**
   * Extra `deno run` flags, e.g. `["--cpu-prof", "--cpu-prof-dir=/tmp/prof"]`. A `--v8-flags=`
   * here is merged after {@linkcode SERVER_V8_FLAGS}.
   */
  denoFlags?: string[];
  /**
   * Run `deno task server` (not `deno run`) as the leader of its own process group, as a shell
   * runs it in a terminal; `stop()` then signals the whole group, as Ctrl+C does. Needs `setsid`
   * (util-linux). `script` and `denoFlags` do not apply.
   */
  task?: boolean;
}

const SERVER = new URL("../server.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/**
 * V8 flags the server runs with; the `server` task in deno.json passes the same list (keep the
 * two in sync) and `deno compile` bakes them into the server binary (scripts/build.ts).
 *
 * Why: most of the server's resident memory is V8 heap sized for throughput, not data. With
 * defaults the young generation grows to 2 x 32 MB semi-spaces that are never given back: 30k
 * GetMachine calls on one machine took RSS 75 -> ~245 MB with no data growth.
 * `--max-semi-space-size=2` caps it at 2 x 2 MB; one request's garbage is still collected
 * cheaply. Measured with `deno task bench` (2 cores): RSS after register 204 -> 149 MB, after
 * the burst 269 -> 231 MB, GetMachine at 50 in flight 5,014 -> 5,519 calls/s, burst unchanged.
 *
 * `--expose-gc` gives the server V8's `gc()` for its heap collector (lib/runtime/heap_collector.ts): V8
 * otherwise lets the old generation grow to ~4x the live heap before collecting and keeps the
 * pages of what it collected resident. RSS after the burst 224-240 -> 135-139 MB (bench memory
 * scenario, interleaved A/B runs).
 *
 * Rejected: 1 MB semi-spaces (burst ~12% slower); `--heap-growing-percent=10..30` (RSS after
 * the burst ~190 MB, but the burst 9-40% slower and gets ~13% slower); `--optimize-for-size`
 * (~158 MB, burst ~25% slower); glibc `MALLOC_ARENA_MAX` (no effect: the growth is V8 heap);
 * `--no-memory-pool` and V8's memory reducer (`--memory-reducer-delay-ms`): no effect, Deno never
 * runs the reducer and regular collections keep their pages resident either way.
 */
export const SERVER_V8_FLAGS: readonly string[] = ["--max-semi-space-size=2", "--expose-gc"];

/**
 * Deno accepts `--v8-flags` only once: merges the server's V8 flags with any the caller passes
 * in `denoFlags` (the caller's come last, so they win).
 */
function withServerV8Flags(denoFlags: readonly string[]): string[] {
  const v8: string[] = [...SERVER_V8_FLAGS];
  const rest: string[] = [];
  for (const flag of denoFlags) {
    if (flag.startsWith("--v8-flags=")) v8.push(...flag.slice("--v8-flags=".length).split(","));
    else rest.push(flag);
  }
  return v8.length > 0 ? [`--v8-flags=${v8.join(",")}`, ...rest] : rest;
}

/** What a server process that ran to its end printed, and its exit code. */
export interface ServerRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `server.ts` with `args` until it exits by itself, e.g. `--help` or flags it refuses.
 *
 * @param args Server flags.
 * @returns Its exit code and output.
 */
export async function runServer(args: string[]): Promise<ServerRun> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-net", "--allow-env", "--allow-read", SERVER, ...args],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** How much of the server's stderr is kept: a long run must not grow its caller's memory. */
const STDERR_TAIL = 200_000;

/**
 * Starts a server process with `args` (plus `--port 0` unless a port is given) and resolves once
 * it listens.
 *
 * @param args Server flags.
 * @param options Script and environment.
 * @returns The running server process.
 */
export async function spawnServer(
  args: string[] = [],
  options: SpawnServerOptions = {},
): Promise<ServerProcess> {
  const flags = args.includes("--port") ? args : ["--port", "0", ...args];
  const child = new Deno.Command(options.task ? "setsid" : Deno.execPath(), {
    args: options.task ? [Deno.execPath(), "task", "--quiet", "server", ...flags] : [
      "run",
      "--no-prompt",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write", // --db files, as the server task allows
      ...withServerV8Flags(options.denoFlags ?? []),
      options.script ?? SERVER,
      ...flags,
    ],
    cwd: options.task ? ROOT : undefined,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  let errText = "";
  const decoder = new TextDecoder();
  const errDone = (async () => {
    for await (const chunk of child.stderr) {
      errText += decoder.decode(chunk, { stream: true });
      if (errText.length > STDERR_TAIL) errText = errText.slice(-STDERR_TAIL / 2);
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
  // Keep draining stdout so the child never blocks on a full pipe.
  const outDone = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  let status: Promise<Deno.CommandStatus> | undefined;
  async function stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    if (!status) {
      try {
        // setsid made the child the leader of a new process group: its id is the group's.
        if (options.task) Deno.kill(-child.pid, signal);
        else child.kill(signal);
      } catch {
        // Already exited.
      }
      status = Promise.all([child.status, outDone, errDone]).then(([s]) => s);
    }
    return await status;
  }
  return {
    address: address!,
    dashboard: /dashboard on (\S+)/.exec(out)?.[1],
    startup: out,
    child,
    pid: child.pid,
    stderr: () => errText,
    stop,
    async [Symbol.asyncDispose]() {
      await stop("SIGKILL");
    },
  };
}
