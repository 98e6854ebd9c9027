/**
 * The standard gRPC health service (`grpc.health.v1.Health`: Check, Watch, List) for the
 * server, with the shutdown behaviour bmdemo needs: {@linkcode ServerHealth.stopServing} turns
 * every status NOT_SERVING, sends it to every open Watch, then ends those streams, so that a
 * graceful shutdown is not held open by health watchers.
 *
 * The service descriptor is the one the npm package `grpc-health-check` ships (embedded here
 * as bytes; that package loads its `.proto` file from disk at import time, which a bundled
 * server cannot do); `test/health_test.ts` checks they match. Health calls bypass the bmdemo
 * call wrapper: they need no token.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { create, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import {
  type CallContext,
  createServiceDefinition,
  createServiceHandlers,
  type GrpcStatus,
  type StreamContext,
} from "./service_definition.ts";
import { embeddedFile } from "./reflection.ts";

/** `grpc/health/v1/health.proto`, as `grpc-health-check` 2.1.0 ships it. */
export const file_grpc_health_v1: DescFile = embeddedFile(
  "ChRncnBjX2hlYWx0aF92MS5wcm90bxIOZ3JwYy5oZWFsdGgudjEiEwoRSGVhbHRoTGlzdFJlcXVlc3QicQoSSGVhbHRo" +
    "TGlzdFJlc3BvbnNlEhoKCHN0YXR1c2VzGAEgAygLMghTdGF0dXNlcxo/CghTdGF0dXNlcxILCgNrZXkYASABKAkSIgoF" +
    "dmFsdWUYAiABKAsyE0hlYWx0aENoZWNrUmVzcG9uc2U6AjgBIiUKEkhlYWx0aENoZWNrUmVxdWVzdBIPCgdzZXJ2aWNl" +
    "GAEgASgJIoUBChNIZWFsdGhDaGVja1Jlc3BvbnNlEh0KBnN0YXR1cxgBIAEoDjINU2VydmluZ1N0YXR1cyJPCg1TZXJ2" +
    "aW5nU3RhdHVzEgsKB1VOS05PV04QABILCgdTRVJWSU5HEAESDwoLTk9UX1NFUlZJTkcQAhITCg9TRVJWSUNFX1VOS05P" +
    "V04QAzL9AQoGSGVhbHRoElAKBUNoZWNrEiIuZ3JwYy5oZWFsdGgudjEuSGVhbHRoQ2hlY2tSZXF1ZXN0GiMuZ3JwYy5o" +
    "ZWFsdGgudjEuSGVhbHRoQ2hlY2tSZXNwb25zZRJSCgVXYXRjaBIiLmdycGMuaGVhbHRoLnYxLkhlYWx0aENoZWNrUmVx" +
    "dWVzdBojLmdycGMuaGVhbHRoLnYxLkhlYWx0aENoZWNrUmVzcG9uc2UwARJNCgRMaXN0EiEuZ3JwYy5oZWFsdGgudjEu" +
    "SGVhbHRoTGlzdFJlcXVlc3QaIi5ncnBjLmhlYWx0aC52MS5IZWFsdGhMaXN0UmVzcG9uc2VCYQoRaW8uZ3JwYy5oZWFs" +
    "dGgudjFCC0hlYWx0aFByb3RvUAFaLGdvb2dsZS5nb2xhbmcub3JnL2dycGMvaGVhbHRoL2dycGNfaGVhbHRoX3YxqgIO" +
    "R3JwYy5IZWFsdGguVjFiBnByb3RvMw==",
  "grpc/health/v1/health.proto",
);

/** `grpc.health.v1.Health`, for `createClient(HealthService, address)`. */
export const HealthService: DescService = file_grpc_health_v1.services[0];

/** The fully qualified name of the health service. */
export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";

/** `HealthCheckResponse.ServingStatus` values. */
export const ServingStatus = {
  UNKNOWN: 0,
  SERVING: 1,
  NOT_SERVING: 2,
  SERVICE_UNKNOWN: 3,
} as const;

