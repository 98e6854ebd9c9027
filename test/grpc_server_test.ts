/**
 * The gRPC server end to end: real grpc-js calls on 127.0.0.1 against `startServer()` over a
 * zero-delay engine. Validation, status codes and messages (reference §7.3, docs/api.md "Errors"),
 * idempotency, cancellation, paging and filters, both streams, the slow-watcher rule and
 * shutdown. No sleeps: tests wait on stream messages, engine events, and provider hooks held
 * open with `Promise.withResolvers`.
 *
 * Permissions: `--allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import type { Engine } from "../lib/engine/mod.ts";
import {
  MachineSchema,
  MachineService,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { startServer } from "../lib/grpc/server.ts";
import { Code, connectClient, type ConnectError } from "../lib/client/mod.ts";
import { isTerminalPhase } from "../lib/model/lifecycle.ts";
import {
  enterMaintenance,
  enterMaintenanceBurst,
  holdVerb,
  importMachines,
  maintenanceServer,
  nextEvent,
  rejectsWithCode,
  SANITIZE,
  testEngine,
  testServer,
  untilTerminal,
} from "./helpers.ts";

// ----- helpers -----------------------------------------------------------------------------------

/** Reads a stream to its end; returns what it delivered and the error it ended with, if any. */
async function drain<T>(
  stream: AsyncIterable<T>,
): Promise<{ items: T[]; error?: ConnectError }> {
  const items: T[] = [];
  try {
    for await (const item of stream) items.push(item);
  } catch (error) {
    return { items, error: error as ConnectError };
  }
  return { items };
}

/** Reads the rest of an already started iterator; like {@linkcode drain}. */
async function drainIterator<T>(
  iterator: AsyncIterator<T>,
): Promise<{ items: T[]; error?: ConnectError }> {
  const items: T[] = [];
  try {
    for (;;) {
      const { value, done } = await iterator.next();
      if (done) return { items };
      items.push(value);
    }
  } catch (error) {
    return { items, error: error as ConnectError };
  }
}

/** Runs `start` (a gRPC call that starts an operation) and waits until the operation is terminal. */
async function untilDone(engine: Engine, start: () => Promise<Operation>): Promise<Operation> {
  using subscription = engine.events.subscribe({ capacity: 4096 });
  const op = await start();
  const current = engine.getOperation(op.operationId);
  if (isTerminalPhase(current.phase)) return current;
  const event = await nextEvent(
    subscription,
    (e) => e.snapshot?.operationId === op.operationId && isTerminalPhase(e.snapshot.phase),
  );
  return event.snapshot!;
}

const decoder = new TextDecoder();

/**
 * Whether an event is the "Snapshot complete" marker that may follow the initial snapshot
 * (it carries no operation).
 */
function isMarker(event: OperationEvent): boolean {
  return event.snapshot === undefined && event.message === "Snapshot complete";
}

// ----- MachineService: machines ------------------------------------------------------------------

Deno.test("RegisterMachine creates, then updates only spec and labels", SANITIZE, async () => {
  await using server = await testServer();
  using client = connectClient(MachineService, server.address);

  const created = await client.registerMachine({
    machine: { machineId: "m-1", spec: { provider: "fake", rack: "r1" }, labels: { a: "1" } },
  });
  assert.equal(created.machineId, "m-1");
  assert.equal(created.status?.phase, MachinePhase.FACTORY_READY);
  assert.deepEqual(created.labels, { a: "1" });

  await enterMaintenance(server.engine, "m-1");
  const updated = await client.registerMachine({
    machine: {
      machineId: "m-1",
      spec: { provider: "fake", rack: "r2" },
      labels: { b: "2" },
      status: { phase: MachinePhase.READY },
    },
  });
  assert.equal(updated.spec?.rack, "r2");
  assert.deepEqual(updated.labels, { b: "2" });
  assert.equal(updated.status?.phase, MachinePhase.MAINTENANCE, "status is server-owned");
  assert.equal((await client.listMachines({})).machines.length, 1);

  const generated = await client.registerMachine({ machine: { spec: { provider: "fake" } } });
  assert.notEqual(generated.machineId, "");
});

