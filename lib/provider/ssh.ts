/**
 * The SSH driver behind `executeSshCommand`: runs a script on a machine through the system `ssh`
 * client (OpenSSH) and streams its output into the operation log line by line as it arrives.
 * The routing provider calls {@linkcode SshRunner.run} when a machine has `spec.ssh_endpoint`
 * and its credential has `ssh_user` and `ssh_key_file`; this module knows nothing of
 * credentials files, plans or operations.
 *
 * A script reference runs as `<scriptsDir>/<scriptRef>` on the machine with its arguments as
 * single-quoted `key=value` words (see `ssh_command.ts`). Every failure is an
 * {@linkcode SshError} whose `kind` says what went wrong and whose `permanent` flag says whether
 * retrying can help: refused connections and timeouts are transient; authentication, host key and
 * configuration failures are permanent.
 *
 * @example Run a script (needs a reachable machine, so not run as a test)
 * ```ts ignore
 * import { createSshRunner } from "./ssh.ts";
 *
 * const ssh = createSshRunner({ knownHostsFile: "/var/lib/bmdemo/ssh_known_hosts" });
 * const call = { operationId: "op-1", signal: new AbortController().signal, log: console.log };
 * await ssh.run(call, {
 *   endpoint: "10.0.0.11:22",
 *   user: "root",
 *   keyFile: "/etc/bmdemo/id_ed25519",
 *   machineId: "machine-1",
 * }, { scriptRef: "drain_node.sh", args: { timeout: "300" } });
 * ```
 *
 * @module
 */

import { type LogStream, type ProviderCall, ProviderError, type SshCommandOptions } from "./mod.ts";
import { parseSshEndpoint, remoteCommand, sshArguments, type SshEndpoint } from "./ssh_command.ts";

/** Options of {@linkcode createSshRunner}. */
export interface SshRunnerOptions {
  /**
   * The server's one known-hosts file (absolute, no whitespace). Its directory must exist; with
   * `hostKeyPolicy: "strict"` the file must hold every machine's key.
   */
  knownHostsFile: string;
  /**
   * `accept-new` records the key of a host seen for the first time and refuses a changed key;
   * `strict` refuses any host whose key is not already in `knownHostsFile`.
   *
   * @default {"accept-new"}
   */
  hostKeyPolicy?: "accept-new" | "strict";
  /**
   * Seconds to wait for the TCP connection and SSH handshake (`ConnectTimeout`).
   *
   * @default {10}
   */
  connectTimeoutSeconds?: number;
  /**
   * Seconds between keep-alive probes (`ServerAliveInterval`); three unanswered probes end a
   * connection to a machine that went away.
   *
   * @default {15}
   */
  serverAliveIntervalSeconds?: number;
  /**
   * Absolute directory on the machines that holds the scripts a plan names.
   *
   * @default {"/usr/local/lib/bmdemo/scripts"}
   */
  scriptsDir?: string;
  /**
   * Longest output line logged, in characters; a longer line is cut and says so.
   *
   * @default {4096}
   */
  maxLineLength?: number;
  /**
   * Most output lines (stdout and stderr together) logged per run; the rest are counted.
   *
   * @default {10000}
   */
  maxLines?: number;
  /**
   * Milliseconds between SIGTERM and SIGKILL when a run is aborted.
   *
   * @default {2000}
   */
  killGraceMs?: number;
  /**
   * The ssh client program.
   *
   * @default {"ssh"}
   */
  sshPath?: string;
}

/** The machine a command runs on and the credential to log in with. */
export interface SshTarget {
  /** `spec.ssh_endpoint`: `host:port`, `host` (port 22) or `[ipv6]:port`. */
  readonly endpoint: string;
  /** `ssh_user` of the credential. */
  readonly user: string;
  /** `ssh_key_file` of the credential: an absolute path to a private key readable only by its owner. */
  readonly keyFile: string;
  /** Machine id, for log lines and errors. */
  readonly machineId: string;
}

