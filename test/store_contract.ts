/**
 * The Store contract: behaviour every {@linkcode Store} implementation must have. Written once,
 * run against each implementation unchanged by calling {@linkcode storeContract} from that
 * implementation's test file.
 *
 * @module
 */

import assert from "node:assert/strict";
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  BmdemoError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../lib/model/errors.ts";
import {
  ListMachinesResponseSchema,
  type Machine,
  MachineSchema,
  MachineSpecSchema,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { getCondition } from "../lib/model/lifecycle.ts";
import { parseOperationFilter } from "../lib/store/query.ts";
import type { Store, ValidCreateRequest } from "../lib/store/mod.ts";
import { validateCreateRequest } from "../lib/store/validation.ts";
import { LIMITS } from "../lib/store/limits.ts";
import { SANITIZE } from "./helpers.ts";

/** Makes a fresh, empty store whose clock is `now` (and list scan budget `scanBudget`). */
export type StoreFactory = (
  options: { now: () => Date; scanBudget?: number },
) => Store | Promise<Store>;

const T0 = Date.UTC(2026, 0, 1);

/** A controllable clock. */
export function testClock(): { now: () => Date; advance(ms: number): void } {
  let offset = 0;
  return {
    now: () => new Date(T0 + offset),
    advance(ms: number) {
      offset += ms;
    },
  };
}

/** A machine as an import would register it. */
export function machine(id: string, init: MessageInitShape<typeof MachineSchema> = {}): Machine {
  const defaults: MessageInitShape<typeof MachineSchema> = {
    machineId: id,
    spec: { provider: "fake", macAddresses: ["02:00:00:00:00:01"] },
    labels: { role: "worker" },
  };
  return create(MachineSchema, Object.assign(defaults, init));
}

function request(
  machineId: string,
  requestId: string,
  type = OperationType.ENTER_MAINTENANCE,
  params: Record<string, string> = {},
): ValidCreateRequest {
  // The engine checks a request's shape before the store sees it: the store is given checked ones.
  return validateCreateRequest({ machineId, requestId, type, params });
}

/** Asserts that `fn` throws a {@linkcode BmdemoError} with the given class and reason. */
export function assertDomainError(
  fn: () => unknown,
  type: new (...args: never[]) => BmdemoError,
  reason: string,
  message?: RegExp,
): BmdemoError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof type, `expected ${type.name}, got ${String(caught)}`);
  assert.equal((caught as BmdemoError).reason, reason);
  if (message) assert.match((caught as BmdemoError).message, message);
  return caught as BmdemoError;
}

/**
 * Registers the contract tests for one Store implementation.
 *
 * @param name Implementation name, prefixed to every test name.
 * @param factory Makes a fresh store.
 */