Deno.test(
  "RegisterMachine refuses a missing machine and a MAINTENANCE start",
  SANITIZE,
  async () => {
    await using server = await testServer();
    using client = connectClient(MachineService, server.address);

    await rejectsWithCode(
      client.registerMachine({}),
      Code.InvalidArgument,
      "machine is required",
    );
    await rejectsWithCode(
      client.registerMachine({
        machine: { machineId: "m-1", status: { phase: MachinePhase.MAINTENANCE } },
      }),
      Code.InvalidArgument,
      /Cannot register machine "m-1" in phase MAINTENANCE/,
    );
    await rejectsWithCode(client.getMachine({ machineId: "m-1" }), Code.NotFound);
    const ready = await client.registerMachine({
      machine: { machineId: "m-2", status: { phase: MachinePhase.READY } },
    });
    assert.equal(ready.status?.phase, MachinePhase.READY);
  },
);

Deno.test("GetMachine returns a machine, NOT_FOUND or INVALID_ARGUMENT", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  using client = connectClient(MachineService, server.address);

  const machine = await client.getMachine({ machineId: "machine-1" });
  assert.equal(machine.machineId, "machine-1");
  assert.deepEqual(machine.labels, { role: "worker" });
  await rejectsWithCode(
    client.getMachine({ machineId: "x" }),
    Code.NotFound,
    /^machine "x" not found/,
  );
  await rejectsWithCode(
    client.getMachine({ machineId: "" }),
    Code.InvalidArgument,
    "machine_id is required",
  );
});

Deno.test("ListMachines keeps registration order, pages and filters", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 5);
  server.engine.registerMachine(
    create(MachineSchema, {
      machineId: "gpu-1",
      labels: { role: "gpu" },
      spec: { provider: "fake" },
    }),
  );
  await enterMaintenance(server.engine, "machine-3");
  using client = connectClient(MachineService, server.address);

  const all = await client.listMachines({});
  assert.deepEqual(all.machines.map((m) => m.machineId), [
    "machine-1",
    "machine-2",
    "machine-3",
    "machine-4",
    "machine-5",
    "gpu-1",
  ]);
  assert.equal(all.nextPageToken, "");

  const ids: string[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await client.listMachines({ pageSize: 4, pageToken });
    assert.ok(page.machines.length <= 4);
    ids.push(...page.machines.map((m) => m.machineId));
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken !== "");
  assert.equal(pages, 2);
  assert.deepEqual(ids, all.machines.map((m) => m.machineId));

  const gpus = await client.listMachines({ filter: "label.role=gpu" });
  assert.deepEqual(gpus.machines.map((m) => m.machineId), ["gpu-1"]);
  const maintenance = await client.listMachines({ filter: "phase=MAINTENANCE" });
  assert.deepEqual(maintenance.machines.map((m) => m.machineId), ["machine-3"]);

  await rejectsWithCode(client.listMachines({ filter: "bogus" }), Code.InvalidArgument);
  await rejectsWithCode(client.listMachines({ filter: "colour=red" }), Code.InvalidArgument);
  await rejectsWithCode(client.listMachines({ pageToken: "garbage" }), Code.InvalidArgument);
});

Deno.test(
  "UpdateMachine replaces labels and spec only and ignores the client status",
  SANITIZE,
  async () => {
    await using server = await testServer();
    importMachines(server.engine, 1);
    using client = connectClient(MachineService, server.address);

    const updated = await client.updateMachine({
      machine: {
        machineId: "machine-1",
        spec: { provider: "fake", serial: "SN-1" },
        labels: { role: "db" },
        status: { phase: MachinePhase.MAINTENANCE, activeOperationId: "op-forged" },
      },
    });
    assert.equal(updated.spec?.serial, "SN-1");
    assert.deepEqual(updated.labels, { role: "db" });
    assert.equal(updated.status?.phase, MachinePhase.FACTORY_READY);
    assert.equal(updated.status?.activeOperationId, "");

    // An empty label map means "unchanged".
    const same = await client.updateMachine({ machine: { machineId: "machine-1" } });
    assert.deepEqual(same.labels, { role: "db" });
    assert.deepEqual(
      (await client.getMachine({ machineId: "machine-1" })).labels,
      { role: "db" },
    );

    await rejectsWithCode(
      client.updateMachine({}),
      Code.InvalidArgument,
      "machine is required",
    );
    await rejectsWithCode(
      client.updateMachine({ machine: { machineId: "nope" } }),
      Code.NotFound,
      /^machine "nope" not found/,
    );
  },
);