/** Runs scripts on machines over SSH. */
export interface SshRunner {
  /**
   * Runs `command` on `target`, logging ssh's progress and the script's stdout and stderr lines
   * (prefixed `[ssh] `) through `call.log` as they arrive.
   *
   * @param call Operation context; aborting its signal kills ssh and rejects with the reason.
   * @param target Endpoint, user, key file and machine id.
   * @param command Script reference and arguments.
   * @returns Resolves when the script exits with code 0.
   * @throws {SshError} When the input is invalid, ssh cannot connect or log in, or the script
   * exits non-zero.
   */
  run(call: ProviderCall, target: SshTarget, command: SshCommandOptions): Promise<void>;
}

/**
 * What went wrong, as {@linkcode SshError.kind}:
 * - `invalid`: the script reference, an argument, the endpoint or the user is not allowed;
 * - `config`: the key file, the known-hosts file or the ssh client is missing or unusable;
 * - `refused`, `timeout`, `unreachable`: the machine did not answer (transient);
 * - `disconnected`: the connection closed before the script ended (transient);
 * - `auth`: the machine refused the user and key;
 * - `host_key`: the machine's host key is unknown (strict policy) or changed;
 * - `exit`: the script exited non-zero ({@linkcode SshError.exitCode});
 * - `ssh`: ssh failed without saying why (exit code 255, or killed by a signal).
 */
export type SshErrorKind =
  | "invalid"
  | "config"
  | "refused"
  | "timeout"
  | "unreachable"
  | "disconnected"
  | "auth"
  | "host_key"
  | "exit"
  | "ssh";

const PERMANENT: ReadonlySet<SshErrorKind> = new Set(["invalid", "config", "auth", "host_key"]);

/** Options of {@linkcode SshError}. */
export interface SshErrorOptions extends ErrorOptions {
  /** The script's exit code, for `exit` (and `ssh`: 255). */
  exitCode?: number;
}

/** A failed SSH run: one kind, and whether retrying can ever help. */
export class SshError extends ProviderError {
  /** What went wrong. */
  readonly kind: SshErrorKind;
  /**
   * True when retrying unchanged cannot succeed (`invalid`, `config`, `auth`, `host_key`): a
   * routing provider should fail the step without retries. `exit` and `ssh` are not permanent:
   * the plan's retry policy decides, as for any step.
   */
  declare readonly permanent: boolean;
  /** Exit code of the script (or ssh), when it exited. */
  readonly exitCode: number | undefined;

  /**
   * @param kind What went wrong.
   * @param message What happened and what to do about it.
   * @param options Exit code and cause.
   */
  constructor(kind: SshErrorKind, message: string, options: SshErrorOptions = {}) {
    super(message, { ...options, permanent: PERMANENT.has(kind) });
    this.name = "SshError";
    this.kind = kind;
    this.exitCode = options.exitCode;
  }
}

const DEFAULT_SCRIPTS_DIR = "/usr/local/lib/bmdemo/scripts";
const SCRIPTS_DIR = /^\/[A-Za-z0-9_.\/-]*$/;
/** ssh's own exit code for its failures (connect, host key, auth, protocol). */
const SSH_FAILED = 255;
/** ssh's own message lines logged and searched: its host-key banner is about 17 lines. */
const SSH_LOG_LINES = 40;
/** Most of ssh's message file read, from its end. */
const SSH_LOG_BYTES = 16 * 1024;

/**
 * Creates a runner that executes scripts over the system `ssh` client. Needs `--allow-run` for
 * the ssh program and `--allow-read` for the key and known-hosts files.
 *
 * @param options Known-hosts file and policy, timeouts, scripts directory and output limits.
 * @returns The runner.
 * @throws {RangeError} When an option is out of range: the message names it and its value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSshRunner } from "./ssh.ts";
 *
 * assert.throws(
 *   () => createSshRunner({ knownHostsFile: "/tmp/kh", connectTimeoutSeconds: 0 }),
 *   /connectTimeoutSeconds/,
 * );
 * ```
 */
