/**
 * bmdemo-server: serves MachineService and OperationService over gRPC with the simulated
 * hardware provider.
 *
 *   deno task server [--port 50051] [--host 127.0.0.1] [--timing normal|slow|zero]
 *     [--log-level info]
 *     [--tls-cert <pem> --tls-key <pem> [--client-ca <pem>]] [--auth-token-file <file>]
 *     [--insecure-expose] [--db <file>] [--retain-operations N] [--retain-for DURATION]
 *     [--max-watchers <n>] [--fault STEP[:MODE][@machine-id]]... [--no-metrics] [--version]
 *
 * SIGINT or SIGTERM stops it gracefully (see `lib/grpc/server.ts`); a second signal at least
 * 1 s after the first (an earlier one is the same Ctrl+C delivered twice, see
 * `lib/runtime/stop_signals.ts`), or a stop that takes longer than 15 s, forces the exit.
 *
 * @module
 */

import { parseArgs } from "node:util";
import denoConfig from "./deno.json" with { type: "json" };
import { getLogger } from "@logtape/logtape";
import { setLogger as setGrpcJsLogger } from "@grpc/grpc-js";
import { configureLogging, LOG_LEVELS, type LogLevelName } from "./lib/runtime/logging.ts";
import { createEngine } from "./lib/engine/mod.ts";
import { denoVersionWarning, startServer } from "./lib/grpc/server.ts";
import { isLoopbackHost } from "./lib/grpc/auth.ts";
import { readTlsFiles, type TlsOptions } from "./lib/grpc/tls.ts";
import { createSqliteStore, type SqliteStore, type StoreFatalError } from "./lib/store/sqlite.ts";
import { parseCount, parseDuration } from "./lib/engine/retention.ts";
import { type TimingProfile, TIMINGS } from "./lib/provider/fake_timing.ts";
import { createFakeProvider } from "./lib/provider/fake.ts";
import { type FaultRule, parseFault, withFaults } from "./lib/provider/fault_flag.ts";
import { startHeapCollector } from "./lib/runtime/heap_collector.ts";
import { createMetrics } from "./lib/metrics/mod.ts";
import { SIGNAL_ECHO_MS, stopSignalPolicy } from "./lib/runtime/stop_signals.ts";

const HELP = `bmdemo-server - baremetal lifecycle gRPC server (MachineService + OperationService)

Usage: bmdemo-server [flags]

Flags:
  --port <n>          TCP port to listen on (default 50051; 0 picks a free port)
  --host <addr>       address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --timing <profile>  simulated hardware timing: normal (default; a reimage takes ~3.4 s),
                      slow (for live presentations; ~29 s) or zero (no delays: load tests and
                      benchmarks of the server itself)
  --slow              same as --timing slow
  --log-level <lvl>   debug | info | warn | error (default info); debug logs every RPC
  --tls-cert <pem>    serve TLS with this certificate chain (needs --tls-key; env BMDEMO_TLS_CERT)
  --tls-key <pem>     private key of --tls-cert (env BMDEMO_TLS_KEY)
  --client-ca <pem>   mutual TLS: require client certificates signed by this CA
                      (env BMDEMO_CLIENT_CA)
  --auth-token-file <file>
                      require "authorization: Bearer <token>" on every call except health;
                      the file holds the token (env BMDEMO_AUTH_TOKEN holds the token itself)
  --insecure-expose   allow a non-loopback --host without a token (or client CA)
  --db <file>         keep machines, operations and logs in this SQLite file (created if
                      missing; env BMDEMO_DB); without it, everything is in memory and a
                      restart starts clean. At start, operations the previous server left
                      PENDING or RUNNING (a crash) become FAILED with code INTERRUPTED and their
                      machines need attention; nothing is resumed. A database write failure
                      stops the server (exit 1).
  --retain-operations <n>
                      finished operations kept, newest first (default 10000); older ones are
                      pruned with their logs and idempotency keys. Active operations are never
                      pruned
  --retain-for <duration>
                      how long a finished operation is kept, e.g. 90s, 30m, 168h, 7d
                      (default 168h). A request_id whose operation was pruned starts a new one
  --max-watchers <n>  most WatchOperations and StreamOperationLogs streams open at once
                      (default 1000); one more fails with RESOURCE_EXHAUSTED (TOO_MANY_WATCHERS)
  --fault <STEP[:MODE][@machine-id]>
                      make a step fail on stage (repeatable). STEP: set-netboot,
                      reboot-to-netboot, repave-image, join-cluster, verify-in-cluster, reboot.
                      MODE: once (default; the retry succeeds), always (the operation FAILS,
                      the machine needs intervention), hang (until the step's timeout), or N
                      (the first N attempts fail). @machine-id limits it to one machine
  --no-metrics        do not collect the Prometheus metrics (docs/metrics.md; their cost
                      on GetMachine: deno task bench --scenarios metrics)
  --version           print the version (deno.json's; the CLI prints the same) and exit
  -h, --help          show this help

Health (grpc.health.v1.Health) and server reflection (grpcurl list/describe) are always on;
with a token, reflection needs it too, health does not.

Logs go to stderr; the line "listening on <host>:<port>" goes to stdout once it accepts calls.
SIGINT/SIGTERM stop it: new calls are refused, open streams end, running operations are
CANCELED (reason ServerShutdown), exit code 0. A second signal 1 s or more after the first
exits at once (exit 1); an earlier one is the same Ctrl+C delivered twice (deno task forwards it).`;

