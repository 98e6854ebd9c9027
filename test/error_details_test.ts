/**
 * The rich error model over real gRPC: every reason the server can produce arrives as a
 * `google.rpc.ErrorInfo` in `grpc-status-details-bin` with domain `bmdemo`, the documented
 * reason and the ids involved. Table-driven for the unary errors; the lagged watcher, shutdown
 * and an unexpected exception have their own tests.
 *
 * Permissions: `--allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import {
  MachineService,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { ERROR_DOMAIN } from "../lib/grpc/error_details.ts";
import { startServer } from "../lib/grpc/server.ts";
import { connectClient, type ConnectError, errorInfo } from "../lib/client/mod.ts";
import type { EventFeedOptions } from "../lib/engine/events.ts";
import {
  enterMaintenanceBurst,
  holdVerb,
  importMachines,
  runOperation,
  SANITIZE,
  testEngine,
  untilTerminal,
} from "./helpers.ts";

/** What a failed call carried. */
interface Failure {
  code: grpc.status;
  details: string;
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

async function failure(promise: Promise<unknown>): Promise<Failure> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught, "expected the call to fail");
  const error = caught as ConnectError;
  const info = errorInfo(error);
  assert.ok(info, `no ErrorInfo on ${grpc.status[error.code]}: ${error.rawMessage}`);
  return {
    code: error.code as number,
    details: error.rawMessage,
    reason: info.reason,
    domain: info.domain,
    metadata: { ...info.metadata },
  };
}

function assertFailure(
  actual: Failure,
  expected: { code: grpc.status; reason: string; metadata: Record<string, string> },
  label: string,
): void {
  assert.equal(
    grpc.status[actual.code],
    grpc.status[expected.code],
    `${label}: ${actual.details}`,
  );
  assert.equal(actual.reason, expected.reason, `${label}: ${actual.details}`);
  assert.equal(actual.domain, ERROR_DOMAIN, label);
  for (const [key, value] of Object.entries(expected.metadata)) {
    assert.equal(
      actual.metadata[key],
      value,
      `${label}: metadata.${key} in ${JSON.stringify(actual.metadata)}`,
    );
  }
}

