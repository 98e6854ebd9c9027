/**
 * What the SSH driver sends, as pure functions: the machine's `spec.ssh_endpoint` parsed into a
 * host and port, the remote command built from a script reference and its `key=value`
 * arguments (each single-quoted, so no argument can inject shell), and the `ssh` client's
 * argument list (batch mode, one known-hosts file, no agent, no forwarding, no tty). No I/O:
 * `ssh.ts` runs what these functions build.
 *
 * @example The remote command of a script with arguments
 * ```ts
 * import assert from "node:assert/strict";
 * import { remoteCommand } from "./ssh_command.ts";
 *
 * const command = remoteCommand("/opt/bmdemo/scripts", {
 *   scriptRef: "drain_node.sh",
 *   args: { timeout: "300", note: "it's done" },
 * });
 * assert.equal(command, `'/opt/bmdemo/scripts/drain_node.sh' 'note=it'\\''s done' 'timeout=300'`);
 * ```
 *
 * @module
 */

import type { SshCommandOptions } from "./mod.ts";

/** A parsed `spec.ssh_endpoint`. */
export interface SshEndpoint {
  /** Host name or IP address (IPv6 without brackets). */
  readonly host: string;
  /** TCP port. */
  readonly port: number;
}

/** Port used when `spec.ssh_endpoint` names none. */
export const DEFAULT_SSH_PORT = 22;
/** Most arguments one command may have. */
export const MAX_SSH_ARGS = 64;
/** Longest argument value, in characters. */
export const MAX_SSH_ARG_VALUE = 4096;

const HOST_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;
const PORT = /^[0-9]{1,5}$/;
// Path segments that cannot start with a dot (so never `..`) or a dash (never an option).
const SCRIPT_REF = /^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$/;
const MAX_SCRIPT_REF = 255;
const ARG_KEY = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
const USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
// Control characters would break the log's one-line-per-argument form and non-POSIX shells.
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/**
 * Parses `host:port`, `host` (port 22), `[ipv6]:port` or `[ipv6]`.
 *
 * @param endpoint The machine's `spec.ssh_endpoint`.
 * @returns Host and port.
 * @throws {RangeError} When the endpoint is empty, the host is not a host name or IP address, or
 * the port is not 1-65535; the message names `spec.ssh_endpoint` and its value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSshEndpoint } from "./ssh_command.ts";
 *
 * assert.deepEqual(parseSshEndpoint("10.0.0.11:2222"), { host: "10.0.0.11", port: 2222 });
 * assert.deepEqual(parseSshEndpoint("[::1]"), { host: "::1", port: 22 });
 * assert.throws(() => parseSshEndpoint("-oProxyCommand=x:22"), RangeError);
 * ```
 */
export function parseSshEndpoint(endpoint: string): SshEndpoint {
  const bad = (why: string): RangeError =>
    new RangeError(
      `Cannot use spec.ssh_endpoint ${JSON.stringify(endpoint)}: ${why}; ` +
        "write host:port, e.g. 10.0.0.11:22 or [fd00::11]:22",
    );
  if (endpoint === "") throw bad("it is empty");
  let host: string;
  let portText: string | undefined;
  if (endpoint.startsWith("[")) {
    const close = endpoint.indexOf("]");
    if (close < 0) throw bad("the IPv6 address has no closing bracket");
    host = endpoint.slice(1, close);
    const rest = endpoint.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) throw bad("text follows the IPv6 address");
    portText = rest === "" ? undefined : rest.slice(1);
    if (!IPV6.test(host) || !host.includes(":")) throw bad("the host is not an IPv6 address");
  } else {
    const colon = endpoint.lastIndexOf(":");
    host = colon < 0 ? endpoint : endpoint.slice(0, colon);
    portText = colon < 0 ? undefined : endpoint.slice(colon + 1);
    if (!HOST_NAME.test(host)) throw bad("the host is not a host name or IPv4 address");
  }
  if (portText === undefined) return { host, port: DEFAULT_SSH_PORT };
  const port = PORT.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw bad("the port is not a number from 1 to 65535");
  return { host, port };
}

