/**
 * The server's configuration from its command line and environment: every flag parsed and checked
 * (numbers, durations, `--fault` rules, the credentials file, TLS files and the token read) before
 * anything starts, so a bad value changes nothing. A refusal is a {@linkcode UsageError} whose
 * message names the flag and the fix; `server.ts` prints it in one line and exits 2.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { LOG_LEVELS, type LogLevelName } from "../runtime/logging.ts";
import { isLoopbackHost } from "../grpc/auth.ts";
import { readTlsFiles, type TlsOptions } from "../grpc/tls.ts";
import { parseCount, parseDuration } from "../engine/retention.ts";
import { type TimingProfile, TIMINGS } from "../provider/fake_timing.ts";
import { type FaultRule, parseFault } from "../provider/fault_flag.ts";
import type { SshRunnerOptions } from "../provider/ssh.ts";
import { type CredentialBook, loadCredentials } from "../provider/credentials.ts";
import { netbootBaseUrl } from "../provider/netboot.ts";

/** A command line the server refuses; the message names the flag and the fix. */
export class UsageError extends Error {
  /** @param message What is wrong and how to fix it. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What the server runs with. */
export interface ServerConfig {
  /** `--host`. */
  host: string;
  /** `--port` (0: a free one). */
  port: number;
  /** `--log-level`. */
  level: LogLevelName;
  /** `--retain-operations` and `--retain-for`. */
  retention: { maxOperations: number; maxAgeMs: number };
  /** `--timing` (or `--slow`). */
  timing: TimingProfile;
  /** `--fault` rules. */
  faults: FaultRule[];
  /** `--max-watchers`. */
  maxWatchers: number;
  /** `--bmc-concurrency`. */
  bmcConcurrency: number;
  /** `--http-advertise-url`, checked. */
  advertiseUrl: string | undefined;
  /** `--bmc-credentials`, loaded. */
  credentials: CredentialBook | undefined;
  /** `--ssh-known-hosts` and `--ssh-host-key-policy`; none without a known-hosts file. */
  sshOptions: SshRunnerOptions | undefined;
  /** `--http-port`; none when the HTTP surface is off. */
  httpPort: number | undefined;
  /** `--tls-cert`, `--tls-key`, `--client-ca` (or their `BMDEMO_` variables), read. */
  tls: TlsOptions | undefined;
  /** `--auth-token-file` (or `BMDEMO_AUTH_TOKEN`), read; never logged. */
  authToken: string | undefined;
  /** `--db` (or `BMDEMO_DB`). */
  dbPath: string | undefined;
  /** False with `--no-metrics`. */
  metrics: boolean;
}

/** What the command line asks for. */
export type ServerCommand =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "serve"; config: ServerConfig };

function usage(message: string): never {
  throw new UsageError(message);
}

/**
 * Reads the server's command line.
 *
 * @param args The arguments (`Deno.args`).
 * @returns Help, version, or the configuration to serve with.
 * @throws {UsageError} A flag is unknown, malformed, contradicts another, or names a file that
 * cannot be read.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const command = await readServerCommand(["--port", "0", "--timing", "zero"]);
 * assert.equal(command.kind === "serve" && command.config.timing, "zero");
 * ```
 */
