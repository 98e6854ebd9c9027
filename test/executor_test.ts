import assert from "node:assert/strict";
import { FailedPreconditionError, ShuttingDownError } from "../lib/model/errors.ts";
import { defaultBackoff, formatDelay } from "../lib/engine/step_attempts.ts";
import {
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { getCondition } from "../lib/model/lifecycle.ts";
import { BUILTIN_PLANS, type Plan } from "../lib/engine/plans.ts";
import { type ProviderCall, ProviderError } from "../lib/provider/mod.ts";
import {
  enterMaintenance,
  importMachines,
  logText,
  maintenanceEngine,
  messagesOf,
  nextEvent,
  runOperation,
  SANITIZE,
  takeQueued,
  testEngine,
} from "./helpers.ts";

const REIMAGE_STEPS = [
  "set-netboot",
  "reboot-to-netboot",
  "repave-image",
  "join-cluster",
  "verify-in-cluster",
];

Deno.test(
  "Executor runs a REBOOT to SUCCEEDED with one event per transition",
  SANITIZE,
  async () => {
    await using engine = await maintenanceEngine();
    using events = engine.events.subscribe();
    const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
    assert.equal(op.phase, OperationPhase.SUCCEEDED);
    assert.equal(op.currentStage, "reboot");
    assert.ok(op.startedAt && op.finishedAt);
    assert.deepEqual(messagesOf(await takeQueued(events), op.operationId), [
      "Operation created",
      "Operation started",
      "Step reboot started",
      "Step reboot succeeded",
      "Operation succeeded",
    ]);
    const machine = engine.getMachine("machine-1");
    assert.equal(machine.status?.phase, MachinePhase.MAINTENANCE);
    assert.equal(getCondition(machine.status!.conditions, "Reachable")?.status, true);
    assert.ok(machine.status?.lastSeen);
  },
);

Deno.test(
  "Executor runs a REIMAGE through its five steps and provisions the machine",
  SANITIZE,
  async () => {
    await using engine = await maintenanceEngine();
    using events = engine.events.subscribe();
    const op = await runOperation(engine, {
      machineId: "machine-1",
      type: OperationType.REIMAGE,
      imageRef: "ubuntu-2404",
    });
    assert.equal(op.phase, OperationPhase.SUCCEEDED);
    assert.equal(op.currentStage, "verify-in-cluster");
    assert.deepEqual(op.params, { image_ref: "ubuntu-2404" });
    assert.deepEqual(messagesOf(await takeQueued(events), op.operationId), [
      "Operation created",
      "Operation started",
      ...REIMAGE_STEPS.flatMap((s) => [`Step ${s} started`, `Step ${s} succeeded`]),
      "Operation succeeded",
    ]);
    const machine = engine.getMachine("machine-1");
    assert.equal(machine.status?.phase, MachinePhase.MAINTENANCE);
    for (const type of ["Provisioned", "InCustomerCluster", "Reachable"] as const) {
      assert.equal(getCondition(machine.status!.conditions, type)?.status, true, type);
    }
    const log = logText(engine, op.operationId);
    assert.equal(log[0], `=== Starting operation ${op.operationId} (type: REIMAGE) ===`);
    assert.equal(log[1], "Parameters: image_ref=ubuntu-2404");
    assert.ok(log.includes("[repave] Image: ubuntu-2404"));
    for (const [i, step] of REIMAGE_STEPS.entries()) {
      assert.ok(log.includes(`--- Step ${i + 1}/5: ${step} ---`), step);
    }
    assert.equal(log.at(-1), "=== Operation SUCCEEDED ===");
    const seqs = engine.logs.lines(op.operationId).map((c) => Number(c.seq));
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
  },
);

Deno.test("Executor changes the phase only through maintenance operations", SANITIZE, async () => {
  await using engine = testEngine();
  importMachines(engine, 1);
  const enter = await runOperation(engine, {
    machineId: "machine-1",
    type: OperationType.ENTER_MAINTENANCE,
  });
  assert.equal(enter.phase, OperationPhase.SUCCEEDED);
  assert.equal(enter.currentStage, "");
  assert.equal(engine.getMachine("machine-1").status?.phase, MachinePhase.MAINTENANCE);
  const exit = await runOperation(engine, {
    machineId: "machine-1",
    type: OperationType.EXIT_MAINTENANCE,
  });
  assert.equal(exit.phase, OperationPhase.SUCCEEDED);
  const machine = engine.getMachine("machine-1");
  assert.equal(machine.status?.phase, MachinePhase.READY);
  assert.equal(machine.status?.effectiveState, EffectiveState.IDLE);
});

Deno.test(
  "Executor applies machine effects before publishing the terminal event",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    importMachines(engine, 1);
    const seen: MachinePhase[] = [];
    using events = engine.events.subscribe();
    const { operation } = engine.startOperation({
      machineId: "machine-1",
      requestId: "r-1",
      type: OperationType.ENTER_MAINTENANCE,
    });
    await nextEvent(events, (e) => {
      // Read the machine the moment the event is delivered.
      if (e.message === "Operation succeeded") {
        seen.push(engine.getMachine("machine-1").status!.phase);
        assert.equal(engine.getMachine("machine-1").status?.activeOperationId, "");
        return true;
      }
      return false;
    });
    assert.deepEqual(seen, [MachinePhase.MAINTENANCE]);
    assert.equal(engine.getOperation(operation.operationId).phase, OperationPhase.SUCCEEDED);
  },
);

