import assert from "node:assert/strict";
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type Condition,
  ConditionSchema,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  type ConditionUpdate,
  effectiveState,
  type EffectiveStateInput,
  gateRefusal,
  getCondition,
  hasCondition,
  isActivePhase,
  isTerminalPhase,
  type MachineEffects,
  type OperationFailure,
  outcomeEffects,
  setCondition,
} from "../lib/model/lifecycle.ts";
import { SANITIZE } from "./helpers.ts";

const T1 = timestampFromDate(new Date("2025-01-01T00:00:00Z"));
const T2 = timestampFromDate(new Date("2025-01-01T00:05:00Z"));

function condition(update: ConditionUpdate, at = T1): Condition {
  return create(ConditionSchema, { ...update, lastTransitionTime: at });
}

const NEEDS_INTERVENTION: ConditionUpdate = {
  type: "NeedsIntervention",
  status: true,
  reason: "OperationFailed",
  message: "step repave-image: disk write failed",
};
const PROVISIONED: ConditionUpdate = {
  type: "Provisioned",
  status: true,
  reason: "ReimageComplete",
  message: "Machine successfully reimaged",
};

Deno.test("setCondition() appends a condition of a new type", SANITIZE, async (t) => {
  await t.step("to an empty list", () => {
    assert.deepStrictEqual(setCondition([], PROVISIONED, T1), [condition(PROVISIONED, T1)]);
  });

  await t.step("after the existing ones, keeping their order", () => {
    const existing = [condition(NEEDS_INTERVENTION, T1)];
    assert.deepStrictEqual(setCondition(existing, PROVISIONED, T2), [
      condition(NEEDS_INTERVENTION, T1),
      condition(PROVISIONED, T2),
    ]);
  });
});

Deno.test(
  "setCondition() updates a condition of an existing type in place",
  SANITIZE,
  async (t) => {
    const existing = [condition(NEEDS_INTERVENTION, T1), condition(PROVISIONED, T1)];

    await t.step("keeping the count and the position", () => {
      const next = setCondition(existing, { ...NEEDS_INTERVENTION, status: false }, T2);
      assert.deepStrictEqual(next.map((c) => c.type), ["NeedsIntervention", "Provisioned"]);
      assert.strictEqual(next[1], existing[1]);
    });

    await t.step("keeping last_transition_time when the status is unchanged", () => {
      const next = setCondition(existing, {
        ...NEEDS_INTERVENTION,
        reason: "OperationFailed",
        message: "step join-cluster: token expired",
      }, T2);
      assert.deepStrictEqual(
        next[0],
        condition({
          ...NEEDS_INTERVENTION,
          message: "step join-cluster: token expired",
        }, T1),
      );
    });

    await t.step("changing last_transition_time when the status flips", () => {
      const next = setCondition(existing, {
        type: "NeedsIntervention",
        status: false,
        reason: "OperationSucceeded",
        message: "",
      }, T2);
      assert.deepStrictEqual(
        next[0],
        condition({
          type: "NeedsIntervention",
          status: false,
          reason: "OperationSucceeded",
          message: "",
        }, T2),
      );
    });

    await t.step("always replacing reason and message", () => {
      const next = setCondition(existing, {
        ...PROVISIONED,
        reason: "ReimageRepeated",
        message: "Machine reimaged again",
      }, T2);
      assert.deepStrictEqual(
        next[1],
        condition({
          ...PROVISIONED,
          reason: "ReimageRepeated",
          message: "Machine reimaged again",
        }, T1),
      );
    });
  },
);

Deno.test("setCondition() leaves its input unchanged", SANITIZE, () => {
  const input = [condition(NEEDS_INTERVENTION, T1), condition(PROVISIONED, T1)];
  const before = input.map((c) => clone(ConditionSchema, c));
  const next = setCondition(input, { ...NEEDS_INTERVENTION, status: false }, T2);
  setCondition(input, { ...PROVISIONED, type: "Reachable" }, T2);
  assert.notStrictEqual(next, input);
  assert.deepStrictEqual(input, before);
});

Deno.test("getCondition() returns the condition of a type", SANITIZE, async (t) => {
  const conditions = [condition(NEEDS_INTERVENTION), condition(PROVISIONED)];

  await t.step("when present", () => {
    assert.strictEqual(getCondition(conditions, "Provisioned"), conditions[1]);
  });

  await t.step("or undefined when missing", () => {
    assert.strictEqual(getCondition(conditions, "RMA"), undefined);
  });
});