// ----- MachineService: operations ----------------------------------------------------------------

Deno.test(
  "operation RPCs validate machine_id and request_id, then the machine",
  SANITIZE,
  async (t) => {
    await using server = await testServer();
    importMachines(server.engine, 1);
    using client = connectClient(MachineService, server.address);
    const calls = {
      reboot: (machineId: string, requestId: string) =>
        client.rebootMachine({ machineId, requestId }),
      reimage: (machineId: string, requestId: string) =>
        client.reimageMachine({ machineId, requestId }),
      enter: (machineId: string, requestId: string) =>
        client.enterMaintenance({ machineId, requestId }),
      exit: (machineId: string, requestId: string) =>
        client.exitMaintenance({ machineId, requestId }),
    };
    for (const [name, call] of Object.entries(calls)) {
      await t.step(name, async () => {
        await rejectsWithCode(
          call("", "r-1"),
          Code.InvalidArgument,
          "machine_id is required",
        );
        await rejectsWithCode(
          call("machine-1", ""),
          Code.InvalidArgument,
          /^request_id is required for idempotency/,
        );
        await rejectsWithCode(
          call("ghost", "r-1"),
          Code.NotFound,
          /^machine "ghost" not found/,
        );
      });
    }
    assert.equal(
      (await client.getMachine({ machineId: "machine-1" })).status?.activeOperationId,
      "",
    );
  },
);

Deno.test(
  "the phase gate answers FAILED_PRECONDITION with the exact message",
  SANITIZE,
  async () => {
    await using server = await testServer();
    importMachines(server.engine, 2);
    using client = connectClient(MachineService, server.address);

    await rejectsWithCode(
      client.reimageMachine({ machineId: "machine-2", requestId: "r-1" }),
      Code.FailedPrecondition,
      'machine "machine-2" is in phase FACTORY_READY; reimage requires MAINTENANCE',
    );
    await rejectsWithCode(
      client.rebootMachine({ machineId: "machine-2", requestId: "r-2" }),
      Code.FailedPrecondition,
      /^machine "machine-2" is in phase FACTORY_READY; reboot requires READY or MAINTENANCE/,
    );
    await rejectsWithCode(
      client.exitMaintenance({ machineId: "machine-2", requestId: "r-3" }),
      Code.FailedPrecondition,
      /^machine "machine-2" is in phase FACTORY_READY; exit-maintenance requires MAINTENANCE/,
    );
  },
);

Deno.test(
  "a busy machine answers FAILED_PRECONDITION naming the active operation",
  SANITIZE,
  async () => {
    const hold = holdVerb();
    await using server = await maintenanceServer({ hooks: { reboot: hold.hook } });
    using client = connectClient(MachineService, server.address);

    const first = await client.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
    await hold.entered;
    const err = await rejectsWithCode(
      client.rebootMachine({ machineId: "machine-1", requestId: "r-2" }),
      Code.FailedPrecondition,
    );
    assert.ok(err.rawMessage.includes(first.operationId), err.rawMessage);
    assert.match(err.rawMessage, /^machine "machine-1" is busy with operation /);

    // A replay of the first request returns it, busy or not.
    const replay = await client.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
    assert.equal(replay.operationId, first.operationId);

    hold.release();
    assert.equal(
      (await untilTerminal(server.engine, first.operationId)).phase,
      OperationPhase.SUCCEEDED,
    );
  },
);

Deno.test("request_id reuse with another image is INVALID_ARGUMENT", SANITIZE, async () => {
  await using server = await maintenanceServer();
  using client = connectClient(MachineService, server.address);

  const op = await untilDone(
    server.engine,
    () => client.reimageMachine({ machineId: "machine-1", requestId: "r-1", imageRef: "img-a" }),
  );
  assert.equal(op.phase, OperationPhase.SUCCEEDED);
  assert.deepEqual(op.params, { image_ref: "img-a" });

  const err = await rejectsWithCode(
    client.reimageMachine({ machineId: "machine-1", requestId: "r-1", imageRef: "img-b" }),
    Code.InvalidArgument,
    /^request_id "r-1" was used for a REIMAGE of machine-1 with image_ref=img-a/,
  );
  assert.ok(err.rawMessage.includes("use a new request_id"));
  const replay = await client.reimageMachine({
    machineId: "machine-1",
    requestId: "r-1",
    imageRef: "img-a",
  });
  assert.equal(replay.operationId, op.operationId);
});

