import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, connectClient } from "../lib/client/mod.ts";
import { NotFoundError } from "../lib/model/errors.ts";
import { createMemoryStore } from "../lib/store/memory.ts";
import {
  MachineSchema,
  MachineService,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { parseCount, parseDuration, Retention } from "../lib/engine/retention.ts";
import { runServer, spawnServer } from "../scripts/server_process.ts";
import {
  enterMaintenance,
  importMachines,
  rejectsWithCode,
  runOperation,
  SANITIZE,
  testEngine,
  untilTerminal,
} from "./helpers.ts";
import { testClock } from "./store_contract.ts";

const decoder = new TextDecoder();
const HOUR = 3_600_000;

Deno.test("parseDuration() takes a whole number and one unit", SANITIZE, () => {
  assert.equal(parseDuration("90s", "--retain-for"), 90_000);
  assert.equal(parseDuration("30m", "--retain-for"), 1_800_000);
  assert.equal(parseDuration("168h", "--retain-for"), 168 * HOUR);
  assert.equal(parseDuration("7d", "--retain-for"), 168 * HOUR);
  for (const bad of ["", "7", "0h", "1.5h", "-1h", "1w", "1h30m", "h", "10 days"]) {
    assert.throws(
      () => parseDuration(bad, "--retain-for"),
      (error: unknown) =>
        error instanceof RangeError &&
        error.message.includes("--retain-for must be a positive whole number with a unit") &&
        error.message.includes(`got "${bad}"`),
      bad,
    );
  }
});

Deno.test("parseCount() takes a positive whole number", SANITIZE, () => {
  assert.equal(parseCount("5000", "--retain-operations"), 5000);
  for (const bad of ["", "0", "-3", "1e4", "ten", "2.5"]) {
    assert.throws(
      () => parseCount(bad, "--retain-operations"),
      /--retain-operations must be a positive whole number/,
      bad,
    );
  }
});

Deno.test("server.ts refuses bad retention flags with exit code 2", SANITIZE, async (t) => {
  for (
    const [args, pattern] of [
      [["--retain-operations", "0"], /--retain-operations must be a positive whole number/],
      [["--retain-for", "1w"], /--retain-for must be a positive whole number with a unit/],
    ] as const
  ) {
    await t.step(args.join(" "), async () => {
      const { code, stderr } = await runServer([...args]);
      assert.equal(code, 2);
      assert.match(stderr, pattern);
    });
  }
});

Deno.test(
  "Retention.sweep() drains a backlog in batches on zero-delay timers",
  SANITIZE,
  async () => {
    let backlog = 10;
    const limits: number[] = [];
    const drained = Promise.withResolvers<void>();
    const store = {
      pruneOperations(_: unknown, limit: number): Operation[] {
        limits.push(limit);
        const count = Math.min(limit, backlog);
        backlog -= count;
        return Array.from({ length: count }, () => ({}) as Operation);
      },
    };
    using retention = new Retention(store, {
      batch: 3,
      onPruned: () => {
        if (backlog === 0) drained.resolve();
      },
    });
    assert.equal(retention.sweep(), 3);
    await drained.promise;
    assert.equal(retention.prunedCount, 10);
    assert.deepEqual(limits, [3, 3, 3, 3]);
    assert.throws(() => new Retention(store, { maxOperations: 0 }), /maxOperations must be/);
  },
);

Deno.test(
  "Engine: reading a log that is no longer retained evicts no other log",
  SANITIZE,
  async () => {
    await using engine = testEngine({}, { logs: { maxFinishedOperations: 2 } });
    importMachines(engine, 1);
    const ids: string[] = [];
    for (
      const type of [OperationType.ENTER_MAINTENANCE, OperationType.REBOOT, OperationType.REBOOT]
    ) {
      ids.push((await runOperation(engine, { machineId: "machine-1", type })).operationId);
    }
    const lines = async (operationId: string) => {
      const out: string[] = [];
      for await (const chunk of engine.streamLogs(operationId)) {
        out.push(decoder.decode(chunk.data));
      }
      return out;
    };
    const [dropped] = await lines(ids[0]);
    assert.match(dropped, /no longer retained/);
    // Still retained, and still after the dropped one was read.
    for (const id of ids.slice(1)) {
      assert.ok(engine.logs.lines(id).length > 3, `log of ${id} was evicted`);
      assert.match((await lines(id)).at(-1)!, /Operation SUCCEEDED/);
    }
  },
);

Deno.test(
  "Engine: retention prunes finished operations with their logs and idempotency keys",
  SANITIZE,
  async (t) => {
    const clock = testClock();
    await using engine = testEngine({}, {
      store: createMemoryStore({ now: clock.now }),
      logs: { maxFinishedOperations: 2 },
      retention: { maxOperations: 5, maxAgeMs: HOUR },
    });
    importMachines(engine, 1);
    await enterMaintenance(engine, "machine-1");
    const first = await runOperation(engine, {
      machineId: "machine-1",
      type: OperationType.REBOOT,
      requestId: "first",
    });
    for (let i = 0; i < 40; i++) {
      await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
    }
    // Pruning follows each finish in a microtask; a sweep catches up whatever is left.
    engine.retention.sweep();
    await t.step("the count limit holds, and every per-operation structure shrank", () => {
      assert.equal(engine.listOperations({}).items.length, 5);
      const sizes = engine.store.sizes();
      assert.equal(sizes.operations, 5);
      assert.equal(sizes.requestKeys, 5);
      const logs = engine.logs.sizes();
      assert.ok(logs.journals <= 5, JSON.stringify(logs));
      // Dropped-log marks of pruned operations are gone too (at most the 3 retained ones
      // whose journals were evicted).
      assert.ok(logs.forgotten <= 3, JSON.stringify(logs));
      assert.ok(engine.retention.prunedCount >= 37);
    });
    await t.step("a pruned operation and its log are not found", () => {
      assert.throws(() => engine.getOperation(first.operationId), NotFoundError);
      assert.throws(() => engine.streamLogs(first.operationId), NotFoundError);
      assert.deepEqual(engine.logs.lines(first.operationId), []);
    });
    await t.step("its request id starts a new operation", async () => {
      const again = engine.startOperation({
        machineId: "machine-1",
        requestId: "first",
        type: OperationType.REBOOT,
      });
      assert.equal(again.created, true);
      assert.notEqual(again.operation.operationId, first.operationId);
      await untilTerminal(engine, again.operation.operationId);
    });
    await t.step("the age limit prunes the rest at the next sweep", () => {
      clock.advance(2 * HOUR);
      assert.equal(engine.retention.sweep(), 5);
      assert.deepEqual(engine.listOperations({}).items, []);
      assert.deepEqual(engine.logs.sizes(), { journals: 0, finished: 0, forgotten: 0 });
    });
    await t.step("an active operation is never pruned", () => {
      const { operation } = engine.startOperation({
        machineId: "machine-1",
        requestId: "active",
        type: OperationType.REBOOT,
      });
      clock.advance(100 * HOUR);
      engine.retention.sweep();
      assert.equal(engine.getOperation(operation.operationId).phase, OperationPhase.PENDING);
    });
  },
);

Deno.test(
  "server.ts --retain-operations prunes as operations finish, and again at open",
  SANITIZE,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-retention-" });
    const db = `${dir}/bmdemo.db`;
    try {
      const ids: string[] = [];
      {
        await using server = await spawnServer(["--db", db, "--retain-operations", "2"]);
        using machines = connectClient(MachineService, server.address);
        using operations = connectClient(OperationService, server.address);
        await machines.registerMachine({ machine: create(MachineSchema, { machineId: "m-1" }) });
        const events = operations.watchOperations({ sendInitialSnapshot: true });
        // Enter and exit maintenance (no steps) six times, each once the previous one ended.
        const start = async (n: number) => {
          const request = { machineId: "m-1", requestId: `r-${n}` };
          const op = n % 2 === 0
            ? await machines.enterMaintenance(request)
            : await machines.exitMaintenance(request);
          ids.push(op.operationId);
        };
        for await (const event of events) {
          if (event.message === "Snapshot complete") await start(0);
          else if (event.message === "Operation succeeded") {
            if (ids.length === 6) break;
            await start(ids.length);
          }
        }
        const listed = await operations.listOperations({});
        assert.deepEqual(listed.operations.map((op) => op.operationId), ids.slice(4));
        await rejectsWithCode(operations.getOperation({ operationId: ids[0] }), Code.NotFound);
        // r-0's operation was pruned: the same request id starts a new operation.
        const again = await machines.enterMaintenance({ machineId: "m-1", requestId: "r-0" });
        assert.notEqual(again.operationId, ids[0]);
      }
      await using restarted = await spawnServer(["--db", db, "--retain-operations", "1"]);
      using operations = connectClient(OperationService, restarted.address);
      const listed = await operations.listOperations({});
      assert.equal(listed.operations.length, 1);
      assert.match(
        restarted.stderr(),
        /loaded 1 machines and 1 operations .*\([12] finished operations beyond --retain-operations deleted\)/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