export function createSshRunner(options: SshRunnerOptions): SshRunner {
  const {
    knownHostsFile,
    hostKeyPolicy = "accept-new",
    connectTimeoutSeconds = 10,
    serverAliveIntervalSeconds = 15,
    scriptsDir = DEFAULT_SCRIPTS_DIR,
    maxLineLength = 4096,
    maxLines = 10_000,
    killGraceMs = 2000,
    sshPath = "ssh",
  } = options;
  if (!knownHostsFile.startsWith("/") || /[%\s]/.test(knownHostsFile)) {
    throw new RangeError(
      `Cannot use knownHostsFile ${JSON.stringify(knownHostsFile)}: it must be an absolute ` +
        "path without whitespace or %",
    );
  }
  if (hostKeyPolicy !== "accept-new" && hostKeyPolicy !== "strict") {
    throw new RangeError(
      `Cannot use hostKeyPolicy ${JSON.stringify(hostKeyPolicy)}: use "accept-new" or "strict"`,
    );
  }
  if (!SCRIPTS_DIR.test(scriptsDir)) {
    throw new RangeError(
      `Cannot use scriptsDir ${JSON.stringify(scriptsDir)}: it must be an absolute path of ` +
        "letters, digits and _ . / -",
    );
  }
  for (
    const [name, value, min] of [
      ["connectTimeoutSeconds", connectTimeoutSeconds, 1],
      ["serverAliveIntervalSeconds", serverAliveIntervalSeconds, 1],
      ["maxLineLength", maxLineLength, 80],
      ["maxLines", maxLines, 1],
      ["killGraceMs", killGraceMs, 0],
    ] as const
  ) {
    if (!Number.isSafeInteger(value) || value < min) {
      throw new RangeError(`Cannot use ${name} ${value}: it must be an integer of at least ${min}`);
    }
  }

  async function run(
    call: ProviderCall,
    target: SshTarget,
    command: SshCommandOptions,
  ): Promise<void> {
    call.signal.throwIfAborted();
    let endpoint: SshEndpoint;
    let args: string[];
    try {
      endpoint = parseSshEndpoint(target.endpoint);
      args = sshArguments({
        endpoint,
        user: target.user,
        keyFile: target.keyFile,
        knownHostsFile,
        hostKeyPolicy,
        connectTimeoutSeconds,
        serverAliveIntervalSeconds,
        command: remoteCommand(scriptsDir, command),
      });
    } catch (error) {
      throw new SshError("invalid", `${(error as Error).message} (machine ${target.machineId})`, {
        cause: error,
      });
    }
    const say = (text: string, stream: LogStream = "stdout"): void =>
      call.log(`[ssh] ${text}`, stream);
    say(`Executing script: ${command.scriptRef}`);
    say(`Machine: ${target.machineId} (endpoint: ${target.endpoint})`);
    const keys = Object.keys(command.args ?? {}).sort();
    if (keys.length > 0) {
      say("Arguments:");
      for (const key of keys) say(`  ${key}=${command.args?.[key]}`);
    }
    await checkFiles(target, knownHostsFile, hostKeyPolicy);
    call.signal.throwIfAborted();
    say(`Connecting to ${target.user}@${target.endpoint}...`);
    say(`Running ${args[args.length - 1]}`);
    const result = await runSsh(sshPath, args, call, { maxLineLength, maxLines, killGraceMs, say });
    if (result.code === 0 && result.signal === null) {
      say("Script completed with exit code 0");
      return;
    }
    const error = explain(result, {
      target,
      endpoint,
      scriptRef: command.scriptRef,
      knownHostsFile,
    });
    // As the fake provider says it; the step's error (logged by the executor) has the details.
    if (error.kind === "exit") say(`ERROR: Script failed with exit code ${result.code}`, "stderr");
    throw error;
  }

  return { run };
}