Deno.test("Executor retries a failing step with backoff, then succeeds", SANITIZE, async () => {
  const retries: number[] = [];
  await using engine = testEngine(
    { faults: { setNetboot: { kind: "fail", times: 2 } } },
    { executor: { backoff: (retry) => (retries.push(retry), 0) } },
  );
  importMachines(engine, 1);
  await enterMaintenance(engine, "machine-1");
  const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REIMAGE });
  assert.equal(op.phase, OperationPhase.SUCCEEDED);
  assert.deepEqual(retries, [1, 2]);
  const log = logText(engine, op.operationId);
  assert.equal(log.filter((l) => l === "Step failed: simulated netboot failure").length, 2);
  assert.ok(log.includes("Retry 1/2 after 0ms..."));
  assert.ok(log.includes("Retry 2/2 after 0ms..."));
  const stderr = engine.logs.lines(op.operationId).filter((c) => c.stream === "stderr");
  assert.equal(stderr.length, 4); // two provider ERROR lines, two "Step failed" lines
});

Deno.test("Executor does not retry a permanent provider failure", SANITIZE, async () => {
  let calls = 0;
  const fail = (permanent: boolean) => () => {
    calls++;
    return Promise.reject(new ProviderError("BMC refused the credential", { permanent }));
  };
  for (const permanent of [true, false]) {
    calls = 0;
    await using engine = await maintenanceEngine({ hooks: { reboot: fail(permanent) } });
    const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
    assert.equal(op.phase, OperationPhase.FAILED);
    assert.equal(op.error?.message, "BMC refused the credential");
    // The reboot plan's step allows one retry: a transient failure spends it, a permanent one not.
    assert.equal(calls, permanent ? 1 : 2);
    assert.deepEqual(op.error?.details, { step: "reboot", attempts: permanent ? "1" : "2" });
    assert.equal(
      logText(engine, op.operationId).includes("Not retried: the failure is permanent"),
      permanent,
    );
  }
});

Deno.test("Executor fails an operation whose step exhausts its retries", SANITIZE, async (t) => {
  await using engine = await maintenanceEngine({ faults: { reboot: { kind: "fail" } } });
  using events = engine.events.subscribe();
  const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
  await t.step("records the error", () => {
    assert.equal(op.phase, OperationPhase.FAILED);
    assert.equal(op.currentStage, "reboot");
    assert.deepEqual(
      { code: op.error?.code, message: op.error?.message, retryable: op.error?.retryable },
      { code: "EXECUTION_FAILED", message: "simulated reboot failure", retryable: true },
    );
    assert.deepEqual(op.error?.details, { step: "reboot", attempts: "2" });
  });
  await t.step("publishes step failed then operation failed", async () => {
    assert.deepEqual(messagesOf(await takeQueued(events), op.operationId), [
      "Operation created",
      "Operation started",
      "Step reboot started",
      "Step reboot failed: simulated reboot failure",
      "Operation failed: simulated reboot failure",
    ]);
  });
  await t.step("flags the machine for intervention without changing its phase", () => {
    const machine = engine.getMachine("machine-1");
    assert.equal(machine.status?.phase, MachinePhase.MAINTENANCE);
    assert.equal(machine.status?.effectiveState, EffectiveState.ATTENTION);
    assert.equal(machine.status?.activeOperationId, "");
    assert.equal(
      logText(engine, op.operationId).at(-1),
      "=== Operation FAILED: simulated reboot failure ===",
    );
  });
});