Deno.test("a replay after the phase changed returns the original operation", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  using client = connectClient(MachineService, server.address);

  const enter = await untilDone(
    server.engine,
    () => client.enterMaintenance({ machineId: "machine-1", requestId: "enter-1" }),
  );
  assert.equal(enter.phase, OperationPhase.SUCCEEDED);
  const exit = await untilDone(
    server.engine,
    () => client.exitMaintenance({ machineId: "machine-1", requestId: "exit-1" }),
  );
  assert.equal(exit.phase, OperationPhase.SUCCEEDED);
  const machine = await client.getMachine({ machineId: "machine-1" });
  assert.notEqual(machine.status?.phase, MachinePhase.MAINTENANCE);

  // The machine is out of MAINTENANCE, so a new exit would be refused; the replay is not.
  const replay = await client.exitMaintenance({ machineId: "machine-1", requestId: "exit-1" });
  assert.equal(replay.operationId, exit.operationId);
  assert.equal(replay.phase, OperationPhase.SUCCEEDED);
  await rejectsWithCode(
    client.exitMaintenance({ machineId: "machine-1", requestId: "exit-2" }),
    Code.FailedPrecondition,
  );
  using ops = connectClient(OperationService, server.address);
  assert.equal((await ops.listOperations({})).operations.length, 2);
});

Deno.test(
  "CancelOperation: NOT_FOUND, INVALID_ARGUMENT, CANCELED, idempotent, finished",
  SANITIZE,
  async () => {
    const hold = holdVerb();
    await using server = await startServer({
      port: 0,
      engine: testEngine({ hooks: { reboot: hold.hook } }),
    });
    importMachines(server.engine, 2);
    await enterMaintenance(server.engine, "machine-1");
    using client = connectClient(MachineService, server.address);

    await rejectsWithCode(
      client.cancelOperation({ operationId: "op-nope" }),
      Code.NotFound,
      /^operation "op-nope" not found/,
    );
    await rejectsWithCode(
      client.cancelOperation({ operationId: "" }),
      Code.InvalidArgument,
      "operation_id is required",
    );

    const running = await client.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
    await hold.entered;
    assert.equal(server.engine.getOperation(running.operationId).phase, OperationPhase.RUNNING);
    const canceled = await client.cancelOperation({ operationId: running.operationId });
    assert.equal(canceled.phase, OperationPhase.CANCELED);
    assert.ok(canceled.finishedAt);
    const again = await client.cancelOperation({ operationId: running.operationId });
    assert.equal(again.phase, OperationPhase.CANCELED);
    assert.deepEqual(again.finishedAt, canceled.finishedAt);
    assert.equal(
      (await client.getMachine({ machineId: "machine-1" })).status?.activeOperationId,
      "",
    );

    const done = await untilDone(
      server.engine,
      () => client.enterMaintenance({ machineId: "machine-2", requestId: "r-2" }),
    );
    assert.equal(done.phase, OperationPhase.SUCCEEDED);
    await rejectsWithCode(
      client.cancelOperation({ operationId: done.operationId }),
      Code.FailedPrecondition,
      /already finished with phase SUCCEEDED/,
    );
  },
);

// ----- OperationService: reads -------------------------------------------------------------------