export async function readServerCommand(args: string[]): Promise<ServerCommand> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        port: { type: "string", default: "50051" },
        host: { type: "string", default: "127.0.0.1" },
        slow: { type: "boolean", default: false },
        timing: { type: "string" },
        "log-level": { type: "string", default: "info" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "client-ca": { type: "string" },
        "auth-token-file": { type: "string" },
        "insecure-expose": { type: "boolean", default: false },
        db: { type: "string" },
        "retain-operations": { type: "string", default: "10000" },
        "retain-for": { type: "string", default: "168h" },
        "max-watchers": { type: "string", default: "1000" },
        "http-port": { type: "string" },
        fault: { type: "string", multiple: true, default: [] },
        "bmc-credentials": { type: "string" },
        "bmc-concurrency": { type: "string", default: "4" },
        "http-advertise-url": { type: "string" },
        "ssh-known-hosts": { type: "string" },
        "ssh-host-key-policy": { type: "string", default: "accept-new" },
        "no-metrics": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
        version: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    usage(`--port must be a whole number from 0 to 65535: got "${values.port}"`);
  }
  const level = values["log-level"] as LogLevelName;
  if (!LOG_LEVELS.includes(level)) {
    usage(`--log-level must be one of ${LOG_LEVELS.join(", ")}: got "${values["log-level"]}"`);
  }
  let retention: { maxOperations: number; maxAgeMs: number } | undefined;
  try {
    retention = {
      maxOperations: parseCount(values["retain-operations"], "--retain-operations"),
      maxAgeMs: parseDuration(values["retain-for"], "--retain-for"),
    };
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const timing = parseTiming(values.timing, values.slow);
  let faults: FaultRule[] = [];
  try {
    faults = values.fault.map(parseFault);
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const maxWatchers = Number(values["max-watchers"]);
  if (!Number.isInteger(maxWatchers) || maxWatchers < 1) {
    usage(`--max-watchers must be a whole number of at least 1: got "${values["max-watchers"]}"`);
  }
  const bmcConcurrency = Number(values["bmc-concurrency"]);
  if (!Number.isInteger(bmcConcurrency) || bmcConcurrency < 1) {
    usage(
      `--bmc-concurrency must be a whole number of at least 1: got "${values["bmc-concurrency"]}"`,
    );
  }
  let advertiseUrl: string | undefined;
  let credentials: CredentialBook | undefined;
  try {
    const flag = values["http-advertise-url"];
    advertiseUrl = flag === undefined ? undefined : netbootBaseUrl({ advertiseUrl: flag });
    const file = values["bmc-credentials"];
    credentials = file === undefined ? undefined : await loadCredentials(file);
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const policy = values["ssh-host-key-policy"];
  if (policy !== "accept-new" && policy !== "strict") {
    usage(`--ssh-host-key-policy must be accept-new or strict: got "${policy}"`);
  }
  const knownHosts = values["ssh-known-hosts"];
  const sshOptions: SshRunnerOptions | undefined = knownHosts === undefined
    ? undefined
    : { knownHostsFile: resolve(knownHosts), hostKeyPolicy: policy };
  let httpPort: number | undefined;
  if (values["http-port"] !== undefined) {
    httpPort = Number(values["http-port"]);
    if (
      values["http-port"].trim() === "" || !Number.isInteger(httpPort) || httpPort < 0 ||
      httpPort > 65535
    ) {
      usage(`--http-port must be a whole number from 0 to 65535: got "${values["http-port"]}"`);
    }
  }
  const env = (name: string): string | undefined => Deno.env.get(name) || undefined;
  let tls: TlsOptions | undefined;
  let authToken: string | undefined;
  try {
    tls = await readTlsFiles({
      cert: values["tls-cert"] ?? env("BMDEMO_TLS_CERT"),
      key: values["tls-key"] ?? env("BMDEMO_TLS_KEY"),
      clientCa: values["client-ca"] ?? env("BMDEMO_CLIENT_CA"),
    });
    authToken = await readToken(values["auth-token-file"]);
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  if (
    !isLoopbackHost(values.host) && authToken === undefined && tls?.clientCa === undefined &&
    !values["insecure-expose"]
  ) {
    usage(
      `refusing to listen on non-loopback host "${values.host}" without --auth-token-file ` +
        `(or BMDEMO_AUTH_TOKEN, or --client-ca): anyone on the network could drive the ` +
        `machines; pass --insecure-expose to do it anyway`,
    );
  }
  if (httpPort !== undefined && tls?.clientCa !== undefined && authToken === undefined) {
    usage(
      `--http-port with --client-ca needs a token (--auth-token-file or BMDEMO_AUTH_TOKEN): ` +
        `the HTTP surface does not ask browsers for client certificates`,
    );
  }
  return {
    kind: "serve",
    config: {
      host: values.host,
      port,
      level,
      retention,
      timing,
      faults,
      maxWatchers,
      bmcConcurrency,
      advertiseUrl,
      credentials,
      sshOptions,
      httpPort,
      tls,
      authToken,
      dbPath: values.db ?? env("BMDEMO_DB"),
      metrics: !values["no-metrics"],
    },
  };
}

/** The timing profile from `--timing`, or `--slow` (its alias); exits 2 when they disagree. */
function parseTiming(flag: string | undefined, slow: boolean): TimingProfile {
  const profiles = Object.keys(TIMINGS);
  if (flag !== undefined && !profiles.includes(flag)) {
    usage(`--timing must be one of ${profiles.join(", ")}: got "${flag}"`);
  }
  if (slow && flag !== undefined && flag !== "slow") {
    usage(`--slow is --timing slow; it contradicts --timing ${flag}: pass only one of them`);
  }
  return (flag ?? (slow ? "slow" : "normal")) as TimingProfile;
}

/** The token from `--auth-token-file`, else `BMDEMO_AUTH_TOKEN`; never logged. */
async function readToken(file: string | undefined): Promise<string | undefined> {
  const token = file === undefined
    ? Deno.env.get("BMDEMO_AUTH_TOKEN")
    : await Deno.readTextFile(file).catch((error) => {
      throw new Error(
        `--auth-token-file: cannot read "${file}": ${
          error instanceof Error ? error.message : error
        }`,
      );
    });
  if (token === undefined || (file === undefined && token === "")) return undefined;
  if (token.trim() === "") {
    throw new Error(
      file === undefined ? "BMDEMO_AUTH_TOKEN is blank" : `--auth-token-file "${file}" is empty`,
    );
  }
  return token.trim();
}