Deno.test("every unary error carries ErrorInfo with its reason and ids", SANITIZE, async () => {
  const hold = holdVerb();
  await using server = await startServer({
    port: 0,
    engine: testEngine({ hooks: { reboot: hold.hook } }),
  });
  const engine = server.engine;
  importMachines(engine, 3);
  // machine-1: MAINTENANCE, then busy with a held reboot; its enter-maintenance SUCCEEDED.
  const finished = await runOperation(engine, {
    machineId: "machine-1",
    type: OperationType.ENTER_MAINTENANCE,
  });
  assert.equal(finished.phase, OperationPhase.SUCCEEDED);
  // machine-3: request id "same" used for an ENTER_MAINTENANCE.
  const original = await runOperation(engine, {
    machineId: "machine-3",
    type: OperationType.ENTER_MAINTENANCE,
    requestId: "same",
  });
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);
  const busy = await machines.rebootMachine({ machineId: "machine-1", requestId: "held" });
  await hold.entered;

  const INVALID = grpc.status.INVALID_ARGUMENT;
  const cases: {
    reason: string;
    call: () => Promise<unknown>;
    code: grpc.status;
    metadata: Record<string, string>;
  }[] = [
    {
      reason: "INVALID_ARGUMENT",
      call: () =>
        machines.registerMachine({
          machine: { machineId: "m-new", status: { phase: MachinePhase.MAINTENANCE } },
        }),
      code: INVALID,
      metadata: { machineId: "m-new" },
    },
    {
      reason: "INVALID_ARGUMENT",
      call: () => machines.listMachines({ pageSize: -1 }),
      code: INVALID,
      metadata: { field: "page_size" },
    },
    {
      reason: "MISSING_FIELD",
      call: () => machines.getMachine({ machineId: "" }),
      code: INVALID,
      metadata: { field: "machine_id" },
    },
    {
      reason: "MISSING_FIELD",
      call: () => machines.rebootMachine({ machineId: "machine-2", requestId: "" }),
      code: INVALID,
      metadata: { field: "request_id" },
    },
    {
      reason: "MISSING_FIELD",
      call: () => machines.registerMachine({}),
      code: INVALID,
      metadata: { field: "machine" },
    },
    {
      reason: "MISSING_FIELD",
      call: () => machines.updateMachine({ machine: { machineId: "" } }),
      code: INVALID,
      metadata: { field: "machine.machine_id" },
    },
    {
      reason: "MISSING_FIELD",
      call: () => machines.cancelOperation({ operationId: "" }),
      code: INVALID,
      metadata: { field: "operation_id" },
    },
    {
      reason: "LIMIT_EXCEEDED",
      call: () => machines.rebootMachine({ machineId: "machine-2", requestId: "r".repeat(129) }),
      code: INVALID,
      metadata: { field: "request_id", limit: "128", actual: "129", machineId: "machine-2" },
    },
    {
      reason: "LIMIT_EXCEEDED",
      call: () => operations.listOperations({ filter: "x".repeat(1025) }),
      code: INVALID,
      metadata: { field: "filter", limit: "1024" },
    },
    {
      reason: "INVALID_FORMAT",
      call: () => machines.registerMachine({ machine: { machineId: "a=b c" } }),
      code: INVALID,
      metadata: { field: "machine_id" },
    },
    {
      reason: "INVALID_FORMAT",
      call: () =>
        machines.registerMachine({ machine: { machineId: "m-x", labels: { "a b": "1" } } }),
      code: INVALID,
      metadata: { field: "label_key", machineId: "m-x" },
    },
    {
      reason: "INVALID_FILTER",
      call: () => machines.listMachines({ filter: "nope=1" }),
      code: INVALID,
      metadata: { filter: "nope=1" },
    },
    {
      reason: "INVALID_PAGE_TOKEN",
      call: () => operations.listOperations({ pageToken: "!!!" }),
      code: INVALID,
      metadata: { pageToken: "!!!" },
    },
    {
      reason: "REQUEST_ID_REUSED",
      call: () => machines.rebootMachine({ machineId: "machine-3", requestId: "same" }),
      code: INVALID,
      metadata: {
        machineId: "machine-3",
        requestId: "same",
        operationId: original.operationId,
      },
    },
    {
      reason: "MACHINE_NOT_FOUND",
      call: () => machines.getMachine({ machineId: "nope" }),
      code: grpc.status.NOT_FOUND,
      metadata: { machineId: "nope" },
    },
    {
      reason: "MACHINE_NOT_FOUND",
      call: () => machines.enterMaintenance({ machineId: "nope", requestId: "r" }),
      code: grpc.status.NOT_FOUND,
      metadata: { machineId: "nope" },
    },
    {
      reason: "OPERATION_NOT_FOUND",
      call: () => operations.getOperation({ operationId: "op-nope" }),
      code: grpc.status.NOT_FOUND,
      metadata: { operationId: "op-nope" },
    },
    {
      reason: "OPERATION_NOT_FOUND",
      call: () => machines.cancelOperation({ operationId: "op-nope" }),
      code: grpc.status.NOT_FOUND,
      metadata: { operationId: "op-nope" },
    },
    {
      reason: "PHASE_PRECONDITION",
      call: () => machines.reimageMachine({ machineId: "machine-2", requestId: "r" }),
      code: grpc.status.FAILED_PRECONDITION,
      metadata: {
        machineId: "machine-2",
        phase: "FACTORY_READY",
        operationType: "REIMAGE",
        requiredPhases: "MAINTENANCE",
      },
    },
    {
      reason: "PHASE_PRECONDITION",
      call: () => machines.rebootMachine({ machineId: "machine-2", requestId: "r" }),
      code: grpc.status.FAILED_PRECONDITION,
      metadata: {
        machineId: "machine-2",
        phase: "FACTORY_READY",
        operationType: "REBOOT",
        requiredPhases: "READY,MAINTENANCE",
      },
    },
    {
      reason: "MACHINE_BUSY",
      call: () => machines.exitMaintenance({ machineId: "machine-1", requestId: "r" }),
      code: grpc.status.FAILED_PRECONDITION,
      metadata: { machineId: "machine-1", activeOperationId: busy.operationId },
    },
    {
      reason: "OPERATION_FINISHED",
      call: () => machines.cancelOperation({ operationId: finished.operationId }),
      code: grpc.status.FAILED_PRECONDITION,
      metadata: { operationId: finished.operationId, phase: "SUCCEEDED" },
    },
  ];
  for (const [i, c] of cases.entries()) {
    assertFailure(await failure(c.call()), c, `case ${i} (${c.reason})`);
  }
  hold.release();
  await untilTerminal(engine, busy.operationId);
});

/**
 * A server whose machine-1 runs a REBOOT held in the provider, and a watch that read the
 * reboot's `Snapshot` event; disposing it closes the clients and stops the server.
 */
async function heldRebootWatch(events: EventFeedOptions = {}) {
  const hold = holdVerb();
  const server = await startServer({
    port: 0,
    engine: testEngine({ hooks: { reboot: hold.hook } }, { events }),
  });
  importMachines(server.engine, 10);
  await runOperation(server.engine, {
    machineId: "machine-1",
    type: OperationType.ENTER_MAINTENANCE,
  });
  const machines = connectClient(MachineService, server.address);
  const operations = connectClient(OperationService, server.address);
  const held = await machines.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
  await hold.entered;
  const watch = operations.watchOperations({ sendInitialSnapshot: true })
    [Symbol.asyncIterator]();
  assert.equal((await watch.next()).value?.message, "Snapshot");
  return {
    hold,
    server,
    held,
    operations,
    watch,
    async [Symbol.asyncDispose]() {
      machines.close();
      operations.close();
      await server.shutdown();
    },
  };
}

