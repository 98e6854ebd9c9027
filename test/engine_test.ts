import assert from "node:assert/strict";
import {
  BmdemoError,
  InvalidArgumentError,
  LaggedError,
  NotFoundError,
} from "../lib/model/errors.ts";
import {
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { operationParams, SNAPSHOT_COMPLETE } from "../lib/engine/mod.ts";
import { DEFAULT_IMAGE_REF } from "../lib/engine/plans.ts";
import {
  enterMaintenance,
  importMachines,
  maintenanceEngine,
  nextEvent,
  runOperation,
  SANITIZE,
  testEngine,
} from "./helpers.ts";

const decoder = new TextDecoder();

Deno.test(
  "Engine.startOperation() admits exactly one of 100 concurrent requests on one machine",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    importMachines(engine, 1);
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, (_, i) =>
        Promise.resolve().then(() =>
          engine.startOperation({
            machineId: "machine-1",
            requestId: `r-${i}`,
            type: OperationType.ENTER_MAINTENANCE,
          })
        )),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r) => r.status === "rejected");
    assert.equal(won.length, 1);
    assert.equal(lost.length, 99);
    for (const r of lost) {
      assert.equal(((r as PromiseRejectedResult).reason as BmdemoError).reason, "MACHINE_BUSY");
    }
    await engine.executor.idle();
    assert.equal(engine.listOperations({}).items.length, 1);
  },
);

Deno.test(
  "Engine.startOperation() answers 100 concurrent replays of one request id with one operation",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    importMachines(engine, 1);
    const results = await Promise.all(
      Array.from({ length: 100 }, () =>
        Promise.resolve().then(() =>
          engine.startOperation({
            machineId: "machine-1",
            requestId: "same",
            type: OperationType.ENTER_MAINTENANCE,
          })
        )),
    );
    assert.equal(new Set(results.map((r) => r.operation.operationId)).size, 1);
    assert.equal(results.filter((r) => r.created).length, 1);
    await engine.executor.idle();
    assert.equal(engine.listOperations({}).items.length, 1);
  },
);

Deno.test(
  "Engine.startOperation() fills in the default image before the idempotency check",
  SANITIZE,
  async () => {
    await using engine = await maintenanceEngine();
    const a = engine.startOperation({
      machineId: "machine-1",
      requestId: "r",
      type: OperationType.REIMAGE,
    });
    const b = engine.startOperation({
      machineId: "machine-1",
      requestId: "r",
      type: OperationType.REIMAGE,
      imageRef: DEFAULT_IMAGE_REF,
    });
    assert.equal(b.operation.operationId, a.operation.operationId);
    assert.deepEqual(a.operation.params, { image_ref: DEFAULT_IMAGE_REF });
    await engine.executor.idle();
  },
);

Deno.test("operationParams() records the image and a forced reboot only", SANITIZE, () => {
  assert.deepEqual(
    operationParams({ machineId: "m", requestId: "r", type: OperationType.REIMAGE, imageRef: "x" }),
    { image_ref: "x" },
  );
  assert.deepEqual(
    operationParams({ machineId: "m", requestId: "r", type: OperationType.REBOOT, force: true }),
    { force: "true" },
  );
  assert.deepEqual(
    operationParams({ machineId: "m", requestId: "r", type: OperationType.REBOOT }),
    {},
  );
  assert.deepEqual(
    operationParams({ machineId: "m", requestId: "r", type: OperationType.ENTER_MAINTENANCE }),
    {},
  );
});

Deno.test(
  "Engine.streamLogs() replays, follows and ends when the operation is terminal",
  SANITIZE,
  async (t) => {
    const hold = Promise.withResolvers<void>();
    const entered = Promise.withResolvers<void>();
    await using engine = testEngine({
      hooks: { joinNode: () => (entered.resolve(), hold.promise) },
    });
    importMachines(engine, 1);
    await enterMaintenance(engine, "machine-1");
    const { operation } = engine.startOperation({
      machineId: "machine-1",
      requestId: "r",
      type: OperationType.REIMAGE,
    });
    await entered.promise;
    const lines: string[] = [];
    const seqs: number[] = [];
    const reading = (async () => {
      for await (const chunk of engine.streamLogs(operation.operationId)) {
        lines.push(decoder.decode(chunk.data));
        seqs.push(Number(chunk.seq));
      }
    })();
    hold.resolve();
    await reading;
    await t.step("every line from the first, in order, without gaps", () => {
      assert.match(lines[0], /^=== Starting operation op-/);
      assert.equal(lines.at(-1), "=== Operation SUCCEEDED ===\n");
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
      assert.ok(lines.includes("[join] Node successfully joined cluster\n"));
    });
    await t.step("a finished operation's log replays whole and ends", async () => {
      const again: string[] = [];
      for await (const chunk of engine.streamLogs(operation.operationId)) {
        again.push(decoder.decode(chunk.data));
      }
      assert.deepEqual(again, lines);
    });
    await t.step("an unknown operation is OPERATION_NOT_FOUND", () => {
      assert.throws(() => engine.streamLogs("op-nope"), NotFoundError);
    });
    await t.step("an operation canceled before it started has a log that ends", async () => {
      importMachines(engine, 2);
      const pending = engine.startOperation({
        machineId: "machine-2",
        requestId: "r",
        type: OperationType.ENTER_MAINTENANCE,
      }).operation;
      engine.cancelOperation(pending.operationId);
      const text: string[] = [];
      for await (const chunk of engine.streamLogs(pending.operationId)) {
        text.push(decoder.decode(chunk.data));
      }
      assert.deepEqual(text, ["=== Operation CANCELED ===\n"]);
    });
  },
);