/** Period of the retention sweep (the age limit when nothing finishes). */
const RETENTION_SWEEP_MS = 60_000;

function usage(message: string): never {
  // One line: the full help on stderr buried what was wrong (bmdemo-server --help prints it).
  console.error(`bmdemo-server: ${message} (see bmdemo-server --help)`);
  Deno.exit(2);
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
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
        fault: { type: "string", multiple: true, default: [] },
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
  if (values.help) {
    console.log(HELP);
    return;
  }
  if (values.version) {
    console.log(`bmdemo-server ${denoConfig.version}`);
    return;
  }
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
  configureLogging(level);
  const logger = getLogger(["bmdemo", "server"]);
  routeGrpcJsLog();
  const warning = denoVersionWarning(Deno.version.deno);
  if (warning) logger.warn(warning);
  if (timing !== "normal") logger.info("Using {timing} simulated hardware timing", { timing });

  const dbPath = values.db ?? env("BMDEMO_DB");
  let store: SqliteStore | undefined;
  if (dbPath === undefined) {
    logger.info("Store: in memory (a restart starts clean; --db <file> keeps state)");
  } else {
    try {
      store = createSqliteStore(dbPath, {
        retention,
        onFatal: (error: StoreFatalError) => {
          // Fail stop: memory and disk disagree, so no further call may be served.
          logger.fatal("{error}", { error: error.message });
          Deno.exit(1);
        },
      });
    } catch (error) {
      logger.error("Cannot open the database {path}: {error}", {
        path: dbPath,
        error: error instanceof Error ? error.message : String(error),
      });
      Deno.exit(1);
    }
    logger.info(
      "Store: SQLite {path}; loaded {machines} machines and {operations} operations in {ms} ms " +
        "({pruned} finished operations beyond --retain-operations deleted)",
      {
        path: dbPath,
        machines: store.loaded.machines,
        operations: store.loaded.operations,
        pruned: store.loaded.pruned,
        ms: store.loaded.ms.toFixed(1),
      },
    );
  }

  const engine = createEngine({
    timing,
    provider: withFaults(createFakeProvider({ timing }), faults),
    store,
    retention: { ...retention, sweepIntervalMs: RETENTION_SWEEP_MS },
  });
  // Created before the server starts, so the operations restart recovery fails are counted.
  // `metrics.route` is the HTTP surface's /metrics; `metrics.trackWatcher()` counts its
  // event-stream clients.
  const metrics = values["no-metrics"] ? undefined : createMetrics(engine);
  let server;
  try {
    server = await startServer({
      host: values.host,
      port,
      engine,
      tls,
      authToken,
      maxWatchers,
      callObserver: metrics?.grpcObserver,
    });
  } catch (error) {
    logger.error("{message}", { message: listenError(values.host, port, error) });
    store?.close();
    Deno.exit(1);
  }
  logger.info("Recovery: {count} interrupted operations failed in {ms} ms", {
    count: server.recovery.operationIds.length,
    ms: server.recovery.ms.toFixed(1),
  });
  for (const fault of faults) {
    logger.warn("Fault injected: {fault} (--fault)", { fault: fault.text });
  }
  logger.info("TLS {tls}; token {auth}", {
    tls: tls ? (tls.clientCa ? "on (mutual)" : "on") : "off",
    auth: authToken === undefined ? "not required" : "required",
  });

  // Collects when the heap grew, so a burst's garbage does not stay resident (needs the V8 flag
  // --expose-gc that `deno task server` passes; without it, V8 collects on its own schedule).
  using collector = startHeapCollector();
  logger.info(
    collector
      ? "Heap collector on: a full collection when the heap grew 16 MiB or by half (4 MiB when idle)"
      : "Heap collector off: V8's gc() is not exposed (--v8-flags=--expose-gc)",
  );
  const stopped = Promise.withResolvers<void>();
  const classify = stopSignalPolicy();
  const onSignal = (signal: Deno.Signal) => {
    const action = classify();
    if (action === "echo") {
      logger.debug("{signal} again within {ms} ms of the first: the same stop request", {
        signal,
        ms: SIGNAL_ECHO_MS,
      });
      return;
    }
    if (action === "force") {
      logger.warn("Second {signal}: exiting now", { signal });
      Deno.exit(1);
    }
    logger.info("Received {signal}; shutting down", { signal });
    const force = setTimeout(() => {
      logger.error("Shutdown took longer than 15 s; exiting now");
      Deno.exit(1);
    }, 15_000);
    server.shutdown().then(() => {
      metrics?.close();
      // Every operation is settled (CANCELED, reason ServerShutdown) and written: close the file.
      store?.close();
      clearTimeout(force);
      stopped.resolve();
    });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => onSignal(signal));
  }
  // Announced only once the signal handlers are in place: whoever waits for this line may stop
  // the server right after it and must get the graceful path.
  console.log(`bmdemo-server listening on ${server.address}`);
  await stopped.promise;
  Deno.exit(0);
}

