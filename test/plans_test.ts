import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  type Machine,
  MachineSchema,
  type Operation,
  Operation_OperationType as OperationType,
  OperationSchema,
  type TargetClusterRef,
  TargetClusterRefSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  BUILTIN_PLANS,
  DEFAULT_IMAGE_REF,
  type Plan,
  planFor,
  type PlanStep,
  targetCluster,
  UnknownPlanError,
} from "../lib/engine/plans.ts";
import type { JoinMaterial, Provider, ProviderCall, ProviderVerb } from "../lib/provider/mod.ts";
import { SANITIZE } from "./helpers.ts";

const SECOND = 1000;

/** The data part of a plan, without the step functions. */
function shape(plan: Plan): { id: string; displayName: string; steps: object[] } {
  return {
    id: plan.id,
    displayName: plan.displayName,
    steps: plan.steps.map(({ name, timeoutMs, maxRetries }) => ({ name, timeoutMs, maxRetries })),
  };
}

Deno.test("planFor() returns the repave-join plan of reference 4.2 for REIMAGE", SANITIZE, () => {
  assert.deepStrictEqual(shape(planFor(OperationType.REIMAGE)), {
    id: "plan/repave-join",
    displayName: "Repave and Join Cluster",
    steps: [
      { name: "set-netboot", timeoutMs: 60 * SECOND, maxRetries: 2 },
      { name: "reboot-to-netboot", timeoutMs: 300 * SECOND, maxRetries: 1 },
      { name: "repave-image", timeoutMs: 600 * SECOND, maxRetries: 1 },
      { name: "join-cluster", timeoutMs: 300 * SECOND, maxRetries: 2 },
      { name: "verify-in-cluster", timeoutMs: 120 * SECOND, maxRetries: 3 },
    ],
  });
});

Deno.test("planFor() returns a one-step reboot plan for REBOOT", SANITIZE, () => {
  assert.deepStrictEqual(shape(planFor(OperationType.REBOOT)), {
    id: "plan/reboot",
    displayName: "Simple Reboot",
    steps: [{ name: "reboot", timeoutMs: 300 * SECOND, maxRetries: 1 }],
  });
});

Deno.test("planFor() returns step-less plans for the maintenance operations", SANITIZE, () => {
  assert.deepStrictEqual(
    [
      shape(planFor(OperationType.ENTER_MAINTENANCE)),
      shape(planFor(OperationType.EXIT_MAINTENANCE)),
    ],
    [
      { id: "plan/enter-maintenance", displayName: "Enter Maintenance", steps: [] },
      { id: "plan/exit-maintenance", displayName: "Exit Maintenance", steps: [] },
    ],
  );
});

Deno.test(
  "BUILTIN_PLANS has a plan for every runnable operation type and no other",
  SANITIZE,
  () => {
    assert.deepStrictEqual(
      [...BUILTIN_PLANS].map(([type, plan]) => [OperationType[type], plan.id]),
      [
        ["REIMAGE", "plan/repave-join"],
        ["REBOOT", "plan/reboot"],
        ["ENTER_MAINTENANCE", "plan/enter-maintenance"],
        ["EXIT_MAINTENANCE", "plan/exit-maintenance"],
      ],
    );
  },
);

Deno.test(
  "planFor() throws UnknownPlanError instead of falling back to reboot",
  SANITIZE,
  async (t) => {
    const cases = [
      {
        name: "OPERATION_TYPE_UNSPECIFIED",
        type: OperationType.OPERATION_TYPE_UNSPECIFIED,
        message: "no plan for operation type OPERATION_TYPE_UNSPECIFIED",
      },
      {
        name: "an unknown number",
        type: 99 as OperationType,
        message: "no plan for operation type 99",
      },
    ];
    for (const { name, type, message } of cases) {
      await t.step(name, () => {
        assert.throws(() => planFor(type), (error: unknown) => {
          assert.ok(error instanceof UnknownPlanError);
          assert.deepStrictEqual(
            { name: error.name, message: error.message, type: error.type },
            { name: "UnknownPlanError", message, type },
          );
          return true;
        });
      });
    }

    await t.step("a type missing from a custom registry", () => {
      assert.throws(() => planFor(OperationType.REIMAGE, new Map()), UnknownPlanError);
    });
  },
);