Deno.test("hasCondition() matches type and status", SANITIZE, async (t) => {
  const conditions = [
    condition(NEEDS_INTERVENTION),
    condition({ ...PROVISIONED, status: false }),
  ];

  await t.step("with status true by default", () => {
    assert.strictEqual(hasCondition(conditions, "NeedsIntervention"), true);
    assert.strictEqual(hasCondition(conditions, "Provisioned"), false);
  });

  await t.step("with an explicit status", () => {
    assert.strictEqual(hasCondition(conditions, "NeedsIntervention", false), false);
    assert.strictEqual(hasCondition(conditions, "Provisioned", false), true);
  });

  await t.step("never for a missing condition", () => {
    assert.strictEqual(hasCondition(conditions, "RMA", true), false);
    assert.strictEqual(hasCondition(conditions, "RMA", false), false);
  });
});

function flag(type: ConditionUpdate["type"], status = true): Condition {
  return condition({ type, status, reason: "Test", message: "" });
}

Deno.test("effectiveState() follows the precedence of reference 3.3", SANITIZE, async (t) => {
  const cases: { name: string; input: EffectiveStateInput; want: EffectiveState }[] = [
    {
      name: "Retired beats everything",
      input: {
        phase: MachinePhase.MAINTENANCE,
        conditions: [flag("NeedsIntervention"), flag("Retired")],
        activeOperationId: "op-1",
      },
      want: EffectiveState.BLOCKED,
    },
    {
      name: "RMA is BLOCKED",
      input: { phase: MachinePhase.READY, conditions: [flag("RMA")], activeOperationId: "" },
      want: EffectiveState.BLOCKED,
    },
    {
      name: "Retired and RMA false do not block",
      input: {
        phase: MachinePhase.READY,
        conditions: [flag("Retired", false), flag("RMA", false)],
        activeOperationId: "",
      },
      want: EffectiveState.IDLE,
    },
    {
      name: "NeedsIntervention beats an active operation",
      input: {
        phase: MachinePhase.MAINTENANCE,
        conditions: [flag("NeedsIntervention")],
        activeOperationId: "op-1",
      },
      want: EffectiveState.ATTENTION,
    },
    {
      name: "NeedsIntervention false does not need attention",
      input: {
        phase: MachinePhase.READY,
        conditions: [flag("NeedsIntervention", false)],
        activeOperationId: "",
      },
      want: EffectiveState.IDLE,
    },
    {
      name: "an active operation is BUSY",
      input: { phase: MachinePhase.READY, conditions: [], activeOperationId: "op-1" },
      want: EffectiveState.BUSY,
    },
    {
      name: "BUSY beats MAINTENANCE",
      input: { phase: MachinePhase.MAINTENANCE, conditions: [], activeOperationId: "op-1" },
      want: EffectiveState.BUSY,
    },
    {
      name: "BUSY beats FACTORY_READY",
      input: { phase: MachinePhase.FACTORY_READY, conditions: [], activeOperationId: "op-1" },
      want: EffectiveState.BUSY,
    },
    {
      name: "MAINTENANCE without an active operation is MAINTENANCE_IDLE",
      input: { phase: MachinePhase.MAINTENANCE, conditions: [], activeOperationId: "" },
      want: EffectiveState.MAINTENANCE_IDLE,
    },
    {
      name: "FACTORY_READY is NEW",
      input: { phase: MachinePhase.FACTORY_READY, conditions: [], activeOperationId: "" },
      want: EffectiveState.NEW,
    },
    {
      name: "READY is IDLE",
      input: { phase: MachinePhase.READY, conditions: [], activeOperationId: "" },
      want: EffectiveState.IDLE,
    },
    {
      name: "PHASE_UNSPECIFIED is IDLE",
      input: { phase: MachinePhase.PHASE_UNSPECIFIED, conditions: [], activeOperationId: "" },
      want: EffectiveState.IDLE,
    },
    {
      name: "OperationCanceled does not count",
      input: {
        phase: MachinePhase.READY,
        conditions: [flag("OperationCanceled")],
        activeOperationId: "",
      },
      want: EffectiveState.IDLE,
    },
  ];
  for (const { name, input, want } of cases) {
    await t.step(name, () => {
      assert.strictEqual(EffectiveState[effectiveState(input)], EffectiveState[want]);
    });
  }
});

Deno.test(
  "effectiveState() steps down BLOCKED > ATTENTION > BUSY > MAINTENANCE_IDLE",
  SANITIZE,
  () => {
    let machine: EffectiveStateInput = {
      phase: MachinePhase.MAINTENANCE,
      conditions: [flag("Retired"), flag("NeedsIntervention")],
      activeOperationId: "op-1",
    };
    const seen = [EffectiveState[effectiveState(machine)]];
    machine = { ...machine, conditions: setCondition(machine.conditions, retiredOff(), T2) };
    seen.push(EffectiveState[effectiveState(machine)]);
    machine = {
      ...machine,
      conditions: setCondition(machine.conditions, {
        type: "NeedsIntervention",
        status: false,
        reason: "OperationSucceeded",
        message: "",
      }, T2),
    };
    seen.push(EffectiveState[effectiveState(machine)]);
    machine = { ...machine, activeOperationId: "" };
    seen.push(EffectiveState[effectiveState(machine)]);
    machine = { ...machine, phase: MachinePhase.FACTORY_READY };
    seen.push(EffectiveState[effectiveState(machine)]);
    machine = { ...machine, phase: MachinePhase.READY };
    seen.push(EffectiveState[effectiveState(machine)]);
    assert.deepStrictEqual(seen, [
      "BLOCKED",
      "ATTENTION",
      "BUSY",
      "MAINTENANCE_IDLE",
      "NEW",
      "IDLE",
    ]);
  },
);

