import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../lib/model/errors.ts";
import {
  type Machine,
  MachineSchema,
  MachineStatus_EffectiveState as EffectiveState,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  decodePageToken,
  encodePageToken,
  type Filter,
  parseMachineFilter,
  parseOperationFilter,
  resolvePageSize,
} from "../lib/store/query.ts";
import { SANITIZE } from "./helpers.ts";

function op(
  operationId: string,
  machineId: string,
  type: OperationType,
  phase: OperationPhase,
): Operation {
  return create(OperationSchema, { operationId, machineId, type, phase });
}

const OPERATIONS: Operation[] = [
  op("op-1", "machine-1", OperationType.REIMAGE, OperationPhase.RUNNING),
  op("op-2", "machine-1", OperationType.REBOOT, OperationPhase.SUCCEEDED),
  op("op-3", "machine-2", OperationType.REIMAGE, OperationPhase.FAILED),
  op("op-4", "machine-2", OperationType.ENTER_MAINTENANCE, OperationPhase.RUNNING),
  op("op-5", "machine-3", OperationType.EXIT_MAINTENANCE, OperationPhase.PENDING),
];

function machine(
  machineId: string,
  phase: MachinePhase,
  effectiveState: EffectiveState,
  labels: Record<string, string> = {},
): Machine {
  return create(MachineSchema, { machineId, labels, status: { phase, effectiveState } });
}

const MACHINES: Machine[] = [
  machine("machine-1", MachinePhase.FACTORY_READY, EffectiveState.NEW, { role: "worker" }),
  machine("machine-2", MachinePhase.MAINTENANCE, EffectiveState.MAINTENANCE_IDLE, {
    role: "worker",
    rack: "rack 1",
  }),
  machine("machine-3", MachinePhase.MAINTENANCE, EffectiveState.BUSY, { role: "control" }),
  machine("machine-4", MachinePhase.READY, EffectiveState.IDLE, { rack: "rack 2" }),
  create(MachineSchema, { machineId: "machine-5" }),
];

/** The inspectable part of a filter plus the ids it selects from `items`. */
function outcome<T extends { operationId: string } | { machineId: string }>(
  filter: Filter<T>,
  items: T[],
): { canonical: string; machineId: string | undefined; ids: string[] } {
  return {
    canonical: filter.canonical,
    machineId: filter.machineId,
    ids: items.filter((item) => filter.matches(item)).map((item) =>
      "operationId" in item ? item.operationId : item.machineId
    ),
  };
}

Deno.test("parseOperationFilter() accepts each key", SANITIZE, async (t) => {
  await t.step("machine_id", () => {
    assert.deepStrictEqual(outcome(parseOperationFilter("machine_id=machine-1"), OPERATIONS), {
      canonical: "machine_id=machine-1",
      machineId: "machine-1",
      ids: ["op-1", "op-2"],
    });
  });

  await t.step("phase", () => {
    assert.deepStrictEqual(outcome(parseOperationFilter("phase=RUNNING"), OPERATIONS), {
      canonical: "phase=RUNNING",
      machineId: undefined,
      ids: ["op-1", "op-4"],
    });
  });

  await t.step("type", () => {
    assert.deepStrictEqual(outcome(parseOperationFilter("type=REIMAGE"), OPERATIONS), {
      canonical: "type=REIMAGE",
      machineId: undefined,
      ids: ["op-1", "op-3"],
    });
  });

  await t.step("an empty filter matching everything", () => {
    assert.deepStrictEqual(outcome(parseOperationFilter("  "), OPERATIONS), {
      canonical: "",
      machineId: undefined,
      ids: ["op-1", "op-2", "op-3", "op-4", "op-5"],
    });
  });
});

Deno.test("parseOperationFilter() combines terms joined by AND", SANITIZE, async (t) => {
  await t.step("every term must match", () => {
    assert.deepStrictEqual(
      outcome(
        parseOperationFilter("machine_id=machine-2 AND phase=RUNNING AND type=ENTER_MAINTENANCE"),
        OPERATIONS,
      ),
      {
        canonical: "machine_id=machine-2 AND phase=RUNNING AND type=ENTER_MAINTENANCE",
        machineId: "machine-2",
        ids: ["op-4"],
      },
    );
  });

  await t.step("two different machine ids match nothing", () => {
    assert.deepStrictEqual(
      outcome(parseOperationFilter("machine_id=machine-1 AND machine_id=machine-2"), OPERATIONS)
        .ids,
      [],
    );
  });
});