Deno.test(
  "Executor times out a hanging step, retries it, then fails with STEP_TIMEOUT",
  SANITIZE,
  async () => {
    const plans = new Map(BUILTIN_PLANS);
    plans.set(
      OperationType.REBOOT,
      {
        id: "plan/quick-timeout",
        displayName: "Reboot with a short timeout",
        steps: [{
          name: "reboot",
          timeoutMs: 5,
          maxRetries: 1,
          run: ({ provider, call, machine }) => provider.reboot(call, machine, { force: false }),
        }],
      } satisfies Plan,
    );
    await using engine = testEngine({ faults: { reboot: { kind: "hang" } } }, {
      executor: { plans },
    });
    importMachines(engine, 1);
    await enterMaintenance(engine, "machine-1");
    const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
    assert.equal(op.phase, OperationPhase.FAILED);
    assert.equal(op.error?.code, "STEP_TIMEOUT");
    assert.equal(op.error?.message, "step reboot timed out after 5ms");
    assert.equal(
      logText(engine, op.operationId).filter((l) =>
        l === "Step failed: step reboot timed out after 5ms"
      )
        .length,
      2,
    );
  },
);

Deno.test("Executor does not wait for a step that ignores its abort signal", SANITIZE, async () => {
  const plans = new Map(BUILTIN_PLANS);
  const never = Promise.withResolvers<void>();
  plans.set(OperationType.REBOOT, {
    id: "plan/stuck",
    displayName: "Stuck",
    steps: [{ name: "stuck", timeoutMs: 5, maxRetries: 0, run: () => never.promise }],
  });
  await using engine = await maintenanceEngine({}, { executor: { plans } });
  const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
  assert.equal(op.error?.code, "STEP_TIMEOUT");
  never.resolve();
});

Deno.test(
  "Executor fails an operation type without a plan instead of guessing",
  SANITIZE,
  async () => {
    const plans = new Map(BUILTIN_PLANS);
    plans.delete(OperationType.REBOOT);
    await using engine = await maintenanceEngine({}, { executor: { plans } });
    const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
    assert.equal(op.phase, OperationPhase.FAILED);
    assert.deepEqual([op.error?.code, op.error?.retryable], ["NO_PLAN", false]);
    assert.match(op.error!.message, /no plan for operation type REBOOT/);
  },
);

Deno.test("Executor cancels a running step through its signal", SANITIZE, async (t) => {
  const entered = Promise.withResolvers<ProviderCall>();
  await using engine = testEngine({
    hooks: {
      repave: (call) => {
        entered.resolve(call);
        return new Promise(() => {});
      },
    },
  });
  importMachines(engine, 1);
  await enterMaintenance(engine, "machine-1");
  using events = engine.events.subscribe();
  const { operation } = engine.startOperation({
    machineId: "machine-1",
    requestId: "r-1",
    type: OperationType.REIMAGE,
  });
  const call = await entered.promise;
  const canceled = engine.cancelOperation(operation.operationId);
  await engine.executor.idle();
  await t.step("the operation is CANCELED at the step it was in", () => {
    assert.equal(canceled.phase, OperationPhase.CANCELED);
    assert.equal(canceled.currentStage, "repave-image");
    assert.equal(call.signal.aborted, true);
  });
  await t.step("exactly one cancel event and nothing after it", async () => {
    const messages = messagesOf(await takeQueued(events), operation.operationId);
    assert.equal(messages.filter((m) => m === "Operation canceled").length, 1);
    assert.equal(messages.at(-1), "Operation canceled");
    assert.ok(!messages.includes("Step repave-image failed"));
  });
  await t.step("the machine shows the cancellation, phase unchanged", () => {
    const machine = engine.getMachine("machine-1");
    assert.equal(machine.status?.phase, MachinePhase.MAINTENANCE);
    assert.equal(machine.status?.activeOperationId, "");
    const flag = getCondition(machine.status!.conditions, "OperationCanceled");
    assert.deepEqual([flag?.status, flag?.reason], [true, "UserCanceled"]);
    assert.equal(getCondition(machine.status!.conditions, "Provisioned"), undefined);
  });
  await t.step("the log ends with the cancellation and nothing was written after it", () => {
    assert.equal(logText(engine, operation.operationId).at(-1), "=== Operation CANCELED ===");
    assert.equal(engine.logs.droppedAfterEnd, 0);
  });
  await t.step("cancelling again returns it and changes nothing", async () => {
    const before = engine.getMachine("machine-1");
    assert.equal(engine.cancelOperation(operation.operationId).phase, OperationPhase.CANCELED);
    assert.deepEqual(engine.getMachine("machine-1"), before);
    assert.deepEqual(await takeQueued(events), []);
  });
});