/** One of {@linkcode ServingStatus}. */
export type ServingStatus = typeof ServingStatus[keyof typeof ServingStatus];

/** The health of a server. */
export interface ServerHealth {
  /** Registers the health service on `server`. */
  addToServer(server: Pick<grpc.Server, "addService">): void;
  /** Reports SERVING for `""` and every service. */
  startServing(): void;
  /**
   * Reports NOT_SERVING for `""` and every service, then ends every open Watch with OK (each
   * has been sent NOT_SERVING first). Later Watch calls get NOT_SERVING and end at once.
   */
  stopServing(): void;
}

class HealthStatusError extends Error {
  constructor(readonly status: GrpcStatus) {
    super(status.details);
  }
}

/**
 * Creates the health of a server that serves `services`. Every status is NOT_SERVING until
 * {@linkcode ServerHealth.startServing}; an unknown service is NOT_FOUND for Check and
 * SERVICE_UNKNOWN for Watch.
 *
 * @param services Fully qualified service names, e.g. `baremetal.v1.MachineService`; the
 * whole server (`""`) is always included.
 * @returns The health service and its switches.
 *
 * @example
 * ```ts
 * const health = createServerHealth(["baremetal.v1.MachineService"]);
 * health.startServing();
 * ```
 */
export function createServerHealth(services: readonly string[]): ServerHealth {
  const statuses = new Map<string, ServingStatus>(
    ["", ...services].map((name) => [name, ServingStatus.NOT_SERVING]),
  );
  const watchers = new Set<() => void>();
  let stopped = false;
  const setAll = (status: ServingStatus): void => {
    for (const name of statuses.keys()) statuses.set(name, status);
    for (const notify of watchers) notify();
  };
  const message = (name: string): DescMessage =>
    file_grpc_health_v1.messages.find((m) => m.name === name)!;
  const listResponse = message("HealthListResponse");
  const checkResponse = message("HealthCheckResponse");
  const response = (status: ServingStatus) => create(checkResponse, { status } as never);
  const impl = {
    check(request: { service: string }, _context: CallContext) {
      const status = statuses.get(request.service);
      if (status === undefined) {
        throw new HealthStatusError({
          code: grpc.status.NOT_FOUND,
          details: `health status unknown for service "${request.service}"`,
        });
      }
      return Promise.resolve(response(status));
    },
    list(_request: unknown, _context: CallContext) {
      return Promise.resolve(
        create(listResponse, {
          statuses: Object.fromEntries([...statuses].map(([name, status]) => [name, { status }])),
        } as never),
      );
    },
    async watch(request: { service: string }, context: StreamContext<DescMessage>) {
      let changed = Promise.withResolvers<void>();
      const notify = (): void => changed.resolve();
      watchers.add(notify);
      const onAbort = (): void => changed.resolve();
      context.signal.addEventListener("abort", onAbort);
      try {
        let last: ServingStatus | undefined;
        while (!context.signal.aborted) {
          const status = statuses.get(request.service) ?? ServingStatus.SERVICE_UNKNOWN;
          if (status !== last) await context.send(response(status));
          last = status;
          if (stopped) return;
          await changed.promise;
          changed = Promise.withResolvers<void>();
        }
      } finally {
        watchers.delete(notify);
        context.signal.removeEventListener("abort", onAbort);
      }
    },
  };
  return {
    addToServer(server) {
      server.addService(
        createServiceDefinition(HealthService),
        createServiceHandlers(HealthService, impl as never, {
          toStatus: (error) =>
            error instanceof HealthStatusError ? error.status : {
              code: grpc.status.CANCELLED,
              details: error instanceof Error ? error.message : String(error),
            },
        }),
      );
    },
    startServing: () => {
      stopped = false;
      setAll(ServingStatus.SERVING);
    },
    stopServing() {
      stopped = true;
      setAll(ServingStatus.NOT_SERVING);
    },
  };
}