/** Checks the files ssh needs, so that a missing one is a clear error rather than ssh's. */
async function checkFiles(
  target: SshTarget,
  knownHostsFile: string,
  hostKeyPolicy: "accept-new" | "strict",
): Promise<void> {
  const key = await statOrWhy(target.keyFile);
  if (typeof key === "string" || !key.isFile) {
    throw new SshError(
      "config",
      `Cannot use SSH key file ${target.keyFile} for machine ${target.machineId}: ` +
        `${typeof key === "string" ? key : "it is not a file"}; fix ssh_key_file in the ` +
        "credentials file",
    );
  }
  const strict = hostKeyPolicy === "strict";
  const known = strict ? knownHostsFile : knownHostsFile.slice(0, knownHostsFile.lastIndexOf("/"));
  const found = await statOrWhy(known || "/");
  if (typeof found === "string") {
    throw new SshError(
      "config",
      strict
        ? `Cannot check host keys: known-hosts file ${known} ${found} and hostKeyPolicy is ` +
          "strict; seed it with the machines' keys (ssh-keyscan -p PORT HOST >> FILE, after " +
          "checking the fingerprints)"
        : `Cannot record host keys: the directory ${known} of the known-hosts file ${found}; ` +
          "create it",
    );
  }
}

async function statOrWhy(path: string): Promise<Deno.FileInfo | string> {
  try {
    return await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "does not exist";
    if (error instanceof Deno.errors.PermissionDenied) return "is not readable by the server";
    if (error instanceof Deno.errors.NotCapable) return "is outside the server's --allow-read";
    throw error;
  }
}

/** Limits and logger of one ssh process's output. */
interface OutputLimits {
  maxLineLength: number;
  maxLines: number;
  killGraceMs: number;
  say(text: string, stream?: LogStream): void;
}

/** How the ssh process ended. */
interface SshResult {
  code: number;
  signal: Deno.Signal | null;
  /** The script's last non-empty stderr line. */
  lastStderr: string | undefined;
  /** ssh's own messages (its `-E` log), e.g. a refused connection or a newly recorded host key. */
  sshLog: string[];
}

/**
 * Runs ssh, streaming the script's output lines; on abort kills ssh and rejects with the reason
 * once it has exited. ssh's own messages go to a temporary file (`-E`), apart from the script's
 * stderr, so that they are told apart exactly: a script exiting 255 is not mistaken for ssh.
 */
async function runSsh(
  program: string,
  args: string[],
  call: ProviderCall,
  limits: OutputLimits,
): Promise<SshResult> {
  const logFile = await Deno.makeTempFile({ prefix: "bmdemo_ssh_", suffix: ".log" }).catch(
    (error) => {
      throw new SshError(
        "config",
        `Cannot create a temporary file for ssh's messages: ${errorMessage(error)}; give the ` +
          "server --allow-write to the temporary directory (TMPDIR)",
        { cause: error },
      );
    },
  );
  try {
    const result = await spawnSsh(program, ["-E", logFile, ...args], call, limits);
    const sshLog = await readSshLog(logFile, limits.maxLineLength);
    for (const line of sshLog) limits.say(`ssh: ${line.replace(/^ssh: /, "")}`, "stderr");
    return { ...result, sshLog };
  } finally {
    await Deno.remove(logFile).catch(() => {});
  }
}

async function spawnSsh(
  program: string,
  args: string[],
  call: ProviderCall,
  limits: OutputLimits,
): Promise<Omit<SshResult, "sshLog">> {
  // Checked in the same synchronous run as the spawn and the listener: no abort falls between.
  call.signal.throwIfAborted();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // No agent socket, askpass or locale from the server's environment reaches ssh.
      clearEnv: true,
      env: { LC_ALL: "C" },
    }).spawn();
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "it is not installed; install the OpenSSH client (apt-get install openssh-client)"
      : error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ? `the server may not run it; start the server with --allow-run=${program}`
      : errorMessage(error);
    throw new SshError("config", `Cannot run ${program}: ${why}`, { cause: error });
  }
  const kill = (signal: Deno.Signal): void => {
    try {
      child.kill(signal);
    } catch {
      // Already exited.
    }
  };
  let grace: ReturnType<typeof setTimeout> | undefined;
  const onAbort = (): void => {
    kill("SIGTERM");
    grace = setTimeout(() => kill("SIGKILL"), limits.killGraceMs);
  };
  call.signal.addEventListener("abort", onAbort, { once: true });
  const output = budget(limits);
  let lastStderr: string | undefined;
  let broken: unknown;
  // A failing log ends the run, but only after ssh has exited: never a process left behind.
  const pump = (stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) =>
    pumpLines(stream, limits.maxLineLength, onLine).catch((error) => {
      broken ??= error;
      kill("SIGKILL");
    });
  try {
    const [status] = await Promise.all([
      child.status,
      pump(child.stdout, (line) => output.line(line, "stdout")),
      pump(child.stderr, (line) => {
        output.line(line, "stderr");
        if (line.trim() !== "") lastStderr = line;
      }),
    ]);
    if (call.signal.aborted) throw call.signal.reason;
    if (broken !== undefined) throw broken;
    output.finish();
    return { code: status.code, signal: status.signal, lastStderr };
  } finally {
    call.signal.removeEventListener("abort", onAbort);
    clearTimeout(grace);
  }
}