function retiredOff(): ConditionUpdate {
  return { type: "Retired", status: false, reason: "Reinstated", message: "" };
}

const ALL_OPERATION_PHASES = [
  OperationPhase.PHASE_UNSPECIFIED,
  OperationPhase.PENDING,
  OperationPhase.RUNNING,
  OperationPhase.SUCCEEDED,
  OperationPhase.FAILED,
  OperationPhase.CANCELED,
];

Deno.test("isTerminalPhase() is true for SUCCEEDED, FAILED and CANCELED only", SANITIZE, () => {
  assert.deepStrictEqual(
    Object.fromEntries(ALL_OPERATION_PHASES.map((p) => [OperationPhase[p], isTerminalPhase(p)])),
    {
      PHASE_UNSPECIFIED: false,
      PENDING: false,
      RUNNING: false,
      SUCCEEDED: true,
      FAILED: true,
      CANCELED: true,
    },
  );
});

Deno.test("isActivePhase() is true for PENDING and RUNNING only", SANITIZE, () => {
  assert.deepStrictEqual(
    Object.fromEntries(ALL_OPERATION_PHASES.map((p) => [OperationPhase[p], isActivePhase(p)])),
    {
      PHASE_UNSPECIFIED: false,
      PENDING: true,
      RUNNING: true,
      SUCCEEDED: false,
      FAILED: false,
      CANCELED: false,
    },
  );
});

Deno.test("gateRefusal() allows each operation type only in its phases", SANITIZE, async (t) => {
  const phases = [
    MachinePhase.PHASE_UNSPECIFIED,
    MachinePhase.FACTORY_READY,
    MachinePhase.READY,
    MachinePhase.MAINTENANCE,
  ];
  const refusals = (type: OperationType) =>
    Object.fromEntries(
      phases.map((phase) => [MachinePhase[phase], gateRefusal(type, { machineId: "m-1", phase })]),
    );

  await t.step("ENTER_MAINTENANCE in every phase", () => {
    assert.deepStrictEqual(refusals(OperationType.ENTER_MAINTENANCE), {
      PHASE_UNSPECIFIED: undefined,
      FACTORY_READY: undefined,
      READY: undefined,
      MAINTENANCE: undefined,
    });
  });

  await t.step("REBOOT in READY and MAINTENANCE", () => {
    assert.deepStrictEqual(refusals(OperationType.REBOOT), {
      PHASE_UNSPECIFIED:
        'machine "m-1" is in phase PHASE_UNSPECIFIED; reboot requires READY or MAINTENANCE',
      FACTORY_READY:
        'machine "m-1" is in phase FACTORY_READY; reboot requires READY or MAINTENANCE',
      READY: undefined,
      MAINTENANCE: undefined,
    });
  });

  await t.step("REIMAGE in MAINTENANCE only", () => {
    assert.deepStrictEqual(refusals(OperationType.REIMAGE), {
      PHASE_UNSPECIFIED:
        'machine "m-1" is in phase PHASE_UNSPECIFIED; reimage requires MAINTENANCE',
      FACTORY_READY: 'machine "m-1" is in phase FACTORY_READY; reimage requires MAINTENANCE',
      READY: 'machine "m-1" is in phase READY; reimage requires MAINTENANCE',
      MAINTENANCE: undefined,
    });
  });

  await t.step("EXIT_MAINTENANCE in MAINTENANCE only", () => {
    assert.deepStrictEqual(refusals(OperationType.EXIT_MAINTENANCE), {
      PHASE_UNSPECIFIED:
        'machine "m-1" is in phase PHASE_UNSPECIFIED; exit-maintenance requires MAINTENANCE',
      FACTORY_READY:
        'machine "m-1" is in phase FACTORY_READY; exit-maintenance requires MAINTENANCE',
      READY: 'machine "m-1" is in phase READY; exit-maintenance requires MAINTENANCE',
      MAINTENANCE: undefined,
    });
  });
});

