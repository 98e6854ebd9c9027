/**
 * The standard gRPC health service (`grpc.health.v1.Health`: Check, Watch, List) for the
 * server, with the shutdown behaviour bmdemo needs: {@linkcode ServerHealth.stopServing} turns
 * every status NOT_SERVING, sends it to every open Watch, then ends those streams, so that a
 * graceful shutdown is not held open by health watchers.
 *
 * The service is generated (`lib/gen/grpc/health/v1/`) from the `health.proto` that the npm
 * package `grpc-health-check` ships (`deno task proto` vendors it; that package itself loads the
 * `.proto` file from disk at import time, which a bundled server cannot do). Health calls bypass
 * the bmdemo call wrapper: they need no token.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import type { GenFile } from "@bufbuild/protobuf/codegenv2";
import type { ServiceImpl } from "./handler_contract.ts";
import type { GrpcStatus } from "./handler_status.ts";
import { createServiceDefinition } from "./service_definition.ts";
import { createServiceHandlers } from "./service_handlers.ts";
import {
  file_grpc_health_v1_health,
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
} from "../gen/grpc/health/v1/health_pb.ts";

/** `grpc/health/v1/health.proto` (generated), e.g. for the reflection `files`. */
export const file_grpc_health_v1: GenFile = file_grpc_health_v1_health;

/** `grpc.health.v1.Health`, for `createClient(HealthService, address)`. */
export const HealthService: typeof Health = Health;

/** The fully qualified name of the health service. */
export const HEALTH_SERVICE_NAME: string = Health.typeName;

/** `HealthCheckResponse.ServingStatus` values (the generated enum). */
export const ServingStatus = HealthCheckResponse_ServingStatus;

/** One of {@linkcode ServingStatus}. */
export type ServingStatus = HealthCheckResponse_ServingStatus;

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
  const response = (status: ServingStatus) => create(HealthCheckResponseSchema, { status });
  const impl: ServiceImpl<typeof Health> = {
    check(request) {
      const status = statuses.get(request.service);
      if (status === undefined) {
        throw new HealthStatusError({
          code: grpc.status.NOT_FOUND,
          details: `health status unknown for service "${request.service}"`,
        });
      }
      return Promise.resolve(response(status));
    },
    list() {
      const entries = [...statuses].map(([name, status]) => [name, response(status)]);
      return Promise.resolve(
        create(HealthListResponseSchema, { statuses: Object.fromEntries(entries) }),
      );
    },
    async watch(request, context) {
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
        createServiceHandlers(HealthService, impl, {
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
