/**
 * bmdemo-server: serves MachineService and OperationService over gRPC with the simulated
 * hardware provider.
 *
 *   deno task server [--port 50051] [--host 127.0.0.1] [--slow] [--log-level info]
 *
 * SIGINT or SIGTERM stops it gracefully (see `lib/grpc/server.ts`); a second signal, or a
 * stop that takes longer than 15 s, forces the exit.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getLogger } from "@logtape/logtape";
import { configureLogging, LOG_LEVELS, type LogLevelName } from "./lib/logging.ts";
import { denoVersionWarning, startServer } from "./lib/grpc/server.ts";

const HELP = `bmdemo-server - baremetal lifecycle gRPC server (MachineService + OperationService)

Usage: bmdemo-server [flags]

Flags:
  --port <n>          TCP port to listen on (default 50051; 0 picks a free port)
  --host <addr>       address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --slow              slow simulated hardware, for live presentations (a reimage takes ~29 s)
  --log-level <lvl>   debug | info | warn | error (default info); debug logs every RPC
  -h, --help          show this help

Logs go to stderr; the line "listening on <host>:<port>" goes to stdout once it accepts calls.
SIGINT/SIGTERM stop it: new calls are refused, open streams end, running operations are
CANCELED (reason ServerShutdown), exit code 0.`;

function usage(message: string): never {
  console.error(`bmdemo-server: ${message}\n\n${HELP}`);
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
        "log-level": { type: "string", default: "info" },
        help: { type: "boolean", short: "h", default: false },
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
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    usage(`--port must be a whole number from 0 to 65535: got "${values.port}"`);
  }
  const level = values["log-level"] as LogLevelName;
  if (!LOG_LEVELS.includes(level)) {
    usage(`--log-level must be one of ${LOG_LEVELS.join(", ")}: got "${values["log-level"]}"`);
  }
  configureLogging(level);
  const logger = getLogger(["bmdemo", "server"]);
  const warning = denoVersionWarning(Deno.version.deno);
  if (warning) logger.warn(warning);
  if (values.slow) logger.info("Using slow demo timing");

  let server;
  try {
    server = await startServer({
      host: values.host,
      port,
      timing: values.slow ? "slow" : "normal",
    });
  } catch (error) {
    logger.error("Cannot listen on {host}:{port}: {error}", {
      host: values.host,
      port,
      error: error instanceof Error ? error.message : String(error),
    });
    Deno.exit(1);
  }
  console.log(`bmdemo-server listening on ${server.address}`);

  const stopped = Promise.withResolvers<void>();
  let signals = 0;
  const onSignal = (signal: Deno.Signal) => {
    signals++;
    if (signals > 1) {
      logger.warn("Second {signal}: exiting now", { signal });
      Deno.exit(1);
    }
    logger.info("Received {signal}; shutting down", { signal });
    const force = setTimeout(() => {
      logger.error("Shutdown took longer than 15 s; exiting now");
      Deno.exit(1);
    }, 15_000);
    server.shutdown().then(() => {
      clearTimeout(force);
      stopped.resolve();
    });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => onSignal(signal));
  }
  await stopped.promise;
  Deno.exit(0);
}

if (import.meta.main) await main();