Deno.test(
  "gateRefusal() names the machine, its phase and the command to run first",
  SANITIZE,
  () => {
    assert.strictEqual(
      gateRefusal(OperationType.REIMAGE, {
        machineId: "machine-2",
        phase: MachinePhase.FACTORY_READY,
      }),
      'machine "machine-2" is in phase FACTORY_READY; reimage requires MAINTENANCE',
    );
  },
);

const SUCCESS_CLEARS: ConditionUpdate[] = [
  { type: "NeedsIntervention", status: false, reason: "OperationSucceeded", message: "" },
  { type: "OperationCanceled", status: false, reason: "OperationSucceeded", message: "" },
];

Deno.test(
  "outcomeEffects() of a success clears failure flags and applies the type",
  SANITIZE,
  async (t) => {
    const success = { phase: OperationPhase.SUCCEEDED } as const;

    await t.step("ENTER_MAINTENANCE sets phase MAINTENANCE", () => {
      assert.deepStrictEqual(
        outcomeEffects(OperationType.ENTER_MAINTENANCE, success),
        {
          phase: MachinePhase.MAINTENANCE,
          conditions: SUCCESS_CLEARS,
          seen: false,
        } satisfies MachineEffects,
      );
    });

    await t.step("EXIT_MAINTENANCE sets phase READY", () => {
      assert.deepStrictEqual(
        outcomeEffects(OperationType.EXIT_MAINTENANCE, success),
        {
          phase: MachinePhase.READY,
          conditions: SUCCESS_CLEARS,
          seen: false,
        } satisfies MachineEffects,
      );
    });

    await t.step("REBOOT keeps the phase and marks the machine reachable and seen", () => {
      assert.deepStrictEqual(
        outcomeEffects(OperationType.REBOOT, success),
        {
          conditions: [
            ...SUCCESS_CLEARS,
            {
              type: "Reachable",
              status: true,
              reason: "RebootComplete",
              message: "Machine came back online after reboot",
            },
          ],
          seen: true,
        } satisfies MachineEffects,
      );
    });

    await t.step(
      "REIMAGE keeps the phase and sets Provisioned, InCustomerCluster, Reachable",
      () => {
        assert.deepStrictEqual(
          outcomeEffects(OperationType.REIMAGE, success),
          {
            conditions: [
              ...SUCCESS_CLEARS,
              {
                type: "Provisioned",
                status: true,
                reason: "ReimageComplete",
                message: "Machine successfully reimaged",
              },
              {
                type: "InCustomerCluster",
                status: true,
                reason: "JoinVerified",
                message: "Node joined and verified in cluster",
              },
              {
                type: "Reachable",
                status: true,
                reason: "ReimageComplete",
                message: "Machine booted the new image",
              },
            ],
            seen: true,
          } satisfies MachineEffects,
        );
      },
    );
  },
);

const RUNNABLE_TYPES = [
  OperationType.REBOOT,
  OperationType.REIMAGE,
  OperationType.ENTER_MAINTENANCE,
  OperationType.EXIT_MAINTENANCE,
];

Deno.test(
  "outcomeEffects() of a failure needs intervention and keeps the phase",
  SANITIZE,
  async (t) => {
    const error: OperationFailure = {
      code: "EXECUTION_FAILED",
      message: "step repave-image failed after 2 attempts: disk write failed",
      retryable: true,
      details: { step: "repave-image" },
    };
    for (const type of RUNNABLE_TYPES) {
      await t.step(OperationType[type], () => {
        assert.deepStrictEqual(
          outcomeEffects(type, { phase: OperationPhase.FAILED, error }),
          {
            conditions: [{
              type: "NeedsIntervention",
              status: true,
              reason: "OperationFailed",
              message: "step repave-image failed after 2 attempts: disk write failed",
            }],
            seen: false,
          } satisfies MachineEffects,
        );
      });
    }
  },
);

Deno.test(
  "outcomeEffects() of a cancellation records its cause and keeps the phase",
  SANITIZE,
  async (t) => {
    for (const type of RUNNABLE_TYPES) {
      await t.step(`${OperationType[type]} canceled by the user`, () => {
        assert.deepStrictEqual(
          outcomeEffects(type, { phase: OperationPhase.CANCELED, cause: "user" }),
          {
            conditions: [{
              type: "OperationCanceled",
              status: true,
              reason: "UserCanceled",
              message: "Operation was canceled by user",
            }],
            seen: false,
          } satisfies MachineEffects,
        );
      });

      await t.step(`${OperationType[type]} canceled by shutdown`, () => {
        assert.deepStrictEqual(
          outcomeEffects(type, { phase: OperationPhase.CANCELED, cause: "shutdown" }),
          {
            conditions: [{
              type: "OperationCanceled",
              status: true,
              reason: "ServerShutdown",
              message: "Operation was canceled because the server shut down",
            }],
            seen: false,
          } satisfies MachineEffects,
        );
      });
    }
  },
);
