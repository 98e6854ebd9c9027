/**
 * A start request is checked once, where it enters the domain (`validateStartRequest`); the store
 * is given only checked requests. These assertions were the store contract's while the store
 * checked shapes itself.
 */
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../lib/model/errors.ts";
import { Operation_OperationType as OperationType } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type StartOperationRequest, validateStartRequest } from "../lib/engine/start_request.ts";
import { LIMITS } from "../lib/store/limits.ts";
import { DEFAULT_IMAGE_REF } from "../lib/engine/plans.ts";
import { assertDomainError } from "./store_contract.ts";
import { importMachines, SANITIZE, testEngine } from "./helpers.ts";

function request(
  machineId: string,
  requestId: string,
  type = OperationType.ENTER_MAINTENANCE,
  imageRef?: string,
): StartOperationRequest {
  return { machineId, requestId, type, imageRef };
}

const BAD = [
  ["missing machine_id", request("", "r"), "MISSING_FIELD", /machine_id is required/],
  ["missing request_id", request("machine-1", ""), "MISSING_FIELD", /request_id is required/],
  [
    "unspecified type",
    request("machine-1", "r", OperationType.OPERATION_TYPE_UNSPECIFIED),
    "INVALID_ARGUMENT",
    /REBOOT, REIMAGE/,
  ],
  ["unknown type", request("machine-1", "r", 99 as OperationType), "INVALID_ARGUMENT", /type 99/],
] as const;

const OVER_LIMITS = [
  [
    "request_id too long",
    request("machine-1", "r".repeat(LIMITS.requestIdLength + 1)),
    "LIMIT_EXCEEDED",
    "request_id",
  ],
  [
    "image_ref too long",
    request("machine-1", "r", OperationType.REIMAGE, "i".repeat(LIMITS.imageRefLength + 1)),
    "LIMIT_EXCEEDED",
    "image_ref",
  ],
  ["missing machine_id", request("", "r"), "MISSING_FIELD", "machine_id"],
] as const;

Deno.test("validateStartRequest() refuses a request with a missing or unknown field", async (t) => {
  for (const [label, bad, reason, pattern] of BAD) {
    await t.step(label, () => {
      assertDomainError(() => validateStartRequest(bad), InvalidArgumentError, reason, pattern);
    });
  }
});

Deno.test("validateStartRequest() enforces LIMITS, naming the field", async (t) => {
  for (const [label, bad, reason, field] of OVER_LIMITS) {
    await t.step(label, () => {
      const error = assertDomainError(
        () => validateStartRequest(bad),
        InvalidArgumentError,
        reason,
      );
      assert.equal(error.metadata.field, field);
      if (reason === "LIMIT_EXCEEDED") assert.match(error.message, /the limit is \d+:/);
    });
  }
});

Deno.test("validateStartRequest() fills in the parameters the store records", () => {
  assert.deepEqual(
    validateStartRequest(request("machine-1", "r", OperationType.REIMAGE)).params,
    { image_ref: DEFAULT_IMAGE_REF },
  );
});

Deno.test(
  "Engine.startOperation() checks a request before the store sees it, and changes nothing",
  SANITIZE,
  async (t) => {
    await using engine = testEngine();
    importMachines(engine, 1);
    const reached: string[] = [];
    const createOperation = engine.store.createOperation.bind(engine.store);
    engine.store.createOperation = (checked) => {
      reached.push(checked.requestId);
      return createOperation(checked);
    };
    for (const [label, bad, reason, pattern] of BAD) {
      await t.step(label, () => {
        assertDomainError(() => engine.startOperation(bad), InvalidArgumentError, reason, pattern);
      });
    }
    for (const [label, bad, reason] of OVER_LIMITS) {
      await t.step(label, () => {
        assertDomainError(() => engine.startOperation(bad), InvalidArgumentError, reason);
      });
    }
    await t.step("the store saw none of them, and nothing changed", () => {
      assert.deepEqual(reached, []);
      assert.equal(engine.listOperations({}).items.length, 0);
      assert.equal(engine.getMachine("machine-1").status?.activeOperationId, "");
    });
  },
);
