/**
 * bmdemo-server: serves MachineService and OperationService over gRPC; each machine's
 * hardware verbs go to the simulated provider or, by its `spec.provider`, to a real BMC driver
 * (`lib/provider/hardware.ts`).
 *
 *   deno task server [--port 50051] [--host 127.0.0.1] [--timing normal|slow|zero]
 *     [--log-level info]
 *     [--tls-cert <pem> --tls-key <pem> [--client-ca <pem>]] [--auth-token-file <file>]
 *     [--insecure-expose] [--db <file>] [--retain-operations N] [--retain-for DURATION]
 *     [--max-watchers <n>] [--fault STEP[:MODE][@machine-id]]...
 *     [--bmc-credentials <file>] [--bmc-concurrency N] [--http-advertise-url <url>]
 *     [--ssh-known-hosts <file> [--ssh-host-key-policy accept-new|strict]] [--http-port N]
 *     [--no-metrics] [--version]
 *
 * SIGINT or SIGTERM stops it gracefully (see `lib/grpc/server.ts`); a second signal at least
 * 1 s after the first (an earlier one is the same Ctrl+C delivered twice, see
 * `lib/runtime/stop_signals.ts`), or a stop that takes longer than 15 s, forces the exit.
 *
 * @module
 */

import denoConfig from "./deno.json" with { type: "json" };
import { getLogger } from "@logtape/logtape";
import { setLogger as setGrpcJsLogger } from "@grpc/grpc-js";
import { configureLogging } from "./lib/runtime/logging.ts";
import { createEngine } from "./lib/engine/mod.ts";
import { denoVersionWarning } from "./lib/grpc/server.ts";
import { createSqliteStore, type SqliteStore, type StoreFatalError } from "./lib/store/sqlite.ts";
import { createFakeProvider } from "./lib/provider/fake.ts";
import { withFaults } from "./lib/provider/fault_flag.ts";
import { createHardwareProvider } from "./lib/provider/hardware.ts";
import type { BmcDriver } from "./lib/provider/bmc.ts";
import { createBmcGate } from "./lib/provider/bmc_gate.ts";
import { createRedfishDriver } from "./lib/provider/redfish.ts";
import { createIpmiDriver } from "./lib/provider/ipmi.ts";
import { createSshRunner, type SshRunner, type SshRunnerOptions } from "./lib/provider/ssh.ts";
import { createNetbootBroker, netbootBaseUrl } from "./lib/provider/netboot.ts";
import { startHeapCollector } from "./lib/runtime/heap_collector.ts";
import type { HttpSurface } from "./lib/http/surface.ts";
import { startSurfaces, type Surfaces, SurfaceStartError } from "./lib/serve/surfaces.ts";
import { readServerCommand, UsageError } from "./lib/serve/server_config.ts";
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
                      (default 1000); one more fails with RESOURCE_EXHAUSTED (TOO_MANY_WATCHERS).
                      The HTTP surface allows as many event streams again (503 beyond)
  --http-port <n>     also serve the live dashboard, its event streams, /healthz and /readyz
                      over HTTP on this port (off by default; 0 picks a free port), on --host,
                      with the same TLS certificate and token; the URL is printed at start
  --fault <STEP[:MODE][@machine-id]>
                      make a step fail on stage (repeatable). STEP: set-netboot,
                      reboot-to-netboot, repave-image, join-cluster, verify-in-cluster, reboot.
                      MODE: once (default; the retry succeeds), always (the operation FAILS,
                      the machine needs intervention), hang (until the step's timeout), or N
                      (the first N attempts fail). @machine-id limits it to one machine.
                      Only simulated (provider fake) machines fail this way
  --bmc-credentials <file>
                      YAML file of BMC users and passwords (and TLS trust, SSH user and key)
                      for machines with provider redfish or ipmi, matched by BMC address or
                      machine labels (docs/hardware.md); read and checked at start, never
                      logged, stored or sent over the API
  --bmc-concurrency <n>
                      most calls in flight to one BMC (default 4): BMCs freeze under bursts
  --http-advertise-url <url>
                      the URL machines reach this server's HTTP surface at, for network
                      repaves (iPXE script and callback), e.g. http://10.0.2.100:8080
  --ssh-known-hosts <file>
                      run executeSshCommand over real SSH (system ssh client) on redfish and
                      ipmi machines with an ssh_endpoint, with this known-hosts file (its
                      directory must exist); without it their SSH steps stay simulated
  --ssh-host-key-policy accept-new|strict
                      accept-new (default) records a host's first key and refuses a changed
                      one; strict refuses any host not already in the known-hosts file
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
  let command;
  try {
    command = await readServerCommand(Deno.args);
  } catch (error) {
    if (error instanceof UsageError) usage(error.message);
    throw error;
  }
  if (command.kind === "help") {
    console.log(HELP);
    return;
  }
  if (command.kind === "version") {
    console.log(`bmdemo-server ${denoConfig.version}`);
    return;
  }
  const {
    host,
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
    dbPath,
    metrics: metricsOn,
  } = command.config;
  configureLogging(level);
  const logger = getLogger(["bmdemo", "server"]);
  routeGrpcJsLog();
  const warning = denoVersionWarning(Deno.version.deno);
  if (warning) logger.warn(warning);
  if (timing !== "normal") logger.info("Using {timing} simulated hardware timing", { timing });

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

  // The HTTP surface serves netboot.routes (GET /boot/ipxe, GET|POST /boot/report); its address
  // is the scripts' base URL unless --http-advertise-url names another.
  const netboot = createNetbootBroker({ baseUrl: advertiseUrl });
  let hardware;
  try {
    hardware = hardwareDrivers({ bmcConcurrency, ssh: sshOptions });
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const engine = createEngine({
    timing,
    provider: createHardwareProvider({
      simulated: withFaults(createFakeProvider({ timing }), faults),
      drivers: hardware.drivers,
      ssh: hardware.ssh,
      credentials,
      netboot,
    }),
    store,
    retention: { ...retention, sweepIntervalMs: RETENTION_SWEEP_MS },
  });
  // The metrics (unless --no-metrics) observe gRPC and are served on the HTTP surface's /metrics.
  let surfaces: Surfaces;
  try {
    surfaces = await startSurfaces(engine, {
      grpc: { host: host, port, tls, authToken, maxWatchers },
      http: httpPort === undefined ? undefined : {
        host: host,
        port: httpPort,
        tls,
        authToken,
        maxStreams: maxWatchers,
        routes: netboot.routes,
      },
      metrics: metricsOn ? undefined : false,
    });
  } catch (error) {
    const cause = error instanceof SurfaceStartError ? error.cause : error;
    logger.error("{message}", {
      message: error instanceof SurfaceStartError && error.surface === "http"
        ? httpListenError(host, httpPort!, cause)
        : listenError(host, port, cause),
    });
    store?.close();
    Deno.exit(1);
  }
  const { server, http } = surfaces;
  if (http) {
    try {
      netbootBaseUrl({ host: host, port: http.port }); // refuses a wildcard --host
      netboot.advertise(http.url); // with the surface's scheme (https under --tls-cert)
    } catch (error) {
      // A wildcard --host: machines cannot reach it; their repaves say how to fix it.
      logger.warn("Network repaves need --http-advertise-url: {message}", {
        message: error instanceof Error ? error.message : String(error),
      });
    }
    logger.info("Dashboard on {url}{signIn}", {
      url: http.url,
      signIn: http.signInUrl === undefined ? "" : " (sign in with ?token=<token>)",
    });
  }
  logger.info("Recovery: {count} interrupted operations failed in {ms} ms", {
    count: server.recovery.operationIds.length,
    ms: server.recovery.ms.toFixed(1),
  });
  for (const fault of faults) {
    logger.warn("Fault injected: {fault} (--fault)", { fault: fault.text });
  }
  logger.info(
    "Hardware: drivers {drivers}; {credentials}; at most {concurrency} calls in flight per BMC",
    {
      drivers: hardware.drivers.map((driver) => driver.name).join(", ") || "none (all simulated)",
      credentials: credentials
        ? `${credentials.size} credential entries from ${credentials.file}`
        : "no --bmc-credentials",
      concurrency: bmcConcurrency,
    },
  );
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
    // /readyz turns 503 first; the event streams end after gRPC and the engine stopped, so a
    // dashboard sees the operations shutdown cancels.
    surfaces.shutdown().then(() => {
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
  if (http) console.log(dashboardLine(http));
  console.log(`bmdemo-server listening on ${server.address}`);
  await stopped.promise;
  Deno.exit(0);
}

/**
 * The BMC drivers and the SSH runner the routing provider dispatches real machines to, by name
 * (`spec.provider`): the one place where they are constructed, every driver behind one gate that
 * bounds calls in flight per BMC (`--bmc-concurrency`). Without `--ssh-known-hosts` there is no
 * SSH runner: a real machine's SSH step stays simulated and its log says so.
 */
function hardwareDrivers(
  options: { bmcConcurrency: number; ssh?: SshRunnerOptions },
): { drivers: BmcDriver[]; ssh?: SshRunner } {
  const gate = createBmcGate({ concurrency: options.bmcConcurrency });
  return {
    drivers: [createRedfishDriver({ gate }), createIpmiDriver({ gate })],
    ...(options.ssh ? { ssh: createSshRunner(options.ssh) } : {}),
  };
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

/**
 * The stdout line announcing the dashboard. With a token, the sign-in link (which holds it) is
 * printed only to a terminal: a redirected stdout ends up in files and journals.
 */
function dashboardLine(http: HttpSurface): string {
  if (http.signInUrl === undefined) return `bmdemo-server dashboard on ${http.url}`;
  if (Deno.stdout.isTerminal()) return `bmdemo-server dashboard on ${http.signInUrl}`;
  return `bmdemo-server dashboard on ${http.url} (sign in once with ${http.url}?token=<token>)`;
}

/** The one line a failed HTTP bind becomes; a port in use names `--http-port`. */
function httpListenError(host: string, port: number, error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) {
    return `Cannot serve HTTP on ${host}:${port}: port ${port} is in use; pass another ` +
      `--http-port (--http-port 0 picks a free one)`;
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return `Cannot serve HTTP on ${host}:${port}: not allowed to bind port ${port} (ports below ` +
      `1024 need privileges); pass another --http-port`;
  }
  return `Cannot serve HTTP on ${host}:${port}: ${error instanceof Error ? error.message : error}`;
}

if (import.meta.main) await main();