Deno.test("parseOperationFilter() unquotes quoted values", SANITIZE, () => {
  assert.deepStrictEqual(
    outcome(parseOperationFilter('machine_id="machine-1" AND type="REBOOT"'), OPERATIONS),
    { canonical: "machine_id=machine-1 AND type=REBOOT", machineId: "machine-1", ids: ["op-2"] },
  );
});

Deno.test(
  "parseOperationFilter() gives the same canonical form in any term order",
  SANITIZE,
  () => {
    const canonicals = [
      "type=REIMAGE AND machine_id=machine-1 AND phase=RUNNING",
      "phase=RUNNING AND type=REIMAGE AND machine_id=machine-1",
      'machine_id=machine-1 AND phase="RUNNING" AND type=REIMAGE',
    ].map((text) => parseOperationFilter(text).canonical);
    assert.deepStrictEqual(canonicals, [
      "machine_id=machine-1 AND phase=RUNNING AND type=REIMAGE",
      "machine_id=machine-1 AND phase=RUNNING AND type=REIMAGE",
      "machine_id=machine-1 AND phase=RUNNING AND type=REIMAGE",
    ]);
  },
);

Deno.test("parseMachineFilter() accepts each key", SANITIZE, async (t) => {
  await t.step("phase", () => {
    assert.deepStrictEqual(outcome(parseMachineFilter("phase=MAINTENANCE"), MACHINES), {
      canonical: "phase=MAINTENANCE",
      machineId: undefined,
      ids: ["machine-2", "machine-3"],
    });
  });

  await t.step("effective_state", () => {
    assert.deepStrictEqual(outcome(parseMachineFilter("effective_state=BUSY"), MACHINES), {
      canonical: "effective_state=BUSY",
      machineId: undefined,
      ids: ["machine-3"],
    });
  });

  await t.step("effective_state=MAINTENANCE as an alias of MAINTENANCE_IDLE", () => {
    assert.deepStrictEqual(
      [
        outcome(parseMachineFilter("effective_state=MAINTENANCE"), MACHINES).ids,
        outcome(parseMachineFilter("effective_state=MAINTENANCE_IDLE"), MACHINES).ids,
      ],
      [["machine-2"], ["machine-2"]],
    );
  });

  await t.step("label.<key>", () => {
    assert.deepStrictEqual(outcome(parseMachineFilter("label.role=worker"), MACHINES), {
      canonical: "label.role=worker",
      machineId: undefined,
      ids: ["machine-1", "machine-2"],
    });
  });

  await t.step("a quoted label value with a space", () => {
    assert.deepStrictEqual(outcome(parseMachineFilter('label.rack="rack 1"'), MACHINES), {
      canonical: "label.rack=rack 1",
      machineId: undefined,
      ids: ["machine-2"],
    });
  });

  await t.step("a label no machine has an own property for", () => {
    assert.deepStrictEqual(outcome(parseMachineFilter("label.constructor=x"), MACHINES).ids, []);
  });
});

Deno.test("parseMachineFilter() combines terms joined by AND", SANITIZE, () => {
  assert.deepStrictEqual(
    outcome(
      parseMachineFilter("label.role=worker AND phase=MAINTENANCE AND effective_state=MAINTENANCE"),
      MACHINES,
    ),
    {
      canonical: "effective_state=MAINTENANCE_IDLE AND label.role=worker AND phase=MAINTENANCE",
      machineId: undefined,
      ids: ["machine-2"],
    },
  );
});

Deno.test(
  "parseMachineFilter() gives the MAINTENANCE alias the canonical form of MAINTENANCE_IDLE",
  SANITIZE,
  () => {
    assert.equal(
      parseMachineFilter("effective_state=MAINTENANCE").canonical,
      parseMachineFilter("effective_state=MAINTENANCE_IDLE").canonical,
    );
  },
);

Deno.test("parseMachineFilter() gives the same canonical form in any term order", SANITIZE, () => {
  assert.deepStrictEqual(
    [
      parseMachineFilter("phase=READY AND label.rack=r1").canonical,
      parseMachineFilter('label.rack="r1" AND phase=READY').canonical,
    ],
    ["label.rack=r1 AND phase=READY", "label.rack=r1 AND phase=READY"],
  );
});