Deno.test("Executor cancels during a retry backoff without waiting it out", SANITIZE, async () => {
  await using engine = testEngine(
    { faults: { reboot: { kind: "fail" } } },
    { executor: { backoff: () => 3_600_000 } },
  );
  importMachines(engine, 1);
  await enterMaintenance(engine, "machine-1");
  const { operation } = engine.startOperation({
    machineId: "machine-1",
    requestId: "r-1",
    type: OperationType.REBOOT,
  });
  for await (const chunk of engine.streamLogs(operation.operationId)) {
    if (new TextDecoder().decode(chunk.data).startsWith("Retry 1/1")) break;
  }
  engine.cancelOperation(operation.operationId);
  await engine.executor.idle();
  assert.equal(engine.getOperation(operation.operationId).phase, OperationPhase.CANCELED);
});

Deno.test(
  "Executor bounds concurrent operations and queues the rest in order",
  SANITIZE,
  async () => {
    const held: PromiseWithResolvers<void>[] = [];
    const started = Promise.withResolvers<void>();
    await using engine = testEngine({
      hooks: {
        reboot: () => {
          const hold = Promise.withResolvers<void>();
          held.push(hold);
          if (held.length === 2) started.resolve();
          return hold.promise;
        },
      },
    }, { executor: { maxConcurrent: 2 } });
    importMachines(engine, 5);
    for (let i = 1; i <= 5; i++) await enterMaintenance(engine, `machine-${i}`);
    using events = engine.events.subscribe();
    const ops = [1, 2, 3, 4, 5].map((i) =>
      engine.startOperation({
        machineId: `machine-${i}`,
        requestId: "r",
        type: OperationType.REBOOT,
      })
        .operation
    );
    await started.promise;
    assert.equal(engine.executor.runningCount, 2);
    assert.equal(engine.executor.queuedCount, 3);
    assert.equal(engine.getOperation(ops[2].operationId).phase, OperationPhase.PENDING);
    // Cancelling a queued operation removes it before it ever starts.
    engine.cancelOperation(ops[4].operationId);
    assert.equal(engine.executor.queuedCount, 2);
    while (held.length < 4 || engine.executor.runningCount > 0) {
      for (const hold of held) hold.resolve();
      await nextEvent(events, (e) => e.message === "Operation succeeded");
    }
    await engine.executor.idle();
    const phases = ops.map((op) => engine.getOperation(op.operationId).phase);
    assert.deepEqual(phases, [
      OperationPhase.SUCCEEDED,
      OperationPhase.SUCCEEDED,
      OperationPhase.SUCCEEDED,
      OperationPhase.SUCCEEDED,
      OperationPhase.CANCELED,
    ]);
    const starts = (await takeQueued(events)).filter((e) => e.message === "Operation started");
    assert.ok(!starts.some((e) => e.snapshot?.operationId === ops[4].operationId));
  },
);

Deno.test("Executor runs an operation once however often it is submitted", SANITIZE, async () => {
  await using engine = await maintenanceEngine();
  const first = engine.startOperation({
    machineId: "machine-1",
    requestId: "r-1",
    type: OperationType.REBOOT,
  });
  engine.executor.submit(first.operation.operationId);
  engine.startOperation({ machineId: "machine-1", requestId: "r-1", type: OperationType.REBOOT });
  await engine.executor.idle();
  const log = logText(engine, first.operation.operationId);
  assert.equal(log.filter((l) => l.startsWith("=== Starting operation")).length, 1);
  assert.equal(log.filter((l) => l === "[reboot] Initiating graceful reboot").length, 1);
});

