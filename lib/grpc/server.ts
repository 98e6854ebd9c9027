/**
 * The bmdemo gRPC server: MachineService and OperationService on one grpc-js server, built from
 * the generated descriptors, with per-RPC debug logs, one info line per operation transition,
 * and a bounded graceful shutdown.
 *
 * Also on the server: the standard health service (`grpc.health.v1.Health`, no token needed),
 * server reflection (v1 and v1alpha, fed from the embedded descriptors), optional TLS (mutual
 * when a client CA is given) and an optional bearer token required by every other call
 * (reflection included).
 *
 * Shutdown: turn every health status NOT_SERVING (and end health watches), stop accepting
 * calls, end every open stream, apply the engine's shutdown rule (active operations are
 * CANCELED), then wait for calls in flight up to a deadline and force the server closed after
 * it.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { getLogger } from "@logtape/logtape";
import type { Engine } from "../engine/mod.ts";
import type { RecoveryResult } from "../engine/recovery.ts";
import {
  file_baremetal_v1_baremetal,
  MachineService,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { DEFAULT_MAX_WATCHERS, machineService, operationService } from "./services.ts";
import { ShuttingDownError } from "../model/errors.ts";
import type {
  CallContext,
  CallHandler,
  CallInfo,
  CallObserver,
  CallWrapper,
} from "./handler_contract.ts";
import { createServiceDefinition } from "./service_definition.ts";
import { createServiceHandlers } from "./service_handlers.ts";
import { toGrpcStatus } from "./status.ts";
import { createTokenCheck } from "./auth.ts";
import { createServerHealth, file_grpc_health_v1 } from "./health.ts";
import { addReflection } from "./reflection.ts";
import { refuseUnverifiedPeers, serverCredentials, type TlsOptions } from "./tls.ts";

const logger = getLogger(["bmdemo", "server"]);

/** Deno releases whose node:http2 aborts under grpc-js (denoland/deno#36788). */
export const CRASHING_DENO_VERSIONS: readonly string[] = ["2.9.4", "2.9.5", "2.9.6"];

/**
 * The start-up warning for a Deno release known to crash in `node:http2`, if this is one.
 *
 * @param version A Deno version, e.g. `Deno.version.deno`.
 * @returns The warning, or `undefined` for a release without the known crash.
 *
 * @example
 * ```ts
 * denoVersionWarning("2.9.5"); // "Deno 2.9.5 aborts in node:http2 ..."
 * ```
 */
export function denoVersionWarning(version: string): string | undefined {
  if (!CRASHING_DENO_VERSIONS.includes(version)) return undefined;
  return `Deno ${version} aborts in node:http2 when a gRPC peer closes a busy connection ` +
    `(denoland/deno#36788); run bmdemo with Deno 2.9.3 (npm install -g deno@2.9.3)`;
}

/** Options of {@linkcode startServer}. */
export interface ServerOptions {
  /**
   * The engine to serve, composed by the caller (`server.ts`, the demo, tests): the gRPC layer
   * builds no engine, store or provider of its own. Shutting the server down shuts it down.
   */
  engine: Engine;
  /** Address to listen on. @default "127.0.0.1" */
  host?: string;
  /** Port to listen on; 0 picks a free one. @default 50051 */
  port?: number;
  /** How long shutdown waits for calls in flight before forcing them closed. @default 5000 */
  shutdownTimeoutMs?: number;
  /** TLS certificate, key and optional client CA (PEM contents). @default plaintext */
  tls?: TlsOptions;
  /**
   * The token every call except health must carry as `authorization: Bearer <token>`; a call
   * without it fails with UNAUTHENTICATED. Never logged.
   *
   * @default no token required
   */
  authToken?: string;
  /**
   * Largest request message accepted, in bytes; a larger one fails with RESOURCE_EXHAUSTED.
   *
   * @default 4 MiB
   */
  maxReceiveMessageBytes?: number;
  /**
   * Most WatchOperations and StreamOperationLogs streams open at once (both long-lived, both
   * pin memory); one more fails with RESOURCE_EXHAUSTED, reason TOO_MANY_WATCHERS.
   *
   * @default {@linkcode DEFAULT_MAX_WATCHERS} (1000)
   */
  maxWatchers?: number;
  /**
   * Told of every MachineService and OperationService call, its start and its end with the
   * status the client got (the metrics, `lib/metrics/`). Health and reflection are not told.
   *
   * @default nothing
   */
  callObserver?: CallObserver;
}

/** The default of {@linkcode ServerOptions.maxReceiveMessageBytes}: 4 MiB. */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;

/** A running server. */
export interface BmdemoServer extends AsyncDisposable {
  /** The engine it serves. */
  readonly engine: Engine;
  /** What restart recovery did before the server accepted calls. */
  readonly recovery: RecoveryResult;
  /** The port it listens on. */
  readonly port: number;
  /** `host:port` to dial. */
  readonly address: string;
  /** Stops the server (see the module documentation); idempotent. */
  shutdown(): Promise<void>;
}

function logCalls<Req, Res, Ctx extends CallContext>(
  info: CallInfo,
  next: CallHandler<Req, Res, Ctx>,
): CallHandler<Req, Res, Ctx> {
  return (request, context) => {
    // Asked per call, as the configuration may change while the server runs; when debug is off
    // (the default) the call skips the clock reads, the log properties and an async frame.
    if (!logger.isEnabledFor("debug")) return next(request, context);
    return logCall(info, next, request, context);
  };
}