Deno.test("GetOperation and ListOperations with filters and paging", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 3);
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);

  const created: Operation[] = [];
  for (const id of ["machine-1", "machine-2", "machine-3"]) {
    created.push(
      await untilDone(
        server.engine,
        () => machines.enterMaintenance({ machineId: id, requestId: `enter-${id}` }),
      ),
    );
  }
  created.push(
    await untilDone(
      server.engine,
      () => machines.rebootMachine({ machineId: "machine-1", requestId: "reboot-1" }),
    ),
  );

  const got = await operations.getOperation({ operationId: created[3].operationId });
  assert.equal(got.type, OperationType.REBOOT);
  assert.equal(got.phase, OperationPhase.SUCCEEDED);
  await rejectsWithCode(
    operations.getOperation({ operationId: "op-x" }),
    Code.NotFound,
    /^operation "op-x" not found/,
  );
  await rejectsWithCode(
    operations.getOperation({ operationId: "" }),
    Code.InvalidArgument,
    "operation_id is required",
  );

  const all = await operations.listOperations({});
  assert.deepEqual(all.operations.map((o) => o.operationId), created.map((o) => o.operationId));

  const byMachine = await operations.listOperations({ filter: "machine_id=machine-1" });
  assert.deepEqual(
    byMachine.operations.map((o) => o.operationId),
    [created[0].operationId, created[3].operationId],
  );
  const byType = await operations.listOperations({ filter: "type=REBOOT" });
  assert.deepEqual(byType.operations.map((o) => o.operationId), [created[3].operationId]);
  const byPhase = await operations.listOperations({ filter: "phase=SUCCEEDED" });
  assert.equal(byPhase.operations.length, 4);
  const none = await operations.listOperations({ filter: "phase=CANCELED" });
  assert.equal(none.operations.length, 0);
  const both = await operations.listOperations({
    filter: "machine_id=machine-1 AND type=ENTER_MAINTENANCE",
  });
  assert.deepEqual(both.operations.map((o) => o.operationId), [created[0].operationId]);

  const paged: string[] = [];
  let pageToken = "";
  do {
    const page = await operations.listOperations({ pageSize: 3, pageToken });
    assert.ok(page.operations.length <= 3);
    paged.push(...page.operations.map((o) => o.operationId));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  assert.deepEqual(paged, created.map((o) => o.operationId));

  const first = await operations.listOperations({ pageSize: 1, filter: "machine_id=machine-1" });
  assert.notEqual(first.nextPageToken, "");
  // A token is bound to its filter.
  await rejectsWithCode(
    operations.listOperations({ pageSize: 1, pageToken: first.nextPageToken, filter: "" }),
    Code.InvalidArgument,
  );

  for (const filter of ["phase=NOPE", "type=DANCE", "colour=red", "machine_id"]) {
    await rejectsWithCode(operations.listOperations({ filter }), Code.InvalidArgument);
  }
  await rejectsWithCode(operations.listOperations({ pageSize: -1 }), Code.InvalidArgument);
});

// ----- StreamOperationLogs -----------------------------------------------------------------------

Deno.test(
  "StreamOperationLogs replays a finished operation and ends with OK",
  SANITIZE,
  async () => {
    await using server = await maintenanceServer();
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);

    const op = await untilDone(
      server.engine,
      () => machines.reimageMachine({ machineId: "machine-1", requestId: "r-1" }),
    );
    assert.equal(op.phase, OperationPhase.SUCCEEDED);

    const { items, error } = await drain(
      operations.streamOperationLogs({ operationId: op.operationId }),
    );
    assert.equal(error, undefined);
    const expected = server.engine.logs.lines(op.operationId);
    assert.ok(items.length > 5);
    assert.equal(items.length, expected.length);
    assert.deepEqual(items.map((c) => Number(c.seq)), items.map((_, i) => i + 1));
    assert.ok(items.every((c) => c.operationId === op.operationId));
    const text = items.map((c) => decoder.decode(c.data));
    assert.match(text[0], /=== Starting operation/);
    assert.match(text.at(-1)!, /=== Operation SUCCEEDED ===/);
  },
);

Deno.test("StreamOperationLogs follows a running operation until it ends", SANITIZE, async () => {
  const hold = holdVerb();
  await using server = await maintenanceServer({ hooks: { reboot: hold.hook } });
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);

  const op = await machines.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
  await hold.entered;
  const before = server.engine.logs.lines(op.operationId).length;
  assert.ok(before >= 1);

  const iterator = operations.streamOperationLogs({ operationId: op.operationId })
    [Symbol.asyncIterator]();
  // Replay: the lines written before the hold arrive while the verb is still held.
  const replayed = [];
  for (let i = 0; i < before; i++) {
    const { value, done } = await iterator.next();
    assert.equal(done, false);
    replayed.push(value!);
  }
  assert.equal(server.engine.getOperation(op.operationId).phase, OperationPhase.RUNNING);

  hold.release();
  const { items: followed, error } = await drainIterator(iterator);
  assert.equal(error, undefined);
  const all = [...replayed, ...followed];
  assert.ok(followed.length > 0);
  assert.deepEqual(all.map((c) => Number(c.seq)), all.map((_, i) => i + 1));
  assert.equal(all.length, server.engine.logs.lines(op.operationId).length);
  const text = all.map((c) => decoder.decode(c.data));
  assert.ok(text.some((line) => line.includes("[reboot]")));
  assert.match(text.at(-1)!, /=== Operation SUCCEEDED ===/);
  assert.equal(server.engine.getOperation(op.operationId).phase, OperationPhase.SUCCEEDED);
});