/**
 * Quotes `text` for a POSIX shell: single quotes around it, each `'` written as `'\''`.
 *
 * @param text Any text without NUL.
 * @returns One shell word that expands to exactly `text`.
 */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * Checks a script reference and its arguments, and builds the command line the machine's shell
 * runs: `'<scriptsDir>/<scriptRef>' 'key=value' ...`, arguments sorted by key, every word
 * single-quoted. The login shell of the SSH user must be a POSIX shell (sh, bash, dash, zsh).
 *
 * @param scriptsDir Absolute directory on the machine that holds the scripts.
 * @param command Script reference (a relative path whose segments match
 * `[A-Za-z0-9_][A-Za-z0-9_.-]*`) and arguments (keys match `[A-Za-z_][A-Za-z0-9_-]{0,63}`,
 * values have no control characters but tab and are at most 4096 characters).
 * @returns The remote command line.
 * @throws {RangeError} When the script reference, a key or a value is not allowed, or there are
 * more than {@linkcode MAX_SSH_ARGS} arguments; the message names the offending part.
 *
 * @example A script reference cannot leave the scripts directory
 * ```ts
 * import assert from "node:assert/strict";
 * import { remoteCommand } from "./ssh_command.ts";
 *
 * assert.throws(() => remoteCommand("/opt/s", { scriptRef: "../../bin/sh" }), RangeError);
 * assert.throws(() => remoteCommand("/opt/s", { scriptRef: "x.sh", args: { "a;b": "1" } }), RangeError);
 * ```
 */
export function remoteCommand(scriptsDir: string, command: SshCommandOptions): string {
  const { scriptRef, args = {} } = command;
  if (scriptRef.length > MAX_SCRIPT_REF || !SCRIPT_REF.test(scriptRef)) {
    throw new RangeError(
      `Cannot run script ${JSON.stringify(scriptRef)}: a script reference is a relative path ` +
        `of at most ${MAX_SCRIPT_REF} characters whose parts match [A-Za-z0-9_][A-Za-z0-9_.-]*, ` +
        "e.g. drain_node.sh",
    );
  }
  const keys = Object.keys(args).sort();
  if (keys.length > MAX_SSH_ARGS) {
    throw new RangeError(
      `Cannot run script ${scriptRef} with ${keys.length} arguments: at most ${MAX_SSH_ARGS} ` +
        "are allowed",
    );
  }
  const words = [shellQuote(`${scriptsDir}/${scriptRef}`)];
  for (const key of keys) {
    const value = args[key];
    if (!ARG_KEY.test(key)) {
      throw new RangeError(
        `Cannot pass argument ${JSON.stringify(key)} to ${scriptRef}: argument names match ` +
          "[A-Za-z_][A-Za-z0-9_-]{0,63}, e.g. timeout",
      );
    }
    if (value.length > MAX_SSH_ARG_VALUE || CONTROL.test(value)) {
      throw new RangeError(
        `Cannot pass argument ${key} to ${scriptRef}: its value must be at most ` +
          `${MAX_SSH_ARG_VALUE} characters without control characters (newlines, NUL); ` +
          `it has ${value.length} characters`,
      );
    }
    words.push(shellQuote(`${key}=${value}`));
  }
  return words.join(" ");
}

/** What {@linkcode sshArguments} builds the `ssh` command line from. */
export interface SshInvocation {
  /** Where the machine answers SSH. */
  readonly endpoint: SshEndpoint;
  /** Remote user (`ssh_user` of the credential). */
  readonly user: string;
  /** Private key file (`ssh_key_file` of the credential). */
  readonly keyFile: string;
  /** The one known-hosts file of this server. */
  readonly knownHostsFile: string;
  /** `accept-new` records an unknown host's key on first contact; `strict` requires it pre-seeded. */
  readonly hostKeyPolicy: "accept-new" | "strict";
  /** `ConnectTimeout`, in seconds. */
  readonly connectTimeoutSeconds: number;
  /** `ServerAliveInterval`, in seconds (3 unanswered probes end the connection). */
  readonly serverAliveIntervalSeconds: number;
  /** The remote command line ({@linkcode remoteCommand}). */
  readonly command: string;
}

