import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import type { Engine } from "../lib/engine/mod.ts";
import {
  MachineSchema,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { getCondition } from "../lib/model/lifecycle.ts";
import { INTERRUPTED_MESSAGE } from "../lib/engine/recovery.ts";
import { createSqliteStore } from "../lib/store/sqlite.ts";
import type { Store } from "../lib/store/mod.ts";
import { nextEvent, runOperation, SANITIZE, testEngine, testServer } from "./helpers.ts";
import { validateCreateRequest } from "../lib/store/validation.ts";

function readyMachine(engine: Engine, machineId = "machine-1"): void {
  engine.registerMachine(create(MachineSchema, {
    machineId,
    spec: { provider: "fake" },
    status: { phase: MachinePhase.READY },
  }));
}

/** An engine whose reboot is held open until `release()`. */
function heldEngine(store?: Store) {
  const entered = Promise.withResolvers<void>();
  const hold = Promise.withResolvers<void>();
  const engine = testEngine({ hooks: { reboot: () => (entered.resolve(), hold.promise) } }, {
    store,
  });
  return { engine, entered: entered.promise, release: () => hold.resolve() };
}

async function text(iterable: AsyncIterable<{ data: Uint8Array }>): Promise<string[]> {
  const lines: string[] = [];
  for await (const chunk of iterable) lines.push(new TextDecoder().decode(chunk.data).trimEnd());
  return lines;
}

Deno.test(
  "recovery: an operation RUNNING at a crash is FAILED as INTERRUPTED",
  SANITIZE,
  async (t) => {
    const dir = Deno.makeTempDirSync({ prefix: "bmdemo-recovery-" });
    try {
      const path = `${dir}/bmdemo.db`;
      const crashed = `${dir}/crashed.db`;
      let operationId = "";
      {
        const store = createSqliteStore(path);
        const held = heldEngine(store);
        readyMachine(held.engine);
        operationId = held.engine.startOperation({
          machineId: "machine-1",
          requestId: "boot-1",
          type: OperationType.REBOOT,
        }).operation.operationId;
        await held.entered;
        assert.equal(held.engine.getOperation(operationId).phase, OperationPhase.RUNNING);
        // The crash: the files as a killed process leaves them (every commit is in the WAL file).
        // This process then lets its own engine go quietly; the copy never learns of it.
        Deno.copyFileSync(path, crashed);
        Deno.copyFileSync(`${path}-wal`, `${crashed}-wal`);
        held.release();
        await held.engine.shutdown();
        store.close();
      }

      using store = createSqliteStore(crashed);
      assert.equal(store.loaded.active, 1);
      await using engine = testEngine({}, { store });
      using events = engine.events.subscribe();
      const result = engine.recover();

      await t.step("the operation is FAILED with INTERRUPTED", async () => {
        assert.deepEqual(result.operationIds, [operationId]);
        assert.ok(result.ms >= 0);
        const op = engine.getOperation(operationId);
        assert.equal(op.phase, OperationPhase.FAILED);
        assert.equal(op.error?.code, "INTERRUPTED");
        assert.equal(op.error?.retryable, true);
        assert.equal(op.error?.message, INTERRUPTED_MESSAGE);
        assert.deepEqual(engine.store.activeOperations(), []);
        const event = await nextEvent(events, (e) => e.snapshot?.operationId === operationId);
        assert.equal(event.message, `Operation interrupted: ${INTERRUPTED_MESSAGE}`);
        assert.equal(event.snapshot?.phase, OperationPhase.FAILED);
        assert.deepEqual(engine.recover(), result, "recovery runs once");
      });
      await t.step("the machine needs attention and is not busy", () => {
        const status = engine.getMachine("machine-1").status!;
        assert.equal(status.activeOperationId, "");
        assert.equal(status.effectiveState, EffectiveState.ATTENTION);
        const flag = getCondition(status.conditions, "NeedsIntervention");
        assert.equal(flag?.status, true);
        assert.equal(flag?.reason, "OperationInterrupted");
      });
      await t.step("its log has the lines from before the crash and ends", async () => {
        const lines = await text(engine.streamLogs(operationId));
        assert.match(lines[0], /=== Starting operation/);
        assert.equal(lines.at(-1), `=== Operation FAILED: ${INTERRUPTED_MESSAGE} ===`);
      });
      await t.step("a replay of its request id returns it", () => {
        const replay = engine.startOperation({
          machineId: "machine-1",
          requestId: "boot-1",
          type: OperationType.REBOOT,
        });
        assert.equal(replay.created, false);
        assert.equal(replay.operation.operationId, operationId);
        assert.equal(replay.operation.phase, OperationPhase.FAILED);
      });
      await t.step("a new operation runs and clears ATTENTION", async () => {
        const op = await runOperation(engine, {
          machineId: "machine-1",
          type: OperationType.REBOOT,
        });
        assert.equal(op.phase, OperationPhase.SUCCEEDED);
        const status = engine.getMachine("machine-1").status!;
        assert.equal(status.effectiveState, EffectiveState.IDLE);
        assert.equal(getCondition(status.conditions, "NeedsIntervention")?.status, false);
      });
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

Deno.test("recovery: the in-memory store has nothing to recover", SANITIZE, async () => {
  await using engine = testEngine();
  readyMachine(engine);
  assert.deepEqual(engine.recover().operationIds, []);
});

Deno.test("recovery: the server runs it before accepting calls", SANITIZE, async () => {
  const dir = Deno.makeTempDirSync({ prefix: "bmdemo-recovery-" });
  try {
    using store = createSqliteStore(`${dir}/bmdemo.db`);
    store.registerMachine(create(MachineSchema, { machineId: "machine-1" }));
    const { operation } = store.createOperation(validateCreateRequest({
      machineId: "machine-1",
      requestId: "r",
      type: OperationType.ENTER_MAINTENANCE,
    }));
    store.markRunning(operation.operationId);
    await using server = await testServer({ engine: testEngine({}, { store }) });
    assert.deepEqual(server.recovery.operationIds, [operation.operationId]);
    assert.equal(store.getOperation(operation.operationId).error?.code, "INTERRUPTED");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

for (const kind of ["memory", "sqlite"] as const) {
  Deno.test(
    `recovery: graceful shutdown cancels (ServerShutdown) with the ${kind} store`,
    SANITIZE,
    async () => {
      const dir = Deno.makeTempDirSync({ prefix: "bmdemo-recovery-" });
      try {
        const path = `${dir}/bmdemo.db`;
        const store = kind === "sqlite" ? createSqliteStore(path) : undefined;
        const held = heldEngine(store);
        readyMachine(held.engine);
        const { operation } = held.engine.startOperation({
          machineId: "machine-1",
          requestId: "boot-1",
          type: OperationType.REBOOT,
        });
        await held.entered;
        await held.engine.shutdown();
        held.release();
        const check = (
          engine: { getOperation: Engine["getOperation"]; getMachine: Engine["getMachine"] },
        ) => {
          assert.equal(engine.getOperation(operation.operationId).phase, OperationPhase.CANCELED);
          const flag = getCondition(
            engine.getMachine("machine-1").status!.conditions,
            "OperationCanceled",
          );
          assert.equal(flag?.reason, "ServerShutdown");
          assert.equal(engine.getMachine("machine-1").status!.activeOperationId, "");
        };
        check(held.engine);
        if (store) {
          store.close();
          using reopened = createSqliteStore(path);
          check(reopened);
          await using engine = testEngine({}, { store: reopened });
          assert.deepEqual(engine.recover().operationIds, []);
          const lines = await text(engine.streamLogs(operation.operationId));
          assert.equal(lines.at(-1), "=== Operation CANCELED: the server is shutting down ===");
        }
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    },
  );
}