async function logCall<Req, Res, Ctx extends CallContext>(
  info: CallInfo,
  next: CallHandler<Req, Res, Ctx>,
  request: Req,
  context: Ctx,
): Promise<Res> {
  const start = performance.now();
  try {
    const result = await next(request, context);
    logger.debug("{method} OK in {ms} ms", { method: info.method, ms: elapsed(start) });
    return result;
  } catch (error) {
    const status = toGrpcStatus(error);
    logger.debug("{method} {code} in {ms} ms: {details}", {
      method: info.method,
      code: grpc.status[status.code],
      ms: elapsed(start),
      details: status.details,
    });
    throw error;
  }
}

/** Refuses, before the handler runs, a call whose metadata fails `check`. */
function authenticate(check: (metadata: grpc.Metadata) => void): CallWrapper {
  return <Req, Res, Ctx extends CallContext>(
    _info: CallInfo,
    next: CallHandler<Req, Res, Ctx>,
  ): CallHandler<Req, Res, Ctx> =>
  (request, context) => {
    check(context.metadata);
    return next(request, context);
  };
}

function elapsed(start: number): string {
  return (performance.now() - start).toFixed(1);
}

/**
 * Starts a server and resolves once it listens.
 *
 * @param options Engine, address and shutdown deadline.
 * @returns The running server.
 * @throws {Error} When the address cannot be bound (e.g. the port is in use).
 *
 * @example
 * ```ts ignore
 * await using server = await startServer({ port: 0, engine: createEngine({ timing: "zero" }) });
 * console.log(server.address);
 * ```
 */
export async function startServer(options: ServerOptions): Promise<BmdemoServer> {
  const engine = options.engine;
  const host = options.host ?? "127.0.0.1";
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5000;
  const stopping = new AbortController();
  const server = new grpc.Server({
    // Long watch and log streams stay open through idle periods: the server pings every 30 s
    // and accepts client keepalive pings, also on a connection without calls.
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 5_000,
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ??
      DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    // Channelz is on by default in grpc-js; nothing here serves or reads it (no channelz
    // service is registered), and it costs every call a tracker object with four closures,
    // counter updates and Date.now() per message.
    "grpc.enable_channelz": 0,
  });
  const check = options.authToken === undefined ? undefined : createTokenCheck(options.authToken);
  const auth = check && authenticate(check);
  const wrap: CallWrapper = auth ? (info, next) => logCalls(info, auth(info, next)) : logCalls;
  const handlerOptions = {
    toStatus: toGrpcStatus,
    wrap,
    signal: stopping.signal,
    observe: options.callObserver,
    onStall: (info: CallInfo) =>
      logger.debug("{method}: the client stopped reading; holding its stream until it reads", {
        method: info.method,
      }),
  };
  server.addService(
    createServiceDefinition(MachineService),
    createServiceHandlers(MachineService, machineService(engine), handlerOptions),
  );
  server.addService(
    createServiceDefinition(OperationService),
    createServiceHandlers(
      OperationService,
      operationService(engine, { maxWatchers: options.maxWatchers ?? DEFAULT_MAX_WATCHERS }),
      handlerOptions,
    ),
  );
  const health = createServerHealth([MachineService.typeName, OperationService.typeName]);
  health.addToServer(server);
  addReflection(server, {
    files: [file_baremetal_v1_baremetal, file_grpc_health_v1],
    guard: check,
    toStatus: (error) => {
      const status = toGrpcStatus(error);
      return { ...status, metadata: status.metadata ?? new grpc.Metadata() };
    },
  });
  const unlisten = engine.events.listen((event) => {
    const op = event.snapshot!;
    logger.info("{operationId} {machineId} {type} {phase}: {message}", {
      operationId: op.operationId,
      machineId: op.machineId,
      type: OperationType[op.type],
      phase: OperationPhase[op.phase],
      message: event.message,
    });
  });
  // Restart recovery before any call can see a stale active operation (logged by the listener).
  const recovery = engine.recover();
  const target = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(
        `${target}:${options.port ?? 50051}`,
        serverCredentials(options.tls),
        (error, bound) => error ? reject(error) : resolve(bound),
      );
    });
    if (options.tls?.clientCa !== undefined) {
      refuseUnverifiedPeers(server, (socket) =>
        logger.warn(
          "Refused a TLS connection from {address} without a verified client certificate ({reason})",
          { address: socket.remoteAddress, reason: socket.authorizationError ?? "none" },
        ));
    }
  } catch (error) {
    server.forceShutdown(); // nothing bound after a failed bind; the listener after a failed check
    unlisten();
    throw error;
  }
  health.startServing();

  let shutdown: Promise<void> | undefined;
  function stop(): Promise<void> {
    shutdown ??= (async () => {
      health.stopServing();
      logger.info("Shutting down: no new calls, ending open streams");
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      // The reason every open call ends with: UNAVAILABLE, SHUTTING_DOWN, which tells a client
      // to reconnect (CANCELLED would tell it the call was given up).
      stopping.abort(
        new ShuttingDownError(
          "the server is shutting down: reconnect (a watcher with send_initial_snapshot) once it is back",
        ),
      );
      await engine.shutdown();
      unlisten();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<"deadline">((resolve) => {
        timer = setTimeout(() => resolve("deadline"), shutdownTimeoutMs);
      });
      const result = await Promise.race([drained, deadline]);
      clearTimeout(timer);
      if (result === "deadline") {
        logger.warn("Calls still open after {ms} ms; closing them", { ms: shutdownTimeoutMs });
        server.forceShutdown();
      }
      logger.info("Server stopped");
    })();
    return shutdown;
  }

  return {
    engine,
    recovery,
    port,
    address: `${host.includes(":") ? `[${host}]` : host}:${port}`,
    shutdown: stop,
    [Symbol.asyncDispose]: stop,
  };
}