Deno.test("planFor() looks in the registry it is given", SANITIZE, () => {
  const custom: Plan = { id: "plan/custom", displayName: "Custom", steps: [] };
  assert.strictEqual(
    planFor(OperationType.REBOOT, new Map([[OperationType.REBOOT, custom]])),
    custom,
  );
});

Deno.test("BUILTIN_PLANS are frozen so no caller can change them for all", SANITIZE, async (t) => {
  for (const [type, plan] of BUILTIN_PLANS) {
    await t.step(OperationType[type], () => {
      assert.deepStrictEqual(
        {
          plan: Object.isFrozen(plan),
          steps: Object.isFrozen(plan.steps),
          eachStep: plan.steps.map((step) => Object.isFrozen(step)),
        },
        { plan: true, steps: true, eachStep: plan.steps.map(() => true) },
      );
    });
  }

  await t.step("assigning a step's timeout throws", () => {
    const step = planFor(OperationType.REBOOT).steps[0];
    assert.throws(() => {
      step.timeoutMs = 1;
    }, TypeError);
    assert.strictEqual(planFor(OperationType.REBOOT).steps[0].timeoutMs, 300 * SECOND);
  });

  await t.step("adding a step throws", () => {
    const steps = planFor(OperationType.ENTER_MAINTENANCE).steps as PlanStep[];
    assert.throws(() => steps.push(planFor(OperationType.REBOOT).steps[0]), TypeError);
  });
});

interface Recorded {
  verb: ProviderVerb;
  args: unknown[];
}

const MATERIAL: JoinMaterial = {
  endpoint: "https://k8s-api.example.com:6443",
  token: "abcdef.0123456789abcdef",
  caHash: `sha256:${"0".repeat(64)}`,
  expiresAt: new Date("2025-01-02T00:00:00Z"),
  clusterId: "lab-cluster",
  certificate: "",
};

/**
 * A Provider that records each call (without its `ProviderCall`, which is checked separately)
 * and succeeds, unless `fail` names the verb: then it rejects with that value.
 */
function recordingProvider(
  fail: Partial<Record<ProviderVerb, (call: ProviderCall) => unknown>> = {},
): { provider: Provider; calls: Recorded[]; callContexts: ProviderCall[] } {
  const calls: Recorded[] = [];
  const callContexts: ProviderCall[] = [];
  function record(verb: ProviderVerb, call: ProviderCall, args: unknown[]): Promise<void> {
    calls.push({ verb, args });
    callContexts.push(call);
    const failure = fail[verb];
    return failure ? Promise.reject(failure(call)) : Promise.resolve();
  }
  const provider: Provider = {
    setNetboot: (call, machine, profile) => record("setNetboot", call, [machine, profile]),
    reboot: (call, machine, options) => record("reboot", call, [machine, options]),
    repave: (call, machine, options) => record("repave", call, [machine, options]),
    mintJoinMaterial: async (call, cluster) => {
      await record("mintJoinMaterial", call, [cluster]);
      return MATERIAL;
    },
    joinNode: (call, machine, material) => record("joinNode", call, [machine, material]),
    verifyInCluster: (call, machine, cluster) =>
      record("verifyInCluster", call, [machine, cluster]),
    rma: (call, machine, reason) => record("rma", call, [machine, reason]),
    executeSshCommand: (call, machine, options) =>
      record("executeSshCommand", call, [machine, options]),
  };
  return { provider, calls, callContexts };
}

function providerCall(signal: AbortSignal = new AbortController().signal): ProviderCall {
  return { operationId: "op-1", signal, log() {} };
}