Deno.test("a lagged watcher's status carries SUBSCRIBER_LAGGED", SANITIZE, async () => {
  await using setup = await heldRebootWatch({ capacity: 3 });
  const { hold, server, held, watch: iterator } = setup;

  // A synchronous burst fills the queue of three before the stream handler takes any.
  await enterMaintenanceBurst(server.engine, { from: 2, to: 10 });
  const result = await failure((async () => {
    for (;;) if ((await iterator.next()).done) return;
  })());
  assertFailure(result, {
    code: grpc.status.RESOURCE_EXHAUSTED,
    reason: "SUBSCRIBER_LAGGED",
    metadata: { capacity: "3" },
  }, "lagged watcher");
  hold.release();
  await untilTerminal(server.engine, held.operationId);
});

Deno.test("an operation started during shutdown gets SHUTTING_DOWN", SANITIZE, async () => {
  await using server = await startServer({ port: 0, engine: testEngine() });
  importMachines(server.engine, 1);
  using machines = connectClient(MachineService, server.address);
  await server.engine.shutdown();
  const result = await failure(
    machines.enterMaintenance({ machineId: "machine-1", requestId: "late" }),
  );
  assertFailure(result, {
    code: grpc.status.UNAVAILABLE,
    reason: "SHUTTING_DOWN",
    metadata: { machineId: "machine-1" },
  }, "shutdown");
  assert.equal(server.engine.listOperations({}).items.length, 0, "nothing was created");
});

Deno.test(
  "a watch and a log stream open at shutdown end with UNAVAILABLE, SHUTTING_DOWN",
  SANITIZE,
  async () => {
    await using setup = await heldRebootWatch();
    const { server, held, operations, watch } = setup;
    assert.equal((await watch.next()).value?.message, "Snapshot complete");
    const logs = operations.streamOperationLogs({ operationId: held.operationId })
      [Symbol.asyncIterator]();
    assert.ok(!(await logs.next()).done, "the held reboot logged a line");

    const watchEnd = failure((async () => {
      for (;;) if ((await watch.next()).done) return;
    })());
    const logsEnd = failure((async () => {
      for (;;) if ((await logs.next()).done) return;
    })());
    await server.shutdown();
    // CANCELLED (or OK) would tell the clients the stream is over; UNAVAILABLE says reconnect.
    const expected = { code: grpc.status.UNAVAILABLE, reason: "SHUTTING_DOWN", metadata: {} };
    assertFailure(await watchEnd, expected, "watch");
    assertFailure(await logsEnd, expected, "logs");
    assert.match((await watchEnd).details, /shutting down: reconnect/);
  },
);

Deno.test(
  "a watch or log stream past maxWatchers gets RESOURCE_EXHAUSTED, TOO_MANY_WATCHERS",
  SANITIZE,
  async () => {
    await using server = await startServer({ port: 0, engine: testEngine(), maxWatchers: 2 });
    importMachines(server.engine, 1);
    const { operationId } = await runOperation(server.engine, {
      machineId: "machine-1",
      type: OperationType.ENTER_MAINTENANCE,
    });
    using operations = connectClient(OperationService, server.address);
    const stop = new AbortController();
    const open = [
      operations.watchOperations({ sendInitialSnapshot: true }, { signal: stop.signal }),
      operations.watchOperations({ sendInitialSnapshot: true }, { signal: stop.signal }),
    ];
    for (const stream of open) {
      assert.equal((await stream.next()).value?.message, "Snapshot complete");
    }

    const expected = {
      code: grpc.status.RESOURCE_EXHAUSTED,
      reason: "TOO_MANY_WATCHERS",
      metadata: { maxWatchers: "2" },
    };
    const watch = await failure(operations.watchOperations({}).next());
    assertFailure(watch, expected, "third watch");
    assert.match(watch.details, /--max-watchers/);
    // Log streams count too: both are long-lived and pin memory.
    const logs = await failure(operations.streamOperationLogs({ operationId }).next());
    assertFailure(logs, expected, "log stream");
    stop.abort();
    await Promise.allSettled(open.map((stream) => stream.next()));
  },
);

Deno.test("an unexpected exception is INTERNAL with reason INTERNAL", SANITIZE, async () => {
  const engine = testEngine();
  engine.getMachine = () => {
    throw new TypeError("boom");
  };
  await using server = await startServer({ port: 0, engine });
  using machines = connectClient(MachineService, server.address);
  const result = await failure(machines.getMachine({ machineId: "machine-1" }));
  assertFailure(result, { code: grpc.status.INTERNAL, reason: "INTERNAL", metadata: {} }, "boom");
  assert.match(result.details, /boom/);
});
