import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  MachineService,
  MachineStatus_EffectiveState as EffectiveState,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { connectClient } from "../lib/client/mod.ts";
import { getCondition } from "../lib/model/lifecycle.ts";
import { nextEvent, SANITIZE } from "./helpers.ts";
import { spawnServer } from "../scripts/server_process.ts";

Deno.test(
  "a server killed with SIGKILL mid-reimage restarts on the same --db with the truth",
  SANITIZE,
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-crash-" });
    const db = `${dir}/bmdemo.db`;
    try {
      let interrupted: string;
      let finished: string;
      {
        // --slow: the reimage's steps take seconds, so the kill lands mid-step.
        await using first = await spawnServer(["--db", db, "--slow"]);
        using machines = connectClient(MachineService, first.address);
        using operations = connectClient(OperationService, first.address);
        for (const id of ["machine-1", "machine-2"]) {
          await machines.registerMachine({ machine: create(MachineSchema, { machineId: id }) });
        }
        const events = operations.watchOperations({ sendInitialSnapshot: true });
        await nextEvent(events, (e) => e.message === "Snapshot complete");
        finished = (await machines.enterMaintenance({ machineId: "machine-1", requestId: "enter" }))
          .operationId;
        await nextEvent(
          events,
          (e) => e.snapshot?.operationId === finished && e.message === "Operation succeeded",
        );
        interrupted = (await machines.reimageMachine({
          machineId: "machine-1",
          requestId: "reimage-1",
          imageRef: "ubuntu-2404",
        })).operationId;
        await nextEvent(
          events,
          (e) =>
            e.snapshot?.operationId === interrupted &&
            e.message === "Step set-netboot started",
        );
        const status = await first.stop("SIGKILL");
        assert.equal(status.signal, "SIGKILL");
        await events.return?.();
      }

      await using second = await spawnServer(["--db", db]);
      using machines = connectClient(MachineService, second.address);
      using operations = connectClient(OperationService, second.address);

      await t.step("machines and finished operations are all there", async () => {
        const listed = await machines.listMachines({});
        assert.deepEqual(listed.machines.map((m) => m.machineId), ["machine-1", "machine-2"]);
        const enter = await operations.getOperation({ operationId: finished });
        assert.equal(enter.phase, OperationPhase.SUCCEEDED);
      });
      await t.step("the interrupted operation is FAILED with INTERRUPTED", async () => {
        const op = await operations.getOperation({ operationId: interrupted });
        assert.equal(op.phase, OperationPhase.FAILED);
        assert.equal(op.error?.code, "INTERRUPTED");
        assert.equal(op.error?.retryable, true);
        assert.match(op.error!.message, /restart/);
        assert.ok(op.finishedAt);
      });
      await t.step("the machine shows ATTENTION and is no longer busy", async () => {
        const machine = await machines.getMachine({ machineId: "machine-1" });
        assert.equal(machine.status?.effectiveState, EffectiveState.ATTENTION);
        assert.equal(machine.status?.activeOperationId, "");
        const flag = getCondition(machine.status!.conditions, "NeedsIntervention");
        assert.deepEqual([flag?.status, flag?.reason], [true, "OperationInterrupted"]);
      });
      await t.step("its log survived and says what happened", async () => {
        const lines: string[] = [];
        for await (const chunk of operations.streamOperationLogs({ operationId: interrupted })) {
          lines.push(new TextDecoder().decode(chunk.data).trimEnd());
        }
        assert.match(lines[0], /^=== Starting operation/);
        assert.ok(
          lines.includes("[repave] Image: ubuntu-2404") || lines.some((l) => /netboot/.test(l)),
        );
        assert.match(lines.at(-1)!, /INTERRUPTED|interrupted|restart/);
      });
      await t.step("the old request_id replays the interrupted operation", async () => {
        const replay = await machines.reimageMachine({
          machineId: "machine-1",
          requestId: "reimage-1",
          imageRef: "ubuntu-2404",
        });
        assert.equal(replay.operationId, interrupted);
        assert.equal(replay.phase, OperationPhase.FAILED);
      });
      await t.step(
        "a new operation on the machine runs to SUCCEEDED and clears ATTENTION",
        async () => {
          const events = operations.watchOperations({
            filter: "machine_id=machine-1",
            sendInitialSnapshot: true,
          });
          await nextEvent(events, (e) => e.message === "Snapshot complete");
          const reboot = await machines.rebootMachine({ machineId: "machine-1", requestId: "r-2" });
          const end = await nextEvent(
            events,
            (e) => e.snapshot?.operationId === reboot.operationId && e.snapshot.phase >= 3,
          );
          await events.return?.();
          assert.equal(end.snapshot?.phase, OperationPhase.SUCCEEDED);
          const machine = await machines.getMachine({ machineId: "machine-1" });
          assert.equal(machine.status?.effectiveState, EffectiveState.MAINTENANCE_IDLE);
        },
      );
      assert.equal((await second.stop()).code, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "a graceful stop mid-operation cancels it in both stores, and a --db restart keeps that",
  SANITIZE,
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-stop-" });
    try {
      for (const store of ["memory", "sqlite"] as const) {
        await t.step(store, async () => {
          const db = `${dir}/${store}.db`;
          const args = store === "sqlite" ? ["--db", db, "--slow"] : ["--slow"];
          let id: string;
          {
            await using server = await spawnServer(args);
            using machines = connectClient(MachineService, server.address);
            using operations = connectClient(OperationService, server.address);
            await machines.registerMachine({
              machine: create(MachineSchema, { machineId: "machine-1", status: { phase: 2 } }),
            });
            const events = operations.watchOperations({ sendInitialSnapshot: true });
            await nextEvent(events, (e) => e.message === "Snapshot complete");
            id = (await machines.rebootMachine({ machineId: "machine-1", requestId: "r" }))
              .operationId;
            await nextEvent(
              events,
              (e) => e.snapshot?.operationId === id && e.message === "Step reboot started",
            );
            assert.equal((await server.stop("SIGTERM")).code, 0, server.stderr());
            assert.match(server.stderr(), new RegExp(`${id} machine-1 REBOOT CANCELED`));
            await events.return?.().catch(() => {});
          }
          if (store === "sqlite") {
            await using again = await spawnServer(["--db", db]);
            using operations = connectClient(OperationService, again.address);
            const op = await operations.getOperation({ operationId: id });
            assert.equal(op.phase, OperationPhase.CANCELED);
            assert.equal((await again.stop()).code, 0);
          }
        });
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