Deno.test(
  "Executor.shutdown() cancels running and queued operations and settles",
  SANITIZE,
  async () => {
    const entered = Promise.withResolvers<void>();
    const engine = testEngine({
      hooks: { repave: () => (entered.resolve(), new Promise(() => {})) },
    }, { executor: { maxConcurrent: 1 } });
    importMachines(engine, 2);
    await enterMaintenance(engine, "machine-1");
    await enterMaintenance(engine, "machine-2");
    const watch = engine.watch();
    const iterator = watch[Symbol.asyncIterator]();
    const running = engine.startOperation({
      machineId: "machine-1",
      requestId: "r",
      type: OperationType.REIMAGE,
    }).operation;
    const queued = engine.startOperation({
      machineId: "machine-2",
      requestId: "r",
      type: OperationType.REIMAGE,
    }).operation;
    await entered.promise;
    await engine.shutdown();
    for (const op of [running, queued]) {
      assert.equal(engine.getOperation(op.operationId).phase, OperationPhase.CANCELED);
      const machine = engine.getMachine(op.machineId);
      assert.equal(
        getCondition(machine.status!.conditions, "OperationCanceled")?.reason,
        "ServerShutdown",
      );
      assert.equal(machine.status?.activeOperationId, "");
    }
    assert.equal(engine.executor.runningCount, 0);
    assert.throws(
      () =>
        engine.startOperation({
          machineId: "machine-1",
          requestId: "x",
          type: OperationType.REBOOT,
        }),
      ShuttingDownError,
    );
    // Open watches deliver what was published, then end with ShuttingDownError (reconnect).
    const seen: string[] = [];
    await assert.rejects(async () => {
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
        seen.push(r.value.message);
      }
    }, ShuttingDownError);
    assert.equal(seen.filter((m) => m === "Operation canceled").length, 2);
  },
);

Deno.test(
  "Executor resolves a cancel racing the last step with one consistent outcome",
  SANITIZE,
  async (t) => {
    for (const order of ["cancel-first", "finish-first"] as const) {
      await t.step(order, async () => {
        const gate = Promise.withResolvers<void>();
        const entered = Promise.withResolvers<void>();
        await using engine = testEngine({
          hooks: { verifyInCluster: () => (entered.resolve(), gate.promise) },
        });
        importMachines(engine, 1);
        await enterMaintenance(engine, "machine-1");
        using events = engine.events.subscribe();
        const { operation } = engine.startOperation({
          machineId: "machine-1",
          requestId: "r",
          type: OperationType.REIMAGE,
        });
        await entered.promise;
        let cancelError: unknown;
        if (order === "cancel-first") {
          gate.resolve();
          // The step's completion is queued as a microtask; the cancel runs before it.
          try {
            engine.cancelOperation(operation.operationId);
          } catch (error) {
            cancelError = error;
          }
        } else {
          gate.resolve();
          await nextEvent(events, (e) => e.message === "Operation succeeded");
          try {
            engine.cancelOperation(operation.operationId);
          } catch (error) {
            cancelError = error;
          }
        }
        await engine.executor.idle();
        const final = engine.getOperation(operation.operationId);
        const machine = engine.getMachine("machine-1");
        const terminalEvents = messagesOf(
          [...(await takeQueued(events))],
          operation.operationId,
        ).filter((m) =>
          m.startsWith("Operation ") && m !== "Operation created" && m !== "Operation started"
        );
        assert.equal(terminalEvents.length, order === "cancel-first" ? 1 : 0);
        if (final.phase === OperationPhase.CANCELED) {
          assert.equal(cancelError, undefined);
          assert.equal(getCondition(machine.status!.conditions, "OperationCanceled")?.status, true);
          assert.equal(getCondition(machine.status!.conditions, "Provisioned"), undefined);
        } else {
          assert.equal(final.phase, OperationPhase.SUCCEEDED);
          assert.ok(cancelError instanceof FailedPreconditionError);
          assert.equal(getCondition(machine.status!.conditions, "Provisioned")?.status, true);
          assert.equal(
            getCondition(machine.status!.conditions, "OperationCanceled")?.status,
            false,
          );
        }
        assert.equal(machine.status?.activeOperationId, "");
        assert.equal(
          final.phase,
          order === "cancel-first" ? OperationPhase.CANCELED : OperationPhase.SUCCEEDED,
        );
      });
    }
  },
);

Deno.test("defaultBackoff() doubles from 500 ms, caps at 10 s and jitters", SANITIZE, () => {
  assert.deepEqual([1, 2, 3].map((r) => defaultBackoff(r, () => 0)), [250, 500, 1000]);
  assert.deepEqual([1, 2, 3].map((r) => defaultBackoff(r, () => 1)), [500, 1000, 2000]);
  assert.equal(defaultBackoff(20, () => 1), 10_000);
  assert.equal(defaultBackoff(20, () => 0), 5_000);
});

Deno.test("formatDelay() prints milliseconds below a second and seconds above", SANITIZE, () => {
  assert.deepEqual([0, 750, 1000, 1500, 10_000].map(formatDelay), [
    "0ms",
    "750ms",
    "1s",
    "1.5s",
    "10s",
  ]);
});
