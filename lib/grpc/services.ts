/**
 * The two gRPC services, implemented on the {@linkcode Engine}. Handlers only check the wire
 * shape of a request (required fields, enum values), call the engine, and return or stream
 * messages; every failure is a typed domain error that `status.ts` maps.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import type { Engine } from "../engine/mod.ts";
import { InvalidArgumentError, TooManyWatchersError } from "../model/errors.ts";
import {
  ListMachinesResponseSchema,
  ListOperationsResponseSchema,
  type MachineService,
  Operation_OperationType as OperationType,
  type OperationService,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import type { ServiceImpl } from "./handler_contract.ts";

function missing(field: string, message = `${field} is required`): InvalidArgumentError {
  return new InvalidArgumentError(message, { reason: "MISSING_FIELD", metadata: { field } });
}

function required(value: string, field: string): string {
  if (value === "") throw missing(field);
  return value;
}

function requestId(value: string): string {
  if (value === "") {
    throw missing(
      "request_id",
      "request_id is required for idempotency: send a fresh UUID and reuse it only to retry",
    );
  }
  return value;
}

/**
 * Implements MachineService on an engine.
 *
 * @param engine The engine.
 * @returns The handlers.
 */
export function machineService(engine: Engine): ServiceImpl<typeof MachineService> {
  function start(
    request: { machineId: string; requestId: string },
    type: OperationType,
    extra: { imageRef?: string; force?: boolean } = {},
  ) {
    return Promise.resolve(
      engine.startOperation({
        machineId: required(request.machineId, "machine_id"),
        requestId: requestId(request.requestId),
        type,
        ...extra,
      }).operation,
    );
  }
  return {
    registerMachine(request) {
      if (!request.machine) throw missing("machine");
      return Promise.resolve(engine.registerMachine(request.machine).machine);
    },
    getMachine(request) {
      return Promise.resolve(engine.getMachine(required(request.machineId, "machine_id")));
    },
    listMachines(request) {
      const page = engine.listMachines(request);
      return Promise.resolve(create(ListMachinesResponseSchema, {
        machines: page.items,
        nextPageToken: page.nextPageToken,
      }));
    },
    updateMachine(request) {
      if (!request.machine) throw missing("machine");
      const { machineId, spec, labels } = request.machine;
      // Status is server-owned (seed decision 6); an empty label map means "unchanged" because
      // proto3 cannot tell an empty map from an absent one.
      return Promise.resolve(engine.updateMachine(required(machineId, "machine.machine_id"), {
        spec,
        labels: Object.keys(labels).length > 0 ? labels : undefined,
      }));
    },
    rebootMachine(request) {
      return start(request, OperationType.REBOOT, { force: request.force });
    },
    reimageMachine(request) {
      return start(request, OperationType.REIMAGE, { imageRef: request.imageRef });
    },
    enterMaintenance(request) {
      return start(request, OperationType.ENTER_MAINTENANCE);
    },
    exitMaintenance(request) {
      return start(request, OperationType.EXIT_MAINTENANCE);
    },
    cancelOperation(request) {
      return Promise.resolve(
        engine.cancelOperation(required(request.operationId, "operation_id")),
      );
    },
  };
}

/** Options of {@linkcode operationService}. */
export interface OperationServiceOptions {
  /**
   * Most WatchOperations and StreamOperationLogs streams open at once, server-wide: both are
   * long-lived and each pins memory (its call, its buffered bytes, its place in the feed). One
   * past it fails with RESOURCE_EXHAUSTED, reason `TOO_MANY_WATCHERS`.
   *
   * @default {@linkcode DEFAULT_MAX_WATCHERS}
   */
  maxWatchers?: number;
}

/** The default of {@linkcode OperationServiceOptions.maxWatchers} (the server's `--max-watchers`). */
export const DEFAULT_MAX_WATCHERS = 1000;

/**
 * Implements OperationService on an engine.
 *
 * @param engine The engine.
 * @param options The stream limit.
 * @returns The handlers.
 */
export function operationService(
  engine: Engine,
  options: OperationServiceOptions = {},
): ServiceImpl<typeof OperationService> {
  const maxWatchers = options.maxWatchers ?? DEFAULT_MAX_WATCHERS;
  let open = 0;
  /** Runs a long-lived stream within the limit; the slot is freed when the stream ends. */
  async function limited(serve: () => Promise<void>, signal: AbortSignal): Promise<void> {
    if (open >= maxWatchers) {
      throw new TooManyWatchersError(
        `the server already has ${open} open watch and log streams, its limit: close one, or ` +
          `restart the server with a larger --max-watchers (now ${maxWatchers})`,
        { metadata: { maxWatchers: String(maxWatchers) } },
      );
    }
    open++;
    try {
      await serve();
      // A stream that ended because the server stops (or the call was cancelled) did not end
      // by itself: fail it with the reason (UNAVAILABLE at shutdown), so the client reconnects.
      signal.throwIfAborted();
    } finally {
      open--;
    }
  }
  return {
    getOperation(request) {
      return Promise.resolve(engine.getOperation(required(request.operationId, "operation_id")));
    },
    listOperations(request) {
      const page = engine.listOperations(request);
      return Promise.resolve(create(ListOperationsResponseSchema, {
        operations: page.items,
        nextPageToken: page.nextPageToken,
      }));
    },
    watchOperations(request, call) {
      return limited(async () => {
        using watch = engine.watch({
          filter: request.filter,
          sendInitialSnapshot: request.sendInitialSnapshot,
          signal: call.signal,
        });
        for await (const event of watch) await call.send(event);
      }, call.signal);
    },
    streamOperationLogs(request, call) {
      const operationId = required(request.operationId, "operation_id");
      return limited(async () => {
        for await (const chunk of engine.streamLogs(operationId, { signal: call.signal })) {
          await call.send(chunk);
        }
      }, call.signal);
    },
  };
}