/**
 * The `ssh` client's arguments: `-F /dev/null` so no user or system configuration applies, batch
 * mode (never a prompt), public-key authentication with only `keyFile` and no agent, one
 * known-hosts file, no tty, no agent or X11 or port forwarding, no connection sharing.
 *
 * @param invocation Target, credential, host-key policy, timeouts and remote command.
 * @returns The argument list (without the program name).
 * @throws {RangeError} When the user name is not a plain user name, or a file path is empty,
 * relative or holds `%` or whitespace (ssh would expand or split it).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sshArguments } from "./ssh_command.ts";
 *
 * const args = sshArguments({
 *   endpoint: { host: "10.0.0.11", port: 22 },
 *   user: "root",
 *   keyFile: "/etc/bmdemo/id_ed25519",
 *   knownHostsFile: "/var/lib/bmdemo/known_hosts",
 *   hostKeyPolicy: "accept-new",
 *   connectTimeoutSeconds: 10,
 *   serverAliveIntervalSeconds: 15,
 *   command: "'/opt/s/x.sh'",
 * });
 * assert.deepEqual(args.slice(-3), ["--", "10.0.0.11", "'/opt/s/x.sh'"]);
 * assert.ok(args.includes("BatchMode=yes"));
 * ```
 */
export function sshArguments(invocation: SshInvocation): string[] {
  const { endpoint, user, keyFile, knownHostsFile } = invocation;
  if (!USER.test(user)) {
    throw new RangeError(
      `Cannot log in as SSH user ${JSON.stringify(user)}: ssh_user must match ` +
        "[A-Za-z_][A-Za-z0-9_.-]{0,31}, e.g. root",
    );
  }
  checkSshPath("ssh_key_file", keyFile);
  checkSshPath("the known-hosts file", knownHostsFile);
  const options: Record<string, string> = {
    BatchMode: "yes",
    PreferredAuthentications: "publickey",
    IdentitiesOnly: "yes",
    IdentityAgent: "none",
    StrictHostKeyChecking: invocation.hostKeyPolicy === "strict" ? "yes" : "accept-new",
    UserKnownHostsFile: knownHostsFile,
    GlobalKnownHostsFile: "/dev/null",
    // A server offering extra keys must not rewrite the file the operator seeded.
    UpdateHostKeys: "no",
    ConnectTimeout: String(invocation.connectTimeoutSeconds),
    ServerAliveInterval: String(invocation.serverAliveIntervalSeconds),
    ServerAliveCountMax: "3",
    RequestTTY: "no",
    ForwardAgent: "no",
    ForwardX11: "no",
    ClearAllForwardings: "yes",
    ControlMaster: "no",
    ControlPath: "none",
    PermitLocalCommand: "no",
    // INFO, not ERROR: a keep-alive timeout ("Timeout, server not responding") is logged at INFO.
    LogLevel: "INFO",
  };
  const args = ["-F", "/dev/null", "-T", "-i", keyFile, "-p", String(endpoint.port), "-l", user];
  for (const [name, value] of Object.entries(options)) args.push("-o", `${name}=${value}`);
  args.push("--", endpoint.host, invocation.command);
  return args;
}

function checkSshPath(what: string, path: string): void {
  if (!path.startsWith("/") || /[%\s]/.test(path)) {
    throw new RangeError(
      `Cannot use ${what} ${JSON.stringify(path)}: it must be an absolute path without ` +
        "whitespace or %",
    );
  }
}