/**
 * grpc-js writes its own errors to stderr ("E No address added out of total 1 resolved"), beside
 * the server's log and in another format. Every failure that matters to an operator reaches the
 * server as an error it reports itself (a bind failure, a call's status), so grpc-js's messages
 * go to the server's log at debug level (`--log-level debug`, category grpc-js).
 */
function routeGrpcJsLog(): void {
  const grpcLogger = getLogger(["bmdemo", "grpc-js"]);
  const log = (...args: unknown[]) => grpcLogger.debug("{message}", { message: args.join(" ") });
  setGrpcJsLogger({ error: log, info: log, debug: log });
}

/**
 * The one line a failed bind becomes: grpc-js wraps the socket error ("No address added out of
 * total 1 resolved errors: [listen EADDRINUSE: ...]"); a port in use names `--port`.
 */
function listenError(host: string, port: number, error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const cause = /errors: \[(.*)\]$/s.exec(text)?.[1] ?? text;
  if (cause.includes("EADDRINUSE")) {
    return `Cannot listen on ${host}:${port}: port ${port} is in use (another bmdemo-server?); ` +
      `stop that one or pass another --port (--port 0 picks a free one)`;
  }
  if (cause.includes("EACCES")) {
    return `Cannot listen on ${host}:${port}: not allowed to bind port ${port} (ports below 1024 ` +
      `need privileges); pass another --port`;
  }
  return `Cannot listen on ${host}:${port}: ${cause}`;
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

if (import.meta.main) await main();