/** Asserts `fn` throws an INVALID_FILTER error with exactly `message`. */
function assertFilterError(fn: () => unknown, text: string, message: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError: ${error}`);
    assert.deepStrictEqual(
      { code: error.code, reason: error.reason, message: error.message, metadata: error.metadata },
      { code: "invalid_argument", reason: "INVALID_FILTER", message, metadata: { filter: text } },
    );
    return true;
  });
}

const OPERATION_EXAMPLE =
  "write terms like machine_id=machine-1 AND phase=RUNNING AND type=REIMAGE";
const MACHINE_EXAMPLE = "write terms like phase=MAINTENANCE AND label.role=worker";

Deno.test("parseOperationFilter() rejects an invalid filter with the fix", SANITIZE, async (t) => {
  const cases: { name: string; text: string; detail: string }[] = [
    {
      name: "unknown key",
      text: "state=RUNNING",
      detail: 'unknown field "state"; operations can be filtered by machine_id, phase and type',
    },
    {
      name: "bad phase",
      text: "phase=DONE",
      detail: 'phase "DONE" is not one of PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED',
    },
    {
      name: "lower-case phase",
      text: "machine_id=machine-1 AND phase=running",
      detail: 'phase "running" is not one of PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED',
    },
    {
      name: "unspecified phase",
      text: "phase=PHASE_UNSPECIFIED",
      detail:
        'phase "PHASE_UNSPECIFIED" is not one of PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED',
    },
    {
      name: "bad type",
      text: "type=RMA",
      detail: 'type "RMA" is not one of REBOOT, REIMAGE, ENTER_MAINTENANCE, EXIT_MAINTENANCE',
    },
    {
      name: "type named like an Object.prototype member",
      text: "type=constructor",
      detail:
        'type "constructor" is not one of REBOOT, REIMAGE, ENTER_MAINTENANCE, EXIT_MAINTENANCE',
    },
    {
      name: "phase named like an Object.prototype member",
      text: "phase=toString",
      detail: 'phase "toString" is not one of PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED',
    },
    {
      name: "missing =",
      text: "RUNNING",
      detail: `term "RUNNING" is not key=value; ${OPERATION_EXAMPLE}`,
    },
    {
      name: "missing = in a later term",
      text: "phase=RUNNING AND machine-1",
      detail: `term "machine-1" is not key=value; ${OPERATION_EXAMPLE}`,
    },
    {
      name: "empty value",
      text: "machine_id=",
      detail: `term "machine_id=" is not key=value; ${OPERATION_EXAMPLE}`,
    },
    {
      name: "empty quoted value",
      text: 'machine_id=""',
      detail: `term "machine_id=""" is not key=value; ${OPERATION_EXAMPLE}`,
    },
    {
      name: "empty key",
      text: "=RUNNING",
      detail: `term "=RUNNING" is not key=value; ${OPERATION_EXAMPLE}`,
    },
  ];
  for (const { name, text, detail } of cases) {
    await t.step(name, () => {
      assertFilterError(
        () => parseOperationFilter(text),
        text,
        `Cannot parse filter "${text}": ${detail}`,
      );
    });
  }
});

Deno.test("parseMachineFilter() rejects an invalid filter with the fix", SANITIZE, async (t) => {
  const cases: { name: string; text: string; detail: string }[] = [
    {
      name: "unknown key",
      text: "rack=r1",
      detail:
        'unknown field "rack"; machines can be filtered by phase, effective_state and label.<key>',
    },
    {
      name: "operation key",
      text: "machine_id=machine-1",
      detail:
        'unknown field "machine_id"; machines can be filtered by phase, effective_state and label.<key>',
    },
    {
      name: "label without a name",
      text: "label.=worker",
      detail:
        'unknown field "label."; machines can be filtered by phase, effective_state and label.<key>',
    },
    {
      name: "bad phase",
      text: "phase=RUNNING",
      detail: 'phase "RUNNING" is not one of FACTORY_READY, READY, MAINTENANCE',
    },
    {
      name: "bad effective_state",
      text: "effective_state=IDLE_MAINTENANCE",
      detail:
        'effective_state "IDLE_MAINTENANCE" is not one of NEW, IDLE, BUSY, MAINTENANCE_IDLE, ATTENTION, BLOCKED, MAINTENANCE',
    },
    {
      name: "effective_state named like an Object.prototype member",
      text: "effective_state=valueOf",
      detail:
        'effective_state "valueOf" is not one of NEW, IDLE, BUSY, MAINTENANCE_IDLE, ATTENTION, BLOCKED, MAINTENANCE',
    },
    {
      name: "missing =",
      text: "label.role",
      detail: `term "label.role" is not key=value; ${MACHINE_EXAMPLE}`,
    },
    {
      name: "empty value",
      text: "phase=READY AND label.role=",
      detail: `term "label.role=" is not key=value; ${MACHINE_EXAMPLE}`,
    },
  ];
  for (const { name, text, detail } of cases) {
    await t.step(name, () => {
      assertFilterError(
        () => parseMachineFilter(text),
        text,
        `Cannot parse filter "${text}": ${detail}`,
      );
    });
  }
});

Deno.test("resolvePageSize() applies the default and the cap", SANITIZE, () => {
  assert.deepStrictEqual([undefined, 0, 1, 250, 1000, 1001, 5000].map(resolvePageSize), [
    100,
    100,
    1,
    250,
    1000,
    1000,
    1000,
  ]);
});

Deno.test("resolvePageSize() rejects a negative or fractional size", SANITIZE, async (t) => {
  for (const size of [-1, -100, 2.5]) {
    await t.step(String(size), () => {
      assert.throws(() => resolvePageSize(size), (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError);
        assert.deepStrictEqual({ reason: error.reason, message: error.message }, {
          reason: "INVALID_ARGUMENT",
          message:
            `Cannot list with page_size ${size}: use 0 for the default (100) or a positive number up to 1000`,
        });
        return true;
      });
    });
  }
});

Deno.test("encodePageToken() round-trips through decodePageToken()", SANITIZE, async (t) => {
  const cursors = [
    { list: "operations", after: 42, filter: "machine_id=machine-1 AND phase=RUNNING" },
    { list: "machines", after: 1, filter: "" },
    { list: "machines", after: Number.MAX_SAFE_INTEGER, filter: 'label.owner=Zoë ~?>"' },
  ] as const;
  for (const cursor of cursors) {
    await t.step(`${cursor.list} after ${cursor.after}`, () => {
      const token = encodePageToken(cursor);
      assert.match(token, /^[A-Za-z0-9_-]+$/);
      assert.strictEqual(
        decodePageToken(token, { list: cursor.list, filter: cursor.filter }),
        cursor.after,
      );
    });
  }
});

Deno.test("decodePageToken() starts at 0 for an empty token", SANITIZE, () => {
  assert.strictEqual(decodePageToken("", { list: "operations", filter: "phase=RUNNING" }), 0);
});

/** Encodes any JSON value the way the server encodes tokens. */
function forge(value: unknown): string {
  return btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

/** Asserts `fn` throws an INVALID_PAGE_TOKEN error with exactly `message`. */
function assertTokenError(fn: () => unknown, token: string, message: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError: ${error}`);
    assert.deepStrictEqual(
      { code: error.code, reason: error.reason, message: error.message, metadata: error.metadata },
      {
        code: "invalid_argument",
        reason: "INVALID_PAGE_TOKEN",
        message,
        metadata: { pageToken: token },
      },
    );
    return true;
  });
}