const LAB_CLUSTER: TargetClusterRef = create(TargetClusterRefSchema, {
  clusterId: "lab-cluster",
  kubeconfigSecretRef: "secrets/lab-kubeconfig",
});
const DEFAULT_CLUSTER: TargetClusterRef = create(TargetClusterRefSchema, {
  clusterId: "default-cluster",
});

function machineIn(cluster?: TargetClusterRef): Machine {
  return create(MachineSchema, {
    machineId: "machine-1",
    spec: { sshEndpoint: "10.0.0.11:22", targetCluster: cluster },
  });
}

function reimage(params: Record<string, string> = {}): Operation {
  return create(OperationSchema, {
    operationId: "op-1",
    machineId: "machine-1",
    type: OperationType.REIMAGE,
    params,
  });
}

/** The step of `type`'s plan called `name`. */
function stepNamed(type: OperationType, name: string): PlanStep {
  const step = planFor(type).steps.find((s) => s.name === name);
  assert.ok(step, `${OperationType[type]} has a step ${name}`);
  return step;
}

/** Runs every step of `plan` in order, as the executor would on success. */
async function runAll(
  plan: Plan,
  provider: Provider,
  machine: Machine,
  operation: Operation,
  call: ProviderCall = providerCall(),
): Promise<void> {
  for (const step of plan.steps) await step.run({ provider, call, machine, operation });
}

Deno.test("REIMAGE steps call the provider with the plan's arguments", SANITIZE, async (t) => {
  await t.step("with the requested image and the machine's cluster", async () => {
    const { provider, calls, callContexts } = recordingProvider();
    const machine = machineIn(LAB_CLUSTER);
    const call = providerCall();
    await runAll(
      planFor(OperationType.REIMAGE),
      provider,
      machine,
      reimage({ image_ref: "ubuntu-2404-gpu" }),
      call,
    );
    assert.deepStrictEqual(calls, [
      { verb: "setNetboot", args: [machine, "pxe-ubuntu-22.04"] },
      { verb: "reboot", args: [machine, { force: false }] },
      {
        verb: "repave",
        args: [machine, { imageRef: "ubuntu-2404-gpu", cloudInitRef: "cloud-init/worker-node" }],
      },
      { verb: "mintJoinMaterial", args: [LAB_CLUSTER] },
      { verb: "joinNode", args: [machine, MATERIAL] },
      { verb: "verifyInCluster", args: [machine, LAB_CLUSTER] },
    ]);
    assert.ok(callContexts.every((c) => c === call), "every verb gets the step's ProviderCall");
  });

  await t.step("with the default image and cluster when none is named", async () => {
    const { provider, calls } = recordingProvider();
    const machine = machineIn();
    await runAll(planFor(OperationType.REIMAGE), provider, machine, reimage({ image_ref: "" }));
    assert.deepStrictEqual(calls, [
      { verb: "setNetboot", args: [machine, "pxe-ubuntu-22.04"] },
      { verb: "reboot", args: [machine, { force: false }] },
      {
        verb: "repave",
        args: [machine, { imageRef: "ubuntu-2204-lab", cloudInitRef: "cloud-init/worker-node" }],
      },
      { verb: "mintJoinMaterial", args: [DEFAULT_CLUSTER] },
      { verb: "joinNode", args: [machine, MATERIAL] },
      { verb: "verifyInCluster", args: [machine, DEFAULT_CLUSTER] },
    ]);
  });

  await t.step("with DEFAULT_IMAGE_REF when params has no image_ref", async () => {
    const { provider, calls } = recordingProvider();
    const repave = stepNamed(OperationType.REIMAGE, "repave-image");
    await repave.run({
      provider,
      call: providerCall(),
      machine: machineIn(),
      operation: reimage(),
    });
    assert.deepStrictEqual(calls.map((c) => c.args[1]), [
      { imageRef: DEFAULT_IMAGE_REF, cloudInitRef: "cloud-init/worker-node" },
    ]);
    assert.strictEqual(DEFAULT_IMAGE_REF, "ubuntu-2204-lab");
  });
});