Deno.test(
  "Engine.watch() filters, and sends a snapshot of active operations first",
  SANITIZE,
  async (t) => {
    const hold = Promise.withResolvers<void>();
    const entered = Promise.withResolvers<void>();
    await using engine = testEngine({
      hooks: { repave: () => (entered.resolve(), hold.promise) },
    });
    importMachines(engine, 2);
    await enterMaintenance(engine, "machine-1");
    await enterMaintenance(engine, "machine-2");
    const running = engine.startOperation({
      machineId: "machine-1",
      requestId: "r",
      type: OperationType.REIMAGE,
    }).operation;
    await entered.promise;
    await t.step("rejects an invalid filter before streaming", () => {
      assert.throws(
        () => engine.watch({ filter: "machine=machine-1" }),
        (e) => e instanceof InvalidArgumentError && e.reason === "INVALID_FILTER",
      );
    });
    await t.step("a mid-operation watcher learns the current state, then live events", async () => {
      const controller = new AbortController();
      const watch = engine.watch({
        filter: "machine_id=machine-1",
        sendInitialSnapshot: true,
        signal: controller.signal,
      });
      const events: OperationEvent[] = [];
      const iterator = watch[Symbol.asyncIterator]();
      const first = await iterator.next();
      events.push(first.value);
      assert.equal(first.value.message, "Snapshot");
      assert.equal(first.value.snapshot?.operationId, running.operationId);
      assert.equal(first.value.snapshot?.phase, OperationPhase.RUNNING);
      assert.equal(first.value.snapshot?.currentStage, "repave-image");
      const marker = await iterator.next();
      assert.equal(marker.value.message, SNAPSHOT_COMPLETE);
      assert.equal(marker.value.snapshot, undefined);
      // An operation on another machine is filtered out.
      await runOperation(engine, { machineId: "machine-2", type: OperationType.REBOOT });
      hold.resolve();
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
        events.push(r.value);
        if (r.value.message === "Operation succeeded") controller.abort();
      }
      assert.deepEqual(
        events.map((e) => e.message),
        [
          "Snapshot",
          "Step repave-image succeeded",
          "Step join-cluster started",
          "Step join-cluster succeeded",
          "Step verify-in-cluster started",
          "Step verify-in-cluster succeeded",
          "Operation succeeded",
        ],
      );
      assert.ok(events.every((e) => e.snapshot?.machineId === "machine-1"));
    });
    await t.step("an operation started after the marker is seen from its first event", async () => {
      const watch = engine.watch({ filter: "machine_id=machine-2", sendInitialSnapshot: true });
      const iterator = watch[Symbol.asyncIterator]();
      assert.equal((await iterator.next()).value.message, SNAPSHOT_COMPLETE);
      const op = engine.startOperation({
        machineId: "machine-2",
        requestId: "after-marker",
        type: OperationType.REBOOT,
      }).operation;
      const messages: string[] = [];
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
        assert.equal(r.value.snapshot?.operationId, op.operationId);
        messages.push(r.value.message);
        if (r.value.message === "Operation succeeded") break;
      }
      watch[Symbol.dispose]();
      assert.deepEqual(messages, [
        "Operation created",
        "Operation started",
        "Step reboot started",
        "Step reboot succeeded",
        "Operation succeeded",
      ]);
    });
  },
);

Deno.test(
  "Engine.watch() ends a watcher that falls behind with LaggedError",
  SANITIZE,
  async () => {
    await using engine = testEngine({}, { events: { capacity: 5 } });
    importMachines(engine, 1);
    const watch = engine.watch();
    const iterator = watch[Symbol.asyncIterator]();
    await enterMaintenance(engine, "machine-1");
    await runOperation(engine, { machineId: "machine-1", type: OperationType.REIMAGE });
    let delivered = 0;
    await assert.rejects(async () => {
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) delivered++;
    }, LaggedError);
    // Dropped while it read nothing: the error comes first, nothing of the gapped stream.
    assert.equal(delivered, 0);
    assert.equal(engine.events.subscriberCount, 0);
  },
);

Deno.test(
  "Engine runs a burst of 1,000 reimages to SUCCEEDED and delivers every event",
  SANITIZE,
  async () => {
    const count = 1000;
    await using engine = testEngine({}, { events: { capacity: 100_000 } });
    importMachines(engine, count);
    for (let i = 1; i <= count; i++) {
      engine.startOperation({
        machineId: `machine-${i}`,
        requestId: "enter",
        type: OperationType.ENTER_MAINTENANCE,
      });
    }
    await engine.executor.idle();
    using events = engine.events.subscribe({ filter: (op) => op.type === OperationType.REIMAGE });
    const ids = new Set<string>();
    for (let i = 1; i <= count; i++) {
      ids.add(
        engine.startOperation({
          machineId: `machine-${i}`,
          requestId: "reimage",
          type: OperationType.REIMAGE,
        }).operation.operationId,
      );
    }
    const perOperation = new Map<string, number>();
    let succeeded = 0;
    while (succeeded < count) {
      const event = await nextEvent(events, () => true);
      const id = event.snapshot!.operationId;
      perOperation.set(id, (perOperation.get(id) ?? 0) + 1);
      if (event.message === "Operation succeeded") succeeded++;
    }
    await engine.executor.idle();
    // created, started, 5 × (step started, step succeeded), succeeded
    assert.deepEqual([...perOperation.values()].filter((n) => n !== 13), []);
    assert.equal(perOperation.size, count);
    const phases = engine.listOperations({ filter: "type=REIMAGE", pageSize: 1000 }).items.map((
      o,
    ) => o.phase);
    assert.equal(phases.length, count);
    assert.ok(phases.every((p) => p === OperationPhase.SUCCEEDED));
    assert.ok([...ids].every((id) => perOperation.has(id)));
  },
);
