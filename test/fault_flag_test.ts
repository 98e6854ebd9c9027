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
import { BUILTIN_PLANS } from "../lib/engine/plans.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import { FAULT_STEPS, parseFault, withFaults } from "../lib/provider/fault_flag.ts";
import { runServer, spawnServer } from "../scripts/server_process.ts";
import { maintenanceOverGrpc, SANITIZE } from "./helpers.ts";

Deno.test("--fault names exactly the steps of the built-in plans", () => {
  const steps = new Set([...BUILTIN_PLANS.values()].flatMap((p) => p.steps.map((s) => s.name)));
  assert.deepEqual(new Set(Object.keys(FAULT_STEPS)), steps);
});

Deno.test("parseFault reads STEP[:MODE][@machine-id]", () => {
  assert.deepEqual(parseFault("repave-image"), {
    text: "repave-image",
    step: "repave-image",
    failures: 1,
    hang: false,
  });
  assert.equal(parseFault("join-cluster:always").failures, Infinity);
  assert.equal(parseFault("reboot:hang").hang, true);
  assert.deepEqual(parseFault("repave-image:2@machine-4"), {
    text: "repave-image:2@machine-4",
    step: "repave-image",
    failures: 2,
    hang: false,
    machineId: "machine-4",
  });
});

Deno.test(
  "server.ts refuses a bad --fault with one line naming the allowed values, exit 2",
  SANITIZE,
  async (t) => {
    for (
      const [value, pattern] of [
        ["repave", /unknown step "repave": use one of set-netboot, .*repave-image/],
        ["repave-image:sometimes", /unknown mode "sometimes".*use one of once, always, hang/],
        ["repave-image:once:twice", /unknown mode "once:twice"/],
        ["repave-image:0", /unknown mode "0"/],
        ["repave-image:once@", /empty machine id/],
      ] as const
    ) {
      await t.step(value, async () => {
        const { code, stderr } = await runServer(["--fault", value]);
        assert.equal(code, 2);
        assert.match(stderr.split("\n")[0], pattern);
      });
    }
  },
);

/** Reimages machine-1 on a server spawned with `args`; returns the operation, machine and log. */
async function reimageOn(args: string[]): Promise<{
  phase: OperationPhase;
  effective: EffectiveState;
  log: string;
  stderr: string;
}> {
  await using server = await spawnServer(["--timing", "zero", ...args]);
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);
  await maintenanceOverGrpc(machines, operations, "machine-1");
  const reimage = await machines.reimageMachine({ machineId: "machine-1", requestId: "r" });
  const lines: string[] = [];
  for await (const chunk of operations.streamOperationLogs({ operationId: reimage.operationId })) {
    lines.push(new TextDecoder().decode(chunk.data));
  }
  const done = await operations.getOperation({ operationId: reimage.operationId });
  const machine = await machines.getMachine({ machineId: "machine-1" });
  await server.stop();
  return {
    phase: done.phase,
    effective: machine.status!.effectiveState,
    log: lines.join("\n"),
    stderr: server.stderr(),
  };
}

Deno.test(
  "server.ts --fault repave-image:once fails one attempt, the retry succeeds",
  SANITIZE,
  async () => {
    const run = await reimageOn(["--fault", "repave-image:once"]);
    assert.equal(OperationPhase[run.phase], "SUCCEEDED", run.log);
    assert.match(run.log, /injected fault \(--fault repave-image:once\), attempt 1/);
    assert.match(run.log, /Retry 1\/1/);
    assert.doesNotMatch(run.log, /attempt 2/);
    assert.equal(EffectiveState[run.effective], "MAINTENANCE_IDLE");
    assert.match(run.stderr, /Fault injected: repave-image:once/);
  },
);

Deno.test(
  "server.ts --fault repave-image:always FAILS the reimage; the machine needs ATTENTION",
  SANITIZE,
  async () => {
    const run = await reimageOn(["--fault", "repave-image:always"]);
    assert.equal(OperationPhase[run.phase], "FAILED", run.log);
    assert.match(run.log, /attempt 2/);
    assert.equal(EffectiveState[run.effective], "ATTENTION");
  },
);

Deno.test(
  "--fault @machine-id spares the other machines; hang lasts until the signal aborts",
  SANITIZE,
  async () => {
    const provider = withFaults(createFakeProvider({ timing: "zero" }), [
      parseFault("repave-image:always@machine-2"),
      parseFault("reboot:hang"),
    ]);
    const log: string[] = [];
    const call = (signal = new AbortController().signal) => ({
      operationId: "op-1",
      signal,
      log: (line: string) => void log.push(line),
    });
    const machine = (machineId: string) => create(MachineSchema, { machineId });
    const options = { imageRef: "i", cloudInitRef: "c" };
    await provider.repave(call(), machine("machine-1"), options);
    await assert.rejects(provider.repave(call(), machine("machine-2"), options), /injected fault/);
    const abort = new AbortController();
    const hung = provider.reboot(call(abort.signal), machine("machine-1"), { force: false });
    abort.abort(new Error("step timeout"));
    await assert.rejects(hung, /step timeout/);
    assert.ok(log.some((line) => line.includes("hanging until the step times out")));
  },
);