Deno.test(
  "StreamOperationLogs delivers NOT_FOUND and INVALID_ARGUMENT on the stream",
  SANITIZE,
  async () => {
    await using server = await testServer();
    using operations = connectClient(OperationService, server.address);

    const missing = await drain(operations.streamOperationLogs({ operationId: "op-missing" }));
    assert.equal(missing.items.length, 0);
    assert.equal(missing.error?.code, grpc.status.NOT_FOUND);
    assert.match(missing.error!.rawMessage, /^operation "op-missing" not found/);

    const empty = await drain(operations.streamOperationLogs({ operationId: "" }));
    assert.equal(empty.error?.code, grpc.status.INVALID_ARGUMENT);
  },
);

// ----- WatchOperations ---------------------------------------------------------------------------

Deno.test(
  "WatchOperations sends a Snapshot first, then only matching events",
  SANITIZE,
  async () => {
    const hold = holdVerb();
    await using server = await startServer({
      port: 0,
      engine: testEngine({ hooks: { reboot: hold.hook } }),
    });
    importMachines(server.engine, 2);
    await enterMaintenance(server.engine, "machine-1");
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);

    const held = await machines.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
    await hold.entered;

    const iterator = operations.watchOperations({
      filter: "machine_id=machine-1",
      sendInitialSnapshot: true,
    })[Symbol.asyncIterator]();
    const first = await iterator.next();
    assert.equal(first.done, false);
    assert.equal(first.value!.message, "Snapshot");
    assert.equal(first.value!.snapshot?.operationId, held.operationId);
    assert.equal(first.value!.snapshot?.phase, OperationPhase.RUNNING);

    // The watch is subscribed now: machine-2's operation must not reach it.
    const other = await untilDone(
      server.engine,
      () => machines.enterMaintenance({ machineId: "machine-2", requestId: "r-2" }),
    );
    assert.equal(other.phase, OperationPhase.SUCCEEDED);
    hold.release();

    const seen = [];
    let markers = 0;
    for (;;) {
      const { value, done } = await iterator.next();
      assert.equal(done, false);
      if (isMarker(value!)) {
        assert.equal(seen.length, 0, "the marker comes right after the snapshot");
        markers++;
        continue;
      }
      seen.push(value!);
      if (isTerminalPhase(value!.snapshot!.phase)) break;
    }
    assert.ok(markers <= 1);
    await iterator.return?.();
    assert.ok(seen.length >= 1);
    assert.ok(seen.every((e) => e.snapshot?.machineId === "machine-1"));
    assert.ok(seen.every((e) => e.snapshot?.operationId === held.operationId));
    assert.equal(seen.at(-1)!.snapshot?.phase, OperationPhase.SUCCEEDED);
  },
);

Deno.test("WatchOperations refuses an invalid filter with INVALID_ARGUMENT", SANITIZE, async () => {
  await using server = await testServer();
  using operations = connectClient(OperationService, server.address);

  for (const filter of ["machine_id", "phase=NOPE", "label.role=worker"]) {
    const { items, error } = await drain(operations.watchOperations({ filter }));
    assert.equal(items.length, 0);
    assert.equal(error?.code, grpc.status.INVALID_ARGUMENT, `${filter}: ${error?.rawMessage}`);
  }
});