/** ssh's own messages: the last {@linkcode SSH_LOG_LINES} lines, each cut at `maxLength`. */
async function readSshLog(path: string, maxLength: number): Promise<string[]> {
  using file = await Deno.open(path);
  const { size } = await file.stat();
  const take = Math.min(size, SSH_LOG_BYTES);
  await file.seek(size - take, Deno.SeekMode.Start);
  const bytes = new Uint8Array(take);
  let read = 0;
  while (read < take) {
    const n = await file.read(bytes.subarray(read));
    if (n === null) break;
    read += n;
  }
  return new TextDecoder().decode(bytes.subarray(0, read)).split("\n")
    .map((line) => line.replace(/\r$/, ""))
    .filter((line) => line.trim() !== "")
    .slice(-SSH_LOG_LINES)
    .map((line) => line.length > maxLength ? `${line.slice(0, maxLength)} [line cut]` : line);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Logs at most `maxLines` lines, then counts the rest and says so. */
function budget(limits: OutputLimits): {
  line(text: string, stream: LogStream): void;
  finish(): void;
} {
  let logged = 0;
  let dropped = 0;
  return {
    line(text, stream) {
      if (logged < limits.maxLines) {
        logged++;
        limits.say(text, stream);
        return;
      }
      if (dropped === 0) {
        limits.say(`Output cut: only the first ${limits.maxLines} lines are logged`, "stderr");
      }
      dropped++;
    },
    finish() {
      if (dropped > 0) limits.say(`${dropped} more output lines were not logged`, "stderr");
    },
  };
}

/**
 * Calls `onLine` for each line of `stream` as soon as its newline arrives (and for a last line
 * without one). A line longer than `maxLength` is cut there, and says how much was dropped;
 * memory stays bounded by `maxLength` whatever the stream sends.
 */
async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  maxLength: number,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  let cut = 0;
  const emit = (): void => {
    const line = pending.endsWith("\r") ? pending.slice(0, -1) : pending;
    onLine(cut > 0 ? `${line} [line cut: ${cut} more characters]` : line);
    pending = "";
    cut = 0;
  };
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    let start = 0;
    for (;;) {
      const newline = text.indexOf("\n", start);
      const piece = text.slice(start, newline < 0 ? undefined : newline);
      const room = Math.max(0, maxLength - pending.length);
      pending += piece.slice(0, room);
      cut += Math.max(0, piece.length - room);
      if (newline < 0) break;
      emit();
      start = newline + 1;
    }
  }
  if (pending !== "" || cut > 0) emit();
}

/** What {@linkcode explain} names in its messages. */
interface FailureContext {
  target: SshTarget;
  endpoint: SshEndpoint;
  scriptRef: string;
  knownHostsFile: string;
}

/**
 * Turns a failed run into an error. ssh exits 255 for its own failures and writes why into its
 * `-E` log; a log without a failure means the script ran and exited 255 itself. ssh's messages
 * are recognised by their wording in OpenSSH 9.
 */
