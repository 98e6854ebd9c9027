/**
 * The event vocabulary: every event carries structured fields that say what its message says,
 * and the CLI follows an operation from those fields alone.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationEvent_Kind as EventKind,
  OperationEventSchema,
  OperationSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { INTERRUPTED_MESSAGE, recoverInterrupted } from "../lib/engine/recovery.ts";
import { followOperation } from "../lib/cli/follow.ts";
import type { Session } from "../lib/cli/session.ts";
import {
  maintenanceEngine,
  pendingReboot,
  runOperation,
  SANITIZE,
  takeQueued,
  testEngine,
} from "./helpers.ts";

/** The fields of an event that the vocabulary sets, with the message they must agree with. */
function fieldsOf(event: OperationEvent) {
  const { message, kind, step, stepIndex, stepCount, attempt, detail } = event;
  return { message, kind: EventKind[kind], step, stepIndex, stepCount, attempt, detail };
}

const NONE = { step: "", stepIndex: 0, stepCount: 0, attempt: 0, detail: "" };

function step(
  message: string,
  kind: string,
  position: [string, number, number],
  more: { attempt?: number; detail?: string } = {},
) {
  const [name, stepIndex, stepCount] = position;
  return { message, kind, step: name, stepIndex, stepCount, attempt: 0, detail: "", ...more };
}

Deno.test(
  "Every event of a REIMAGE carries its kind, step, position and attempt, agreeing with its message",
  SANITIZE,
  async () => {
    await using engine = await maintenanceEngine({
      faults: { setNetboot: { kind: "fail", times: 1 } },
    });
    using events = engine.events.subscribe();
    const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REIMAGE });
    const mine = (await takeQueued(events)).filter((e) =>
      e.snapshot?.operationId === op.operationId
    );
    const steps = [
      "set-netboot",
      "reboot-to-netboot",
      "repave-image",
      "join-cluster",
      "verify-in-cluster",
    ];
    assert.deepEqual(mine.map(fieldsOf), [
      { message: "Operation created", kind: "CREATED", ...NONE },
      { message: "Operation started", kind: "STARTED", ...NONE },
      ...steps.flatMap((name, i) => [
        step(`Step ${name} started`, "STEP_STARTED", [name, i + 1, 5]),
        // set-netboot failed once, so its second attempt ended it.
        step(`Step ${name} succeeded`, "STEP_SUCCEEDED", [name, i + 1, 5], {
          attempt: i === 0 ? 2 : 1,
        }),
      ]),
      { message: "Operation succeeded", kind: "TERMINAL", ...NONE },
    ]);
  },
);

Deno.test(
  "A failed step and its failed operation carry the failure as detail",
  SANITIZE,
  async () => {
    await using engine = await maintenanceEngine({ faults: { reboot: { kind: "fail" } } });
    using events = engine.events.subscribe();
    const op = await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
    const mine = (await takeQueued(events)).filter((e) =>
      e.snapshot?.operationId === op.operationId
    );
    const attempts = Number(op.error?.details.attempts);
    assert.deepEqual(mine.slice(-2).map(fieldsOf), [
      step("Step reboot failed: simulated reboot failure", "STEP_FAILED", ["reboot", 1, 1], {
        attempt: attempts,
        detail: "simulated reboot failure",
      }),
      {
        message: "Operation failed: simulated reboot failure",
        kind: "TERMINAL",
        ...NONE,
        detail: "simulated reboot failure",
      },
    ]);
  },
);

Deno.test("A canceled operation ends with one TERMINAL event", SANITIZE, async () => {
  const held = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  await using engine = await maintenanceEngine({
    hooks: { reboot: () => (entered.resolve(), held.promise) },
  });
  using events = engine.events.subscribe();
  const { operation } = engine.startOperation({
    machineId: "machine-1",
    requestId: "cancel-1",
    type: OperationType.REBOOT,
  });
  await entered.promise;
  engine.cancelOperation(operation.operationId);
  held.resolve();
  await engine.executor.idle();
  const terminal = (await takeQueued(events)).filter((e) => e.kind === EventKind.TERMINAL);
  assert.deepEqual(terminal.map(fieldsOf), [
    { message: "Operation canceled", kind: "TERMINAL", ...NONE },
  ]);
  assert.equal(terminal[0].snapshot?.phase, OperationPhase.CANCELED);
});