Deno.test("a watcher that falls behind ends with RESOURCE_EXHAUSTED", SANITIZE, async () => {
  const hold = holdVerb();
  await using server = await startServer({
    port: 0,
    engine: testEngine({ hooks: { reboot: hold.hook } }, { events: { capacity: 3 } }),
  });
  importMachines(server.engine, 10);
  await enterMaintenance(server.engine, "machine-1");
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);

  const held = await machines.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
  await hold.entered;
  const iterator = operations.watchOperations({ sendInitialSnapshot: true })
    [Symbol.asyncIterator]();
  const first = await iterator.next();
  assert.equal(first.value?.message, "Snapshot");
  assert.equal(first.value?.snapshot?.operationId, held.operationId);

  // Nine operations start in one synchronous burst: nine events land in a queue of three before
  // the server's stream handler can take any, while the client reads nothing.
  await enterMaintenanceBurst(server.engine, { from: 2, to: 10 });

  const { items: received, error } = await drainIterator(iterator);
  const items = received.filter((e) => !isMarker(e));
  assert.equal(
    error?.code,
    grpc.status.RESOURCE_EXHAUSTED,
    `expected RESOURCE_EXHAUSTED, got ${error?.code}: ${error?.rawMessage}`,
  );
  assert.match(error!.rawMessage, /fell more than 3 events behind/);
  // What was queued before the overflow still arrives (at most the queue plus one in hand).
  assert.ok(items.length <= 4, `received ${items.length} events`);
  assert.ok(items.every((e) => e.message !== "Snapshot"));
  hold.release();
  await untilTerminal(server.engine, held.operationId);
});

// ----- shutdown ----------------------------------------------------------------------------------

Deno.test("shutdown ends open watches and cancels running operations", SANITIZE, async () => {
  const hold = holdVerb();
  await using server = await maintenanceServer({ hooks: { reboot: hold.hook } });
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);

  const held = await machines.rebootMachine({ machineId: "machine-1", requestId: "r-1" });
  await hold.entered;
  const iterator = operations.watchOperations({ sendInitialSnapshot: true })
    [Symbol.asyncIterator]();
  const first = await iterator.next();
  assert.equal(first.value?.snapshot?.operationId, held.operationId);

  const rest = drainIterator(iterator);
  await server.shutdown();
  const { items: received, error } = await rest;
  const items = received.filter((e) => !isMarker(e));
  // The stream ended, with OK or an error status; if events came first, they were about the op.
  assert.ok(items.every((e) => e.snapshot?.operationId === held.operationId));
  if (error) assert.notEqual(error.code, grpc.status.UNKNOWN);
  const op = server.engine.getOperation(held.operationId);
  assert.equal(op.phase, OperationPhase.CANCELED);
  assert.equal(server.engine.getMachine("machine-1").status?.activeOperationId, "");
  // Idempotent; `await using` calls it once more.
  await server.shutdown();
});

// ----- no handler leaks an exception -------------------------------------------------------------

Deno.test(
  "invalid requests get defined status codes, never UNKNOWN or INTERNAL",
  SANITIZE,
  async () => {
    await using server = await testServer();
    importMachines(server.engine, 1);
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);

    // Bizarre label keys are refused (LIMITS in lib/store/limits.ts), never stored.
    const invalid: Promise<unknown>[] = [
      ...["", "a=b AND c", "🙂\u0000", "k".repeat(1000)].map((key) =>
        machines.registerMachine({ machine: { machineId: "odd", labels: { [key]: "x" } } })
      ),
      machines.registerMachine({
        machine: { machineId: "bad", status: { phase: 99 as MachinePhase } },
      }),
      machines.updateMachine({ machine: { machineId: "" } }),
      machines.listMachines({ pageSize: -5 }),
      machines.listMachines({ filter: "label.=x" }),
      machines.listMachines({ filter: "label.a=b AND c" }),
      machines.rebootMachine({ machineId: "\u0000", requestId: "r" }),
      machines.reimageMachine({ machineId: "machine-1", requestId: "r", imageRef: "\u{1F600}" }),
      machines.cancelOperation({ operationId: "\u{1F600}" }),
      operations.getOperation({ operationId: " " }),
      operations.listOperations({ pageToken: "!!!" }),
    ];
    const results = await Promise.allSettled(invalid);
    for (const [i, result] of results.entries()) {
      assert.equal(result.status, "rejected", `request ${i} should fail`);
      const code = ((result as PromiseRejectedResult).reason as ConnectError).code;
      assert.ok(
        [
          grpc.status.INVALID_ARGUMENT,
          grpc.status.NOT_FOUND,
          grpc.status.FAILED_PRECONDITION,
        ].includes(code as number),
        `request ${i}: ${grpc.status[code]}`,
      );
    }
  },
);