function explain(result: SshResult, context: FailureContext): SshError {
  const { target, endpoint, scriptRef, knownHostsFile } = context;
  const machine = `${target.endpoint} (machine ${target.machineId})`;
  if (result.signal !== null) {
    return new SshError("ssh", `ssh to ${machine} was killed by ${result.signal}`);
  }
  const scriptFailed = (): SshError => {
    // ssh also exits 255 when the script was killed by a signal.
    const also = result.code === SSH_FAILED ? " (or was killed by a signal)" : "";
    return new SshError(
      "exit",
      `Script ${scriptRef} failed on ${machine} with exit code ${result.code}${also}: ` +
        (result.lastStderr ?? "it wrote nothing to stderr"),
      { exitCode: result.code },
    );
  };
  if (result.code !== SSH_FAILED) return scriptFailed();
  const find = (pattern: RegExp): string | undefined =>
    result.sshLog.find((line) => pattern.test(line));
  const hostPattern = endpoint.port === 22 ? endpoint.host : `[${endpoint.host}]:${endpoint.port}`;
  if (find(/REMOTE HOST IDENTIFICATION HAS CHANGED|host key for .* has changed/i)) {
    return new SshError(
      "host_key",
      `The host key of ${machine} differs from the one recorded in ${knownHostsFile}: if the ` +
        `machine was reinstalled, remove the old key (ssh-keygen -f ${knownHostsFile} -R ` +
        `'${hostPattern}') and retry; otherwise the connection may be intercepted`,
    );
  }
  if (find(/Host key verification failed|host key is known for/i)) {
    return new SshError(
      "host_key",
      `The host key of ${machine} is not in ${knownHostsFile} and hostKeyPolicy is strict: add ` +
        `it (ssh-keyscan -p ${endpoint.port} ${endpoint.host} >> ${knownHostsFile}, after ` +
        "checking its fingerprint)",
    );
  }
  const unusableKey = find(/UNPROTECTED PRIVATE KEY FILE|^Load key .*: /);
  if (unusableKey) {
    const fix = /UNPROTECTED|bad permissions/.test(unusableKey)
      ? `group or others can read it; run chmod 600 ${target.keyFile}`
      : `${unusableKey.replace(/^Load key "[^"]*": /, "")}; point ssh_key_file at a private key`;
    return new SshError(
      "config",
      `ssh ignored key file ${target.keyFile} for ${machine}: ${fix}`,
    );
  }
  const denied = find(/Permission denied \(/);
  if (denied) {
    return new SshError(
      "auth",
      `${machine} refused user ${target.user} with key ${target.keyFile} (${denied}): add ` +
        "the public key to the user's authorized_keys on the machine, or fix ssh_user and " +
        "ssh_key_file in the credentials file (a key with a passphrase cannot be used)",
    );
  }
  const refused = find(/Connection refused/);
  if (refused) {
    return new SshError(
      "refused",
      `Cannot connect to ${machine}: the connection was refused; is sshd listening on port ` +
        `${endpoint.port}? (${refused})`,
    );
  }
  const timedOut = find(/timed out|not responding/i);
  if (timedOut) {
    return new SshError("timeout", `Cannot reach ${machine}: ${timedOut}`);
  }
  const unreachable = find(/Could not resolve hostname|No route to host|Network is unreachable/);
  if (unreachable) {
    return new SshError("unreachable", `Cannot reach ${machine}: ${unreachable}`);
  }
  const closed = find(/closed by|Connection reset|Broken pipe|kex_exchange_identification/);
  if (closed) {
    return new SshError(
      "disconnected",
      `Lost the connection to ${machine} (the script may have started): ${closed}`,
    );
  }
  // The one message ssh writes to stderr rather than to its log (OpenSSH's clientloop.c).
  if (result.lastStderr && /^Connection to \S+ closed by remote host\.$/.test(result.lastStderr)) {
    return new SshError(
      "disconnected",
      `Lost the connection to ${machine} (the script may have started): ${result.lastStderr}`,
    );
  }
  const unexplained = result.sshLog.findLast((line) => !/^Warning: Permanently added /.test(line));
  if (unexplained === undefined) return scriptFailed();
  return new SshError("ssh", `ssh to ${machine} failed: ${unexplained}`, {
    exitCode: SSH_FAILED,
  });
}