Deno.test("decodePageToken() rejects a token the server did not issue", SANITIZE, async (t) => {
  const expected = { list: "operations", filter: "" } as const;
  const tokens: Record<string, string> = {
    "not base64": "not a token!",
    "base64 but not JSON": "abcd",
    "JSON but not an object": forge(123),
    "JSON null": forge(null),
    "another version": forge({ v: 2, l: "operations", a: 1, f: "" }),
    "negative position": forge({ v: 1, l: "operations", a: -1, f: "" }),
    "fractional position": forge({ v: 1, l: "operations", a: 1.5, f: "" }),
    "position as a string": forge({ v: 1, l: "operations", a: "1", f: "" }),
    "missing filter": forge({ v: 1, l: "operations", a: 1 }),
  };
  for (const [name, token] of Object.entries(tokens)) {
    await t.step(name, () => {
      assertTokenError(
        () => decodePageToken(token, expected),
        token,
        `Cannot use page_token "${token}": it is not a token this server issued; pass next_page_token unchanged`,
      );
    });
  }
});

Deno.test("decodePageToken() rejects a token issued for another list", SANITIZE, () => {
  const token = encodePageToken({ list: "machines", after: 3, filter: "" });
  assertTokenError(
    () => decodePageToken(token, { list: "operations", filter: "" }),
    token,
    `Cannot use page_token "${token}": it was issued for a list of machines, not operations`,
  );
});

Deno.test("decodePageToken() rejects a token issued for another filter", SANITIZE, () => {
  const token = encodePageToken({ list: "operations", after: 3, filter: "phase=RUNNING" });
  assertTokenError(
    () => decodePageToken(token, { list: "operations", filter: "phase=FAILED" }),
    token,
    `Cannot use page_token "${token}": it was issued for filter "phase=RUNNING"; repeat the request with the filter of the first page`,
  );
});