export function storeContract(name: string, factory: StoreFactory): void {
  const opts = SANITIZE;
  async function fresh(
    scanBudget?: number,
  ): Promise<{ store: Store; clock: ReturnType<typeof testClock> }> {
    const clock = testClock();
    return { store: await factory({ now: clock.now, scanBudget }), clock };
  }

  /** Runs `count` REBOOTs of a READY machine to SUCCEEDED; returns their ids. */
  function reboots(store: Store, count: number, machineId = "machine-1"): string[] {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const { operation } = store.createOperation(
        request(machineId, `${machineId}-${crypto.randomUUID()}`, OperationType.REBOOT),
      );
      store.markRunning(operation.operationId);
      store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
      ids.push(operation.operationId);
    }
    return ids;
  }

  const ids = (page: { items: { operationId: string }[] }) => page.items.map((o) => o.operationId);
  const HOUR = 3_600_000;
  const KEEP_ALL = { maxOperations: 1_000_000, maxAgeMs: 1000 * HOUR };

  /** A store with machine-1 in MAINTENANCE (through a finished ENTER_MAINTENANCE). */
  async function inMaintenance(): Promise<{ store: Store; clock: ReturnType<typeof testClock> }> {
    const env = await fresh();
    env.store.registerMachine(machine("machine-1"));
    const { operation } = env.store.createOperation(request("machine-1", "enter"));
    env.store.markRunning(operation.operationId);
    env.store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
    return env;
  }

  Deno.test(`${name}: registerMachine() creates machines`, opts, async (t) => {
    await t.step("in FACTORY_READY by default, server-owned status", async () => {
      const { store } = await fresh();
      const { machine: stored, created } = store.registerMachine(machine("machine-1", {
        status: {
          conditions: [{ type: "RMA", status: true }],
          activeOperationId: "op-forged",
        },
      }));
      assert.equal(created, true);
      assert.equal(stored.status?.phase, MachinePhase.FACTORY_READY);
      assert.equal(stored.status?.effectiveState, EffectiveState.NEW);
      assert.deepEqual(stored.status?.conditions, []);
      assert.equal(stored.status?.activeOperationId, "");
      assert.equal(stored.spec?.provider, "fake");
      assert.deepEqual(stored.labels, { role: "worker" });
    });
    await t.step("in READY when asked", async () => {
      const { store } = await fresh();
      const { machine: stored } = store.registerMachine(
        machine("machine-1", { status: { phase: MachinePhase.READY } }),
      );
      assert.equal(stored.status?.phase, MachinePhase.READY);
      assert.equal(stored.status?.effectiveState, EffectiveState.IDLE);
    });
    await t.step("refuses MAINTENANCE as an initial phase and stores nothing", async () => {
      const { store } = await fresh();
      assertDomainError(
        () =>
          store.registerMachine(
            machine("machine-1", { status: { phase: MachinePhase.MAINTENANCE } }),
          ),
        InvalidArgumentError,
        "INVALID_ARGUMENT",
        /FACTORY_READY or READY/,
      );
      assert.equal(store.listMachines({}).items.length, 0);
    });
    await t.step("generates an m- id when none is given", async () => {
      const { store } = await fresh();
      const a = store.registerMachine(machine("")).machine;
      const b = store.registerMachine(machine("")).machine;
      assert.match(a.machineId, /^m-[0-9a-f-]{36}$/);
      assert.notEqual(a.machineId, b.machineId);
    });
  });

  Deno.test(
    `${name}: registerMachine() of an existing id updates spec and labels, never status`,
    opts,
    async () => {
      const { store } = await inMaintenance();
      const { operation } = store.createOperation(
        request("machine-1", "reimage", OperationType.REIMAGE, { image_ref: "x" }),
      );
      const { machine: updated, created } = store.registerMachine(machine("machine-1", {
        spec: { provider: "fake", rack: "r2" },
        labels: { role: "gpu" },
        status: { phase: MachinePhase.FACTORY_READY, activeOperationId: "" },
      }));
      assert.equal(created, false);
      assert.equal(updated.spec?.rack, "r2");
      assert.deepEqual(updated.labels, { role: "gpu" });
      assert.equal(updated.status?.phase, MachinePhase.MAINTENANCE);
      assert.equal(updated.status?.activeOperationId, operation.operationId);
      assert.equal(updated.status?.effectiveState, EffectiveState.BUSY);
    },
  );

  Deno.test(`${name}: getMachine() of an unknown id is MACHINE_NOT_FOUND`, opts, async () => {
    const { store } = await fresh();
    assertDomainError(
      () => store.getMachine("nope"),
      NotFoundError,
      "MACHINE_NOT_FOUND",
      /machine "nope" not found/,
    );
  });

  Deno.test(`${name}: snapshots are immutable`, opts, async () => {
    const { store } = await fresh();
    const stored = store.registerMachine(machine("machine-1")).machine;
    assert.throws(() => {
      (stored.status as { phase: MachinePhase }).phase = MachinePhase.READY;
    }, TypeError);
    assert.throws(() => {
      stored.labels["x"] = "y";
    }, TypeError);
    assert.equal(store.getMachine("machine-1").status?.phase, MachinePhase.FACTORY_READY);
  });

  Deno.test(`${name}: listMachines() pages and filters in registration order`, opts, async (t) => {
    const { store } = await fresh();
    for (let i = 1; i <= 5; i++) {
      store.registerMachine(machine(`machine-${i}`, { labels: { rack: i % 2 ? "odd" : "even" } }));
    }
    await t.step("in registration order", () => {
      assert.deepEqual(
        store.listMachines({}).items.map((m) => m.machineId),
        ["machine-1", "machine-2", "machine-3", "machine-4", "machine-5"],
      );
    });
    await t.step("paged with opaque tokens", () => {
      const ids: string[][] = [];
      let pageToken = "";
      do {
        const page = store.listMachines({ pageSize: 2, pageToken });
        ids.push(page.items.map((m) => m.machineId));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      assert.deepEqual(ids, [["machine-1", "machine-2"], ["machine-3", "machine-4"], [
        "machine-5",
      ]]);
    });
    await t.step("an exact last page has no next token", () => {
      const page = store.listMachines({ pageSize: 5 });
      assert.equal(page.items.length, 5);
      assert.equal(page.nextPageToken, "");
    });
    await t.step("filtered by label, phase and effective state", () => {
      const odd = store.listMachines({ filter: "label.rack=odd AND phase=FACTORY_READY" });
      assert.deepEqual(odd.items.map((m) => m.machineId), ["machine-1", "machine-3", "machine-5"]);
      assert.equal(store.listMachines({ filter: "effective_state=NEW" }).items.length, 5);
      assert.equal(store.listMachines({ filter: "phase=READY" }).items.length, 0);
    });
    await t.step("paging keeps the filter", () => {
      const first = store.listMachines({ pageSize: 2, filter: "label.rack=odd" });
      const second = store.listMachines({
        pageSize: 2,
        filter: "label.rack=odd",
        pageToken: first.nextPageToken,
      });
      assert.deepEqual(second.items.map((m) => m.machineId), ["machine-5"]);
      assertDomainError(
        () =>
          store.listMachines({
            pageSize: 2,
            filter: "label.rack=even",
            pageToken: first.nextPageToken,
          }),
        InvalidArgumentError,
        "INVALID_PAGE_TOKEN",
      );
    });
    await t.step("rejects a bad filter, token or page size", () => {
      assertDomainError(
        () => store.listMachines({ filter: "color=red" }),
        InvalidArgumentError,
        "INVALID_FILTER",
      );
      assertDomainError(
        () => store.listMachines({ pageToken: "garbage" }),
        InvalidArgumentError,
        "INVALID_PAGE_TOKEN",
      );
      assertDomainError(
        () => store.listMachines({ pageSize: -1 }),
        InvalidArgumentError,
        "INVALID_ARGUMENT",
      );
    });
  });

  Deno.test(`${name}: updateMachine() changes spec and labels only`, opts, async (t) => {
    await t.step("keeps status, including an active operation", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const { operation } = store.createOperation(request("machine-1", "r-1"));
      const updated = store.updateMachine("machine-1", { labels: { role: "db" } });
      assert.deepEqual(updated.labels, { role: "db" });
      assert.equal(updated.spec?.provider, "fake");
      assert.equal(updated.status?.activeOperationId, operation.operationId);
    });
    await t.step(
      "is not undone when an operation finishes (no whole-record write-back)",
      async () => {
        const { store } = await fresh();
        store.registerMachine(machine("machine-1"));
        const { operation } = store.createOperation(request("machine-1", "r-1"));
        store.markRunning(operation.operationId);
        store.updateMachine("machine-1", {
          labels: { role: "db" },
          spec: create(MachineSchema, { spec: { rack: "r9" } }).spec,
        });
        store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
        const after = store.getMachine("machine-1");
        assert.deepEqual(after.labels, { role: "db" });
        assert.equal(after.spec?.rack, "r9");
        assert.equal(after.status?.phase, MachinePhase.MAINTENANCE);
      },
    );
    await t.step("of an unknown machine is MACHINE_NOT_FOUND", async () => {
      const { store } = await fresh();
      assertDomainError(
        () => store.updateMachine("nope", { labels: {} }),
        NotFoundError,
        "MACHINE_NOT_FOUND",
      );
    });
  });

  Deno.test(`${name}: createOperation() enforces phase gates`, opts, async (t) => {
    const { store } = await fresh();
    store.registerMachine(machine("machine-2"));
    await t.step("reimage of a FACTORY_READY machine", () => {
      assertDomainError(
        () => store.createOperation(request("machine-2", "r", OperationType.REIMAGE)),
        FailedPreconditionError,
        "PHASE_PRECONDITION",
        /^machine "machine-2" is in phase FACTORY_READY; reimage requires MAINTENANCE$/,
      );
    });
    await t.step("reboot and exit-maintenance of a FACTORY_READY machine", () => {
      assertDomainError(
        () => store.createOperation(request("machine-2", "r", OperationType.REBOOT)),
        FailedPreconditionError,
        "PHASE_PRECONDITION",
        /reboot requires READY or MAINTENANCE/,
      );
      assertDomainError(
        () => store.createOperation(request("machine-2", "r", OperationType.EXIT_MAINTENANCE)),
        FailedPreconditionError,
        "PHASE_PRECONDITION",
        /exit-maintenance requires MAINTENANCE/,
      );
    });
    await t.step("of an unknown machine", () => {
      assertDomainError(
        () => store.createOperation(request("nope", "r")),
        NotFoundError,
        "MACHINE_NOT_FOUND",
      );
    });
    await t.step("a refused request leaves nothing behind", () => {
      assert.equal(store.listOperations({}).items.length, 0);
      const created = store.createOperation(
        request("machine-2", "r", OperationType.ENTER_MAINTENANCE),
      );
      assert.equal(created.created, true);
    });
  });

  Deno.test(
    `${name}: createOperation() admits one active operation per machine`,
    opts,
    async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const first = store.createOperation(request("machine-1", "r-1")).operation;
      assert.equal(first.phase, OperationPhase.PENDING);
      assert.match(first.operationId, /^op-[0-9a-f-]{36}$/);
      assert.equal(store.getMachine("machine-1").status?.activeOperationId, first.operationId);
      assert.equal(store.getMachine("machine-1").status?.phase, MachinePhase.FACTORY_READY);
      const busy = assertDomainError(
        () => store.createOperation(request("machine-1", "r-2")),
        FailedPreconditionError,
        "MACHINE_BUSY",
        new RegExp(`busy with operation ${first.operationId} \\(ENTER_MAINTENANCE, PENDING\\)`),
      );
      assert.equal(busy.metadata.activeOperationId, first.operationId);
      store.markRunning(first.operationId);
      store.finishOperation(first.operationId, { phase: OperationPhase.SUCCEEDED });
      assert.equal(store.createOperation(request("machine-1", "r-2")).created, true);
    },
  );

  Deno.test(`${name}: createOperation() replays a request id`, opts, async (t) => {
    await t.step("returns the original while it runs", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const first = store.createOperation(request("machine-1", "r-1"));
      const again = store.createOperation(request("machine-1", "r-1"));
      assert.equal(again.created, false);
      assert.equal(again.operation.operationId, first.operation.operationId);
    });
    await t.step("returns the original after its effect changed the phase", async () => {
      const { store } = await inMaintenance();
      const exit = store.createOperation(
        request("machine-1", "exit", OperationType.EXIT_MAINTENANCE),
      );
      store.markRunning(exit.operation.operationId);
      store.finishOperation(exit.operation.operationId, { phase: OperationPhase.SUCCEEDED });
      assert.equal(store.getMachine("machine-1").status?.phase, MachinePhase.READY);
      // The gate would refuse a new EXIT now; the replay must still answer.
      const replay = store.createOperation(
        request("machine-1", "exit", OperationType.EXIT_MAINTENANCE),
      );
      assert.equal(replay.created, false);
      assert.equal(replay.operation.phase, OperationPhase.SUCCEEDED);
    });
    await t.step("refuses the same id for a different type or parameters", async () => {
      const { store } = await inMaintenance();
      store.createOperation(
        request("machine-1", "r-9", OperationType.REIMAGE, { image_ref: "ubuntu-2404" }),
      );
      assertDomainError(
        () => store.createOperation(request("machine-1", "r-9", OperationType.REBOOT)),
        InvalidArgumentError,
        "REQUEST_ID_REUSED",
        /^request_id "r-9" was used for a REIMAGE of machine-1 with image_ref=ubuntu-2404; use a new request_id/,
      );
      assertDomainError(
        () =>
          store.createOperation(
            request("machine-1", "r-9", OperationType.REIMAGE, { image_ref: "other" }),
          ),
        InvalidArgumentError,
        "REQUEST_ID_REUSED",
      );
    });
    await t.step("is scoped to the machine", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      store.registerMachine(machine("machine-2"));
      const a = store.createOperation(request("machine-1", "same")).operation;
      const b = store.createOperation(request("machine-2", "same"));
      assert.equal(b.created, true);
      assert.notEqual(b.operation.operationId, a.operationId);
    });
  });

  Deno.test(`${name}: markRunning() and setStage() are compare-and-set`, opts, async () => {
    const { store, clock } = await fresh();
    store.registerMachine(machine("machine-1"));
    const { operation } = store.createOperation(request("machine-1", "r-1"));
    assert.equal(store.setStage(operation.operationId, "early"), undefined);
    clock.advance(1000);
    const running = store.markRunning(operation.operationId);
    assert.equal(running?.phase, OperationPhase.RUNNING);
    assert.equal(timestampDate(running!.startedAt!).getTime(), Date.UTC(2026, 0, 1, 0, 0, 1));
    assert.equal(store.markRunning(operation.operationId), undefined);
    assert.equal(store.setStage(operation.operationId, "step-1")?.currentStage, "step-1");
    assert.equal(store.markRunning("op-unknown"), undefined);
  });

  Deno.test(`${name}: finishOperation() is terminal exactly once`, opts, async (t) => {
    await t.step("success applies effects and frees the machine", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const { operation } = store.createOperation(request("machine-1", "r-1"));
      store.markRunning(operation.operationId);
      const done = store.finishOperation(operation.operationId, {
        phase: OperationPhase.SUCCEEDED,
      });
      assert.equal(done?.phase, OperationPhase.SUCCEEDED);
      assert.ok(done?.finishedAt);
      const after = store.getMachine("machine-1");
      assert.equal(after.status?.phase, MachinePhase.MAINTENANCE);
      assert.equal(after.status?.activeOperationId, "");
      assert.equal(after.status?.effectiveState, EffectiveState.MAINTENANCE_IDLE);
      assert.deepEqual(store.activeOperations(), []);
    });
    await t.step("a second outcome loses and changes nothing", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const { operation } = store.createOperation(request("machine-1", "r-1"));
      store.markRunning(operation.operationId);
      store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
      const before = store.getMachine("machine-1");
      assert.equal(
        store.finishOperation(operation.operationId, {
          phase: OperationPhase.FAILED,
          error: { code: "X", message: "late", retryable: false, details: {} },
        }),
        undefined,
      );
      assert.equal(store.getOperation(operation.operationId).phase, OperationPhase.SUCCEEDED);
      assert.deepEqual(store.getMachine("machine-1"), before);
    });
    await t.step("failure records the error and flags the machine, phase unchanged", async () => {
      const { store } = await inMaintenance();
      const { operation } = store.createOperation(request("machine-1", "r", OperationType.REBOOT));
      store.markRunning(operation.operationId);
      const failed = store.finishOperation(operation.operationId, {
        phase: OperationPhase.FAILED,
        error: {
          code: "EXECUTION_FAILED",
          message: "simulated reboot failure",
          retryable: true,
          details: { step: "reboot" },
        },
      });
      assert.equal(failed?.error?.code, "EXECUTION_FAILED");
      assert.equal(failed?.error?.message, "simulated reboot failure");
      assert.equal(failed?.error?.retryable, true);
      assert.deepEqual(failed?.error?.details, { step: "reboot" });
      const after = store.getMachine("machine-1");
      assert.equal(after.status?.phase, MachinePhase.MAINTENANCE);
      assert.equal(after.status?.effectiveState, EffectiveState.ATTENTION);
      const flag = getCondition(after.status!.conditions, "NeedsIntervention");
      assert.equal(flag?.status, true);
      assert.equal(flag?.reason, "OperationFailed");
      assert.equal(flag?.message, "simulated reboot failure");
    });
    await t.step("a later success clears NeedsIntervention", async () => {
      const { store } = await inMaintenance();
      const a = store.createOperation(request("machine-1", "a", OperationType.REBOOT)).operation;
      store.markRunning(a.operationId);
      store.finishOperation(a.operationId, {
        phase: OperationPhase.FAILED,
        error: { code: "E", message: "boom", retryable: true, details: {} },
      });
      const b = store.createOperation(request("machine-1", "b", OperationType.REBOOT)).operation;
      assert.equal(store.getMachine("machine-1").status?.effectiveState, EffectiveState.ATTENTION);
      store.markRunning(b.operationId);
      store.finishOperation(b.operationId, { phase: OperationPhase.SUCCEEDED });
      const after = store.getMachine("machine-1");
      assert.equal(getCondition(after.status!.conditions, "NeedsIntervention")?.status, false);
      assert.equal(getCondition(after.status!.conditions, "Reachable")?.status, true);
      assert.ok(after.status?.lastSeen);
      assert.equal(after.status?.effectiveState, EffectiveState.MAINTENANCE_IDLE);
    });
  });

  Deno.test(`${name}: cancelOperation()`, opts, async (t) => {
    await t.step("of an unknown id is OPERATION_NOT_FOUND", async () => {
      const { store } = await fresh();
      assertDomainError(
        () => store.cancelOperation("op-nope", "user"),
        NotFoundError,
        "OPERATION_NOT_FOUND",
        /operation "op-nope" not found/,
      );
    });
    await t.step("of a PENDING operation cancels it and frees the machine", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const { operation } = store.createOperation(request("machine-1", "r-1"));
      const { operation: canceled, changed } = store.cancelOperation(
        operation.operationId,
        "user",
      );
      assert.equal(changed, true);
      assert.equal(canceled.phase, OperationPhase.CANCELED);
      assert.ok(canceled.finishedAt);
      const after = store.getMachine("machine-1");
      assert.equal(after.status?.activeOperationId, "");
      assert.equal(after.status?.phase, MachinePhase.FACTORY_READY);
      const flag = getCondition(after.status!.conditions, "OperationCanceled");
      assert.deepEqual([flag?.status, flag?.reason], [true, "UserCanceled"]);
    });
    await t.step("twice changes nothing the second time, even with a newer operation", async () => {
      const { store, clock } = await fresh();
      store.registerMachine(machine("machine-1"));
      const old = store.createOperation(request("machine-1", "r-1")).operation;
      store.cancelOperation(old.operationId, "user");
      const newer = store.createOperation(request("machine-1", "r-2")).operation;
      const before = store.getMachine("machine-1");
      clock.advance(5000);
      const again = store.cancelOperation(old.operationId, "user");
      assert.equal(again.changed, false);
      assert.equal(again.operation.phase, OperationPhase.CANCELED);
      assert.deepEqual(store.getMachine("machine-1"), before);
      assert.equal(before.status?.activeOperationId, newer.operationId);
    });
    await t.step("of a finished operation is OPERATION_FINISHED", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const { operation } = store.createOperation(request("machine-1", "r-1"));
      store.markRunning(operation.operationId);
      store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
      assertDomainError(
        () => store.cancelOperation(operation.operationId, "user"),
        FailedPreconditionError,
        "OPERATION_FINISHED",
        /already finished with phase SUCCEEDED/,
      );
    });
    await t.step("on shutdown records ServerShutdown", async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1"));
      const { operation } = store.createOperation(request("machine-1", "r-1"));
      store.markRunning(operation.operationId);
      store.cancelOperation(operation.operationId, "shutdown");
      const flag = getCondition(
        store.getMachine("machine-1").status!.conditions,
        "OperationCanceled",
      );
      assert.equal(flag?.reason, "ServerShutdown");
    });
  });

  Deno.test(`${name}: listOperations() pages and filters in creation order`, opts, async (t) => {
    const { store } = await fresh();
    for (let i = 1; i <= 3; i++) store.registerMachine(machine(`machine-${i}`));
    const ids: string[] = [];
    for (let round = 0; round < 2; round++) {
      for (let i = 1; i <= 3; i++) {
        const { operation } = store.createOperation(request(`machine-${i}`, `r-${round}`));
        ids.push(operation.operationId);
        if (round === 0) {
          store.markRunning(operation.operationId);
          store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
        }
      }
    }
    await t.step("in creation order", () => {
      assert.deepEqual(store.listOperations({}).items.map((o) => o.operationId), ids);
    });
    await t.step("by machine, phase and type, combined", () => {
      assert.deepEqual(
        store.listOperations({ filter: "machine_id=machine-2" }).items.map((o) => o.operationId),
        [ids[1], ids[4]],
      );
      assert.deepEqual(
        store.listOperations({ filter: "machine_id=machine-2 AND phase=PENDING" }).items.map((o) =>
          o.operationId
        ),
        [ids[4]],
      );
      assert.equal(
        store.listOperations({ filter: "type=ENTER_MAINTENANCE AND phase=SUCCEEDED" }).items
          .length,
        3,
      );
      assert.equal(store.listOperations({ filter: "type=REIMAGE" }).items.length, 0);
      assert.equal(store.listOperations({ filter: "machine_id=machine-9" }).items.length, 0);
    });
    await t.step("paged", () => {
      const first = store.listOperations({ pageSize: 4 });
      const second = store.listOperations({ pageSize: 4, pageToken: first.nextPageToken });
      assert.deepEqual(
        [...first.items, ...second.items].map((o) => o.operationId),
        ids,
      );
      assert.equal(second.nextPageToken, "");
      assertDomainError(
        () => store.listMachines({ pageToken: first.nextPageToken }),
        InvalidArgumentError,
        "INVALID_PAGE_TOKEN",
      );
    });
    await t.step("activeOperations() lists PENDING and RUNNING in creation order", () => {
      assert.deepEqual(store.activeOperations().map((o) => o.operationId), ids.slice(3));
    });
    await t.step("rejects an unknown filter field", () => {
      assertDomainError(
        () => store.listOperations({ filter: "status=RUNNING" }),
        InvalidArgumentError,
        "INVALID_FILTER",
        /machine_id, phase and type/,
      );
    });
  });

  Deno.test(`${name}: enforces LIMITS before any change`, opts, async (t) => {
    const { store } = await fresh();
    store.registerMachine(machine("machine-1"));
    const snapshot = () => ({
      machines: store.listMachines({}).items,
      operations: store.listOperations({}).items,
    });
    const before = snapshot();
    const tooManyLabels = Object.fromEntries(
      Array.from({ length: LIMITS.labelsPerMachine + 1 }, (_, i) => [`k${i}`, "v"]),
    );
    for (
      const [label, fn, reason, field] of [
        [
          "machine_id too long",
          () => store.registerMachine(machine("m".repeat(LIMITS.machineIdLength + 1))),
          "LIMIT_EXCEEDED",
          "machine_id",
        ],
        [
          "machine_id with a space",
          () => store.registerMachine(machine("machine 2")),
          "INVALID_FORMAT",
          "machine_id",
        ],
        [
          "too many labels on a new machine",
          () => store.registerMachine(machine("machine-2", { labels: tooManyLabels })),
          "LIMIT_EXCEEDED",
          "labels",
        ],
        [
          "too many labels on an existing machine",
          () => store.registerMachine(machine("machine-1", { labels: tooManyLabels })),
          "LIMIT_EXCEEDED",
          "labels",
        ],
        [
          "a label key with =",
          () => store.updateMachine("machine-1", { labels: { "a=b": "c" } }),
          "INVALID_FORMAT",
          "label_key",
        ],
        [
          "a label value too long",
          () =>
            store.updateMachine("machine-1", {
              labels: { a: "v".repeat(LIMITS.labelValueLength + 1) },
            }),
          "LIMIT_EXCEEDED",
          "label_value",
        ],
        [
          "filter too long",
          () => store.listOperations({ filter: "x".repeat(LIMITS.filterLength + 1) }),
          "LIMIT_EXCEEDED",
          "filter",
        ],
        [
          "operation_id too long (get)",
          () => store.getOperation("o".repeat(LIMITS.operationIdLength + 1)),
          "LIMIT_EXCEEDED",
          "operation_id",
        ],
        [
          "operation_id too long (cancel)",
          () => store.cancelOperation("o".repeat(LIMITS.operationIdLength + 1), "user"),
          "LIMIT_EXCEEDED",
          "operation_id",
        ],
        [
          "page_token too long",
          () => store.listMachines({ pageToken: "t".repeat(LIMITS.pageTokenLength + 1) }),
          "LIMIT_EXCEEDED",
          "page_token",
        ],
      ] as const
    ) {
      await t.step(label, () => {
        const error = assertDomainError(fn, InvalidArgumentError, reason);
        assert.equal(error.metadata.field, field);
        if (reason === "LIMIT_EXCEEDED") assert.match(error.message, /the limit is \d+:/);
      });
    }
    await t.step("changes nothing", () => {
      assert.deepEqual(snapshot(), before);
    });
  });

  Deno.test(`${name}: limits every spec field and the whole machine`, opts, async (t) => {
    const { store } = await fresh();
    store.registerMachine(machine("machine-1"));
    const snapshot = () => store.listMachines({ pageSize: LIMITS.maxPageSize }).items;
    // field -> [limit, a spec with a value of length/count n in that field]
    const cases: Record<
      string,
      [number, (n: number) => MessageInitShape<typeof MachineSpecSchema>]
    > = {
      // A provider is a driver name (checked by form after the length), so the longest valid
      // one is short: at the limit it is refused for its form, over it for its length.
      "spec.provider": [64, (n) => ({ provider: "p".repeat(n) })],
      "spec.serial": [256, (n) => ({ serial: "s".repeat(n) })],
      "spec.ssh_endpoint": [512, (n) => ({ sshEndpoint: `${"h".repeat(n - 3)}:22` })],
      "spec.bmc_address": [512, (n) => ({ bmcAddress: "b".repeat(n) })],
      "spec.rack": [128, (n) => ({ rack: "r".repeat(n) })],
      "spec.mac_addresses": [64, (n) => ({ macAddresses: Array(n).fill("02:00:00:00:00:01") })],
      "spec.mac_address": [64, (n) => ({ macAddresses: ["02:00:00:00:00:01", "m".repeat(n)] })],
      "spec.target_cluster.cluster_id": [
        128,
        (n) => ({ targetCluster: { clusterId: "c".repeat(n) } }),
      ],
      "spec.target_cluster.kubeconfig_secret_ref": [
        512,
        (n) => ({ targetCluster: { kubeconfigSecretRef: "k".repeat(n) } }),
      ],
    };
    await t.step("every string and list of MachineSpec has a case", () => {
      const paths = (schema: DescMessage, prefix: string): string[] =>
        schema.fields.flatMap((f) =>
          f.fieldKind === "message"
            ? paths(f.message, `${prefix}${f.name}.`)
            : [`${prefix}${f.name}`]
        );
      for (const path of paths(MachineSpecSchema, "spec.")) {
        assert.ok(Object.hasOwn(cases, path), `${path} has no limit case`);
      }
    });
    for (const [field, [limit, spec]] of Object.entries(cases)) {
      await t.step(`${field}: ${limit} accepted, ${limit + 1} refused three ways`, () => {
        const atLimit = create(MachineSpecSchema, spec(limit));
        const id = `machine-at-${field}`;
        if (field === "spec.provider") {
          assertDomainError(
            () => store.registerMachine(machine(id, { spec: atLimit })),
            InvalidArgumentError,
            "INVALID_FORMAT",
          );
        } else {
          assert.ok(store.registerMachine(machine(id, { spec: atLimit })).created);
          assert.deepEqual(store.updateMachine(id, { spec: atLimit }).spec, atLimit);
        }
        const kept = snapshot();
        const over = create(MachineSpecSchema, spec(limit + 1));
        for (
          const fn of [
            () => store.registerMachine(machine("machine-new", { spec: over })),
            () => store.registerMachine(machine("machine-1", { spec: over })),
            () => store.updateMachine("machine-1", { spec: over }),
          ]
        ) {
          const error = assertDomainError(fn, InvalidArgumentError, "LIMIT_EXCEEDED");
          assert.equal(error.metadata.field, field);
          assert.equal(error.metadata.limit, String(limit));
          assert.equal(error.metadata.machineId?.startsWith("machine-"), true);
          assert.match(error.message, new RegExp(`the limit is ${limit}:`));
        }
        assert.deepEqual(snapshot(), kept, "a refused request changes nothing");
      });
    }
    await t.step("the whole machine: 65536 encoded bytes of id, spec and labels", () => {
      // 64 labels are allowed, but of 256 four-byte characters they encode to ~66 KiB.
      const wide = (count: number) =>
        Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, "🙂".repeat(256)]));
      store.registerMachine(machine("machine-wide", { labels: wide(60) }));
      const kept = snapshot();
      for (
        const fn of [
          () => store.registerMachine(machine("machine-new", { labels: wide(64) })),
          () => store.registerMachine(machine("machine-wide", { labels: wide(64) })),
          () => store.updateMachine("machine-1", { labels: wide(64) }),
        ]
      ) {
        const error = assertDomainError(fn, InvalidArgumentError, "LIMIT_EXCEEDED");
        assert.equal(error.metadata.field, "machine");
        assert.equal(error.metadata.limit, "65536");
        assert.ok(Number(error.metadata.actual) > 65536, error.message);
        assert.match(error.message, /bytes encoded \(id, spec and labels\); the limit is 65536:/);
      }
      assert.deepEqual(snapshot(), kept, "a refused request changes nothing");
    });
    await t.step("an update whose spec fits alone but not next to the stored labels", () => {
      const serial = create(MachineSpecSchema, { serial: "s".repeat(256) });
      const wide = Object.fromEntries(
        Array.from({ length: 63 }, (_, i) => [`k${i}`, "🙂".repeat(256)]),
      );
      store.updateMachine("machine-1", { labels: wide });
      const kept = snapshot();
      const error = assertDomainError(
        () =>
          store.updateMachine("machine-1", {
            spec: { ...serial, macAddresses: Array(64).fill("m".repeat(64)) },
          }),
        InvalidArgumentError,
        "LIMIT_EXCEEDED",
        /with its stored labels kept it would break a limit/,
      );
      assert.equal(error.metadata.field, "machine");
      assert.deepEqual(snapshot(), kept);
    });
  });

  Deno.test(`${name}: list pages are cut by bytes as well as by page_size`, opts, async (t) => {
    const { store } = await fresh();
    // ~55 KB each (labels of three-byte characters): 100 of them would be a 5.5 MB page.
    const labels = Object.fromEntries(
      Array.from({ length: 64 }, (_, i) => [`k${i}`, "€".repeat(256)]),
    );
    const ids = Array.from({ length: 40 }, (_, i) => `machine-${i + 1}`);
    for (const id of ids) store.registerMachine(machine(id, { labels }));
    const readAll = (filter: string) => {
      const pages: Machine[][] = [];
      let token = "";
      do {
        const page = store.listMachines({ pageSize: 100, pageToken: token, filter });
        pages.push(page.items);
        token = page.nextPageToken;
      } while (token !== "");
      return pages;
    };
    for (const filter of ["", "label.k0=" + "€".repeat(256)]) {
      await t.step(
        `filter "${filter.slice(0, 10)}": cut, continued, nothing lost or repeated`,
        () => {
          const pages = readAll(filter);
          assert.ok(pages.length > 1, `one page of ${pages[0].length}`);
          assert.deepEqual(pages.flat().map((m) => m.machineId), ids);
          for (const [i, items] of pages.entries()) {
            assert.ok(items.length >= 1);
            const bytes = toBinary(
              ListMachinesResponseSchema,
              create(ListMachinesResponseSchema, { machines: items }),
            ).length;
            assert.ok(bytes <= LIMITS.maxPageBytes, `page ${i}: ${bytes} bytes`);
            if (i < pages.length - 1) {
              // Cut as late as the budget allows: one more machine would not fit.
              const grown = toBinary(
                ListMachinesResponseSchema,
                create(ListMachinesResponseSchema, { machines: [...items, pages[i + 1][0]] }),
              ).length;
              assert.ok(grown > LIMITS.maxPageBytes, `page ${i} cut early at ${bytes} bytes`);
            }
          }
        },
      );
    }
    await t.step("operations too", () => {
      // A failure message is the server's, not limited: 300 KB each, three fit in a page.
      for (const id of ids.slice(0, 10)) {
        const { operation } = store.createOperation(request(id, `r-${id}`));
        store.markRunning(operation.operationId);
        store.finishOperation(operation.operationId, {
          phase: OperationPhase.FAILED,
          error: {
            code: "EXECUTION_FAILED",
            message: "x".repeat(300_000),
            retryable: false,
            details: {},
          },
        });
      }
      const pages: string[][] = [];
      let token = "";
      do {
        const page = store.listOperations({ pageSize: 100, pageToken: token });
        pages.push(page.items.map((op) => op.machineId));
        token = page.nextPageToken;
      } while (token !== "");
      assert.deepEqual(pages.map((p) => p.length), [3, 3, 3, 1]);
      assert.deepEqual(pages.flat(), ids.slice(0, 10));
    });
  });

  Deno.test(`${name}: PHASE_PRECONDITION names the phases required`, opts, async () => {
    const { store } = await fresh();
    store.registerMachine(machine("machine-2"));
    const error = assertDomainError(
      () => store.createOperation(request("machine-2", "r", OperationType.REBOOT)),
      FailedPreconditionError,
      "PHASE_PRECONDITION",
    );
    assert.deepEqual({ ...error.metadata }, {
      machineId: "machine-2",
      phase: "FACTORY_READY",
      operationType: "REBOOT",
      requiredPhases: "READY,MAINTENANCE",
    });
  });

  Deno.test(`${name}: pruneOperations() keeps the newest finished ones`, opts, async (t) => {
    const { store } = await fresh();
    store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
    const done = reboots(store, 10);
    await t.step("nothing to prune within the limits", () => {
      assert.deepEqual(store.pruneOperations(KEEP_ALL, 100), []);
    });
    await t.step("oldest first, at most `limit` per call", () => {
      const policy = { ...KEEP_ALL, maxOperations: 2 };
      assert.deepEqual(
        store.pruneOperations(policy, 3).map((o) => o.operationId),
        done.slice(0, 3),
      );
      assert.deepEqual(
        store.pruneOperations(policy, 3).map((o) => o.operationId),
        done.slice(3, 6),
      );
      assert.deepEqual(
        store.pruneOperations(policy, 3).map((o) => o.operationId),
        done.slice(6, 8),
      );
      assert.deepEqual(store.pruneOperations(policy, 3), []);
    });
    await t.step("pruned operations are gone everywhere", () => {
      assert.deepEqual(ids(store.listOperations({})), done.slice(8));
      assert.deepEqual(ids(store.listOperations({ filter: "phase=SUCCEEDED" })), done.slice(8));
      assert.deepEqual(ids(store.listOperations({ filter: "type=REBOOT" })), done.slice(8));
      assert.deepEqual(
        ids(store.listOperations({ filter: "machine_id=machine-1" })),
        done.slice(8),
      );
      assertDomainError(
        () => store.getOperation(done[0]),
        NotFoundError,
        "OPERATION_NOT_FOUND",
      );
      assert.equal(store.sizes().operations, 2);
    });
  });

  Deno.test(`${name}: pruneOperations() drops what finished too long ago`, opts, async () => {
    const { store, clock } = await fresh();
    store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
    const [old] = reboots(store, 1);
    clock.advance(2 * HOUR);
    const [recent] = reboots(store, 1);
    clock.advance(HOUR / 2);
    const policy = { maxOperations: 100, maxAgeMs: HOUR };
    assert.deepEqual(store.pruneOperations(policy, 10).map((o) => o.operationId), [old]);
    assert.deepEqual(ids(store.listOperations({})), [recent]);
    clock.advance(HOUR);
    assert.deepEqual(store.pruneOperations(policy, 10).map((o) => o.operationId), [recent]);
    assert.deepEqual(ids(store.listOperations({})), []);
  });

  Deno.test(`${name}: pruneOperations() never removes an active operation`, opts, async () => {
    const { store, clock } = await fresh();
    for (const id of ["machine-1", "machine-2", "machine-3"]) {
      store.registerMachine(machine(id, { status: { phase: MachinePhase.READY } }));
    }
    const pending = store.createOperation(request("machine-1", "p", OperationType.REBOOT))
      .operation;
    const running = store.createOperation(request("machine-2", "r", OperationType.REBOOT))
      .operation;
    store.markRunning(running.operationId);
    reboots(store, 3, "machine-3");
    clock.advance(1000 * HOUR);
    const pruned = store.pruneOperations({ maxOperations: 1, maxAgeMs: 1 }, 100);
    assert.equal(pruned.length, 3);
    assert.deepEqual(ids(store.listOperations({})), [pending.operationId, running.operationId]);
    assert.deepEqual(store.activeOperations().map((o) => o.operationId), [
      pending.operationId,
      running.operationId,
    ]);
  });

  Deno.test(
    `${name}: a request id whose operation was pruned starts a new operation`,
    opts,
    async () => {
      const { store } = await fresh();
      store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
      const first = store.createOperation(request("machine-1", "again", OperationType.REBOOT));
      store.markRunning(first.operation.operationId);
      store.finishOperation(first.operation.operationId, { phase: OperationPhase.SUCCEEDED });
      const replay = store.createOperation(request("machine-1", "again", OperationType.REBOOT));
      assert.equal(replay.created, false);
      reboots(store, 1);
      store.pruneOperations({ ...KEEP_ALL, maxOperations: 1 }, 10);
      const after = store.createOperation(request("machine-1", "again", OperationType.REBOOT));
      assert.equal(after.created, true);
      assert.notEqual(after.operation.operationId, first.operation.operationId);
    },
  );

  Deno.test(`${name}: pruning frees every per-operation structure`, opts, async () => {
    const { store, clock } = await fresh();
    for (let m = 1; m <= 5; m++) {
      store.registerMachine(machine(`machine-${m}`, { status: { phase: MachinePhase.READY } }));
    }
    for (let m = 1; m <= 5; m++) reboots(store, 200, `machine-${m}`);
    const full = store.sizes();
    assert.equal(full.requestKeys, 1000);
    assert.ok(full.indexEntries >= 4000, JSON.stringify(full));
    const policy = { maxOperations: 5, maxAgeMs: HOUR };
    while (store.pruneOperations(policy, 64).length > 0) { /* drain in batches */ }
    const kept = store.sizes();
    assert.deepEqual(
      { ...kept, indexEntries: 0 },
      {
        machines: 5,
        operations: 5,
        finished: 5,
        active: 0,
        requestKeys: 5,
        indexedMachines: kept.indexedMachines,
        indexEntries: 0,
      },
    );
    assert.ok(kept.indexedMachines <= 5);
    // Left-over index entries are bounded by the lazy compaction, not by the history.
    assert.ok(kept.indexEntries < 300, JSON.stringify(kept));
    clock.advance(2 * HOUR);
    while (store.pruneOperations(policy, 64).length > 0) { /* drain */ }
    const empty = store.sizes();
    assert.equal(empty.operations, 0);
    assert.equal(empty.requestKeys, 0);
    assert.equal(empty.indexedMachines, 0);
    assert.ok(empty.indexEntries < 300, JSON.stringify(empty));
  });

  Deno.test(
    `${name}: pruned operations leave at most as many index entries as kept ones, over many machines`,
    opts,
    async () => {
      // The soak's shape: operations spread over many machines, each keeping a few under the
      // cap, so every per-machine index keeps live entries and is never deleted.
      const { store } = await fresh();
      const machines = 100;
      for (let m = 1; m <= machines; m++) {
        store.registerMachine(machine(`machine-${m}`, { status: { phase: MachinePhase.READY } }));
      }
      const policy = { maxOperations: machines, maxAgeMs: 1000 * HOUR };
      for (let round = 0; round < 20; round++) {
        for (let m = 1; m <= machines; m++) reboots(store, 1, `machine-${m}`);
        while (store.pruneOperations(policy, 64).length > 0) { /* drain in batches */ }
      }
      const sizes = store.sizes();
      assert.equal(sizes.operations, machines);
      assert.equal(sizes.indexedMachines, machines);
      // Every kept (finished) operation is in five indexes: all, finished, its machine's, its
      // phase's and its type's. Each index may hold as many pruned entries as live ones, and
      // no more: a pruned entry pins the whole pruned operation.
      assert.ok(sizes.indexEntries <= 2 * 5 * sizes.operations, JSON.stringify(sizes));
    },
  );

  Deno.test(`${name}: page tokens survive pruning between pages`, opts, async (t) => {
    for (const filter of ["", "phase=SUCCEEDED", "machine_id=machine-1", "type=REBOOT"]) {
      await t.step(filter || "no filter", async () => {
        const { store } = await fresh();
        store.registerMachine(machine("machine-1", { status: { phase: MachinePhase.READY } }));
        const done = reboots(store, 10);
        const first = store.listOperations({ pageSize: 3, filter });
        assert.deepEqual(ids(first), done.slice(0, 3));
        // Prunes the first page and the two operations the next page would start with.
        store.pruneOperations({ ...KEEP_ALL, maxOperations: 5 }, 100);
        const seen = [...ids(first)];
        let token = first.nextPageToken;
        while (token !== "") {
          const next = store.listOperations({ pageSize: 3, filter, pageToken: token });
          seen.push(...ids(next));
          token = next.nextPageToken;
        }
        assert.deepEqual(seen, [...done.slice(0, 3), ...done.slice(5)]);
      });
    }
  });

  Deno.test(
    `${name}: indexed filtered lists equal the unindexed result on random data`,
    opts,
    async () => {
      // A small scan budget makes pages end early, so budget-cut pages are checked too.
      const { store, clock } = await fresh(7);
      let seed = 42;
      const random = (n: number) => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return seed % n;
      };
      const machines = 6;
      for (let m = 1; m <= machines; m++) {
        store.registerMachine(machine(`machine-${m}`, { status: { phase: MachinePhase.READY } }));
      }
      const types = [
        OperationType.REBOOT,
        OperationType.REIMAGE,
        OperationType.ENTER_MAINTENANCE,
        OperationType.EXIT_MAINTENANCE,
      ];
      for (let step = 0; step < 600; step++) {
        const machineId = `machine-${1 + random(machines)}`;
        const active = store.getMachine(machineId).status!.activeOperationId;
        clock.advance(random(1000));
        if (active === "") {
          try {
            store.createOperation(request(machineId, `r-${step}`, types[random(types.length)]));
          } catch (error) {
            if (!(error instanceof FailedPreconditionError)) throw error;
          }
          continue;
        }
        const phase = store.getOperation(active).phase;
        const roll = random(4);
        if (phase === OperationPhase.PENDING && roll < 2) store.markRunning(active);
        else if (roll === 0) store.cancelOperation(active, "user");
        else if (roll === 1) {
          store.finishOperation(active, {
            phase: OperationPhase.FAILED,
            error: { code: "X", message: "x", retryable: true, details: {} },
          });
        } else if (phase === OperationPhase.RUNNING) {
          store.finishOperation(active, { phase: OperationPhase.SUCCEEDED });
        }
        if (step % 50 === 49) store.pruneOperations({ ...KEEP_ALL, maxOperations: 60 }, 5);
      }
      const listAll = (filter: string, pageSize: number) => {
        const out: string[] = [];
        let token = "";
        do {
          const page = store.listOperations({ filter, pageSize, pageToken: token });
          assert.ok(page.items.length <= pageSize);
          out.push(...ids(page));
          token = page.nextPageToken;
        } while (token !== "");
        return out;
      };
      const everything = listAll("", 1000);
      assert.equal(everything.length, store.sizes().operations);
      const all = everything.map((id) => store.getOperation(id));
      const values = {
        machine_id: [...Array(machines).keys()].map((m) => `machine-${m + 1}`).concat("nobody"),
        phase: ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"],
        type: ["REBOOT", "REIMAGE", "ENTER_MAINTENANCE", "EXIT_MAINTENANCE"],
      };
      const filters = [""];
      for (const [key, list] of Object.entries(values)) {
        for (const value of list) filters.push(`${key}=${value}`);
      }
      for (let i = 0; i < 40; i++) {
        filters.push(
          `machine_id=${values.machine_id[random(7)]} AND phase=${values.phase[random(5)]}`,
          `type=${values.type[random(4)]} AND phase=${values.phase[random(5)]}`,
          `type=${values.type[random(4)]} AND machine_id=${values.machine_id[random(7)]}`,
        );
      }
      let nonEmpty = 0;
      for (const filter of filters) {
        const parsed = parseOperationFilter(filter);
        const expected = all.filter((op) => parsed.matches(op)).map((op) => op.operationId);
        if (expected.length > 0) nonEmpty++;
        for (const pageSize of [1, 3, 100]) {
          assert.deepEqual(listAll(filter, pageSize), expected, `${filter} by ${pageSize}`);
        }
      }
      assert.ok(nonEmpty > 20, `only ${nonEmpty} filters matched anything`);
    },
  );

  Deno.test(`${name}: a list call examines at most its scan budget`, opts, async (t) => {
    const { store } = await fresh(4);
    for (let m = 1; m <= 10; m++) {
      store.registerMachine(machine(`machine-${m}`, { status: { phase: MachinePhase.READY } }));
    }
    reboots(store, 10);
    await t.step("an unindexed machine filter returns short pages until the end", () => {
      const first = store.listMachines({ filter: "label.role=nobody" });
      assert.deepEqual(first.items, []);
      assert.notEqual(first.nextPageToken, "");
      let token = first.nextPageToken;
      let calls = 1;
      while (token !== "") {
        token = store.listMachines({ filter: "label.role=nobody", pageToken: token })
          .nextPageToken;
        calls++;
      }
      assert.equal(calls, 3);
    });
    await t.step("an indexed operation filter with candidates that do not match", () => {
      // machine-2 alternates ENTER and EXIT_MAINTENANCE: both indexes have 10 candidates.
      for (let i = 0; i < 10; i++) {
        const type = i % 2 === 0 ? OperationType.ENTER_MAINTENANCE : OperationType.EXIT_MAINTENANCE;
        const { operation } = store.createOperation(request("machine-2", `m-${i}`, type));
        store.markRunning(operation.operationId);
        store.finishOperation(operation.operationId, { phase: OperationPhase.SUCCEEDED });
      }
      const page = store.listOperations({ filter: "machine_id=machine-2 AND type=REBOOT" });
      assert.deepEqual(page.items, []);
      assert.notEqual(page.nextPageToken, "");
    });
    await t.step("an index without candidates answers at once", () => {
      assert.deepEqual(store.listOperations({ filter: "phase=FAILED" }), {
        items: [],
        nextPageToken: "",
      });
    });
  });
}