Deno.test(
  "Restart recovery ends an active operation with one TERMINAL event whose detail is why",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    // PENDING, as a crashed process would have left it.
    const operation = pendingReboot(engine, "left-over");
    using events = engine.events.subscribe();
    assert.deepEqual(recoverInterrupted(engine).operationIds, [operation.operationId]);
    assert.deepEqual((await takeQueued(events)).map(fieldsOf), [
      {
        message: `Operation interrupted: ${INTERRUPTED_MESSAGE}`,
        kind: "TERMINAL",
        ...NONE,
        detail: INTERRUPTED_MESSAGE,
      },
    ]);
  },
);

Deno.test(
  "A watch's initial snapshot events carry SNAPSHOT and SNAPSHOT_COMPLETE",
  SANITIZE,
  async () => {
    const held = Promise.withResolvers<void>();
    const entered = Promise.withResolvers<void>();
    await using engine = await maintenanceEngine({
      hooks: { reboot: () => (entered.resolve(), held.promise) },
    });
    engine.startOperation({ machineId: "machine-1", requestId: "r", type: OperationType.REBOOT });
    await entered.promise;
    const stop = new AbortController();
    const iterator = engine.watch({ sendInitialSnapshot: true, signal: stop.signal })
      [Symbol.asyncIterator]();
    const first = (await iterator.next()).value as OperationEvent;
    const marker = (await iterator.next()).value as OperationEvent;
    assert.deepEqual([first, marker].map(fieldsOf), [
      { message: "Snapshot", kind: "SNAPSHOT", ...NONE },
      { message: "Snapshot complete", kind: "SNAPSHOT_COMPLETE", ...NONE },
    ]);
    stop.abort();
    await iterator.return?.();
    held.resolve();
  },
);

Deno.test(
  "The CLI follows steps from event kinds and fields, not from message text",
  SANITIZE,
  async () => {
    const start = create(OperationSchema, {
      operationId: "op-1",
      phase: OperationPhase.PENDING,
    });
    const at = (phase: OperationPhase): Operation =>
      create(OperationSchema, { operationId: "op-1", phase });
    // Messages a client must not depend on: only the fields say what happened.
    const events = [
      { kind: EventKind.STEP_STARTED, step: "one", snapshot: at(OperationPhase.RUNNING) },
      { kind: EventKind.STEP_SUCCEEDED, step: "one", snapshot: at(OperationPhase.RUNNING) },
      { kind: EventKind.STEP_STARTED, step: "two", snapshot: at(OperationPhase.RUNNING) },
      {
        kind: EventKind.STEP_FAILED,
        step: "two",
        detail: "disk on fire",
        snapshot: at(OperationPhase.RUNNING),
      },
      { kind: EventKind.TERMINAL, detail: "disk on fire", snapshot: at(OperationPhase.FAILED) },
    ].map((init) => create(OperationEventSchema, { ...init, message: "reworded" }));
    const session = { interrupt: new AbortController().signal } as unknown as Session;
    const seen: string[] = [];
    const result = await followOperation(
      session,
      (async function* () {
        yield* events;
      })(),
      start,
      {
        stepStarted: (name) => seen.push(`started ${name}`),
        stepSucceeded: (name) => seen.push(`succeeded ${name}`),
        stepFailed: (name, message) => seen.push(`failed ${name}: ${message}`),
      },
    );
    assert.deepEqual(seen, [
      "started one",
      "succeeded one",
      "started two",
      "failed two: disk on fire",
    ]);
    assert.equal((result as Operation).phase, OperationPhase.FAILED);
  },
);