Deno.test("join-cluster step wraps a mint failure and does not join", SANITIZE, async (t) => {
  const joinCluster = stepNamed(OperationType.REIMAGE, "join-cluster");

  await t.step("an Error", async () => {
    const cause = new Error("token service unavailable");
    const { provider, calls } = recordingProvider({ mintJoinMaterial: () => cause });
    await assert.rejects(
      joinCluster.run({
        provider,
        call: providerCall(),
        machine: machineIn(),
        operation: reimage(),
      }),
      (error: unknown) => {
        assert.ok(error instanceof Error);
        assert.deepStrictEqual(
          { message: error.message, cause: error.cause },
          { message: "mint join material: token service unavailable", cause },
        );
        return true;
      },
    );
    assert.deepStrictEqual(calls.map((c) => c.verb), ["mintJoinMaterial"]);
  });

  await t.step("a thrown string", async () => {
    const { provider } = recordingProvider({ mintJoinMaterial: () => "quota exceeded" });
    await assert.rejects(
      joinCluster.run({
        provider,
        call: providerCall(),
        machine: machineIn(),
        operation: reimage(),
      }),
      { message: "mint join material: quota exceeded" },
    );
  });

  await t.step("but passes the abort reason through unchanged once aborted", async () => {
    const controller = new AbortController();
    const reason = new DOMException("canceled by user", "AbortError");
    controller.abort(reason);
    const { provider, calls } = recordingProvider({
      mintJoinMaterial: (call) => call.signal.reason,
    });
    await assert.rejects(
      joinCluster.run({
        provider,
        call: providerCall(controller.signal),
        machine: machineIn(),
        operation: reimage(),
      }),
      (error: unknown) => error === reason,
    );
    assert.deepStrictEqual(calls.map((c) => c.verb), ["mintJoinMaterial"]);
  });
});

Deno.test("REIMAGE steps pass other provider failures through unchanged", SANITIZE, async () => {
  const failure = new Error("disk write failed");
  const { provider } = recordingProvider({ repave: () => failure });
  await assert.rejects(
    runAll(planFor(OperationType.REIMAGE), provider, machineIn(), reimage()),
    (error: unknown) => error === failure,
  );
});

Deno.test('REBOOT step forces only when params.force is "true"', SANITIZE, async (t) => {
  const cases: { params: Record<string, string>; force: boolean }[] = [
    { params: { force: "true" }, force: true },
    { params: { force: "false" }, force: false },
    { params: { force: "TRUE" }, force: false },
    { params: { force: "1" }, force: false },
    { params: { force: "" }, force: false },
    { params: {}, force: false },
  ];
  for (const { params, force } of cases) {
    await t.step(JSON.stringify(params), async () => {
      const { provider, calls } = recordingProvider();
      const machine = machineIn();
      const operation = create(OperationSchema, {
        operationId: "op-2",
        machineId: "machine-1",
        type: OperationType.REBOOT,
        params,
      });
      await runAll(planFor(OperationType.REBOOT), provider, machine, operation);
      assert.deepStrictEqual(calls, [{ verb: "reboot", args: [machine, { force }] }]);
    });
  }
});

Deno.test(
  "targetCluster() returns the machine's cluster or the default one",
  SANITIZE,
  async (t) => {
    await t.step("the spec's cluster when it names one", () => {
      assert.strictEqual(targetCluster(machineIn(LAB_CLUSTER)), LAB_CLUSTER);
    });

    await t.step("default-cluster without a spec", () => {
      assert.deepStrictEqual(targetCluster(create(MachineSchema, {})), DEFAULT_CLUSTER);
    });

    await t.step("default-cluster without a target cluster", () => {
      assert.deepStrictEqual(targetCluster(machineIn()), DEFAULT_CLUSTER);
    });

    await t.step("default-cluster when the target cluster id is empty", () => {
      const unnamed = create(TargetClusterRefSchema, { kubeconfigSecretRef: "secrets/x" });
      assert.deepStrictEqual(targetCluster(machineIn(unnamed)), DEFAULT_CLUSTER);
    });
  },
);
