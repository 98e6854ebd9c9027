/**
 * A bad-input matrix over every RPC against a real server (`startServer()` on 127.0.0.1 over a
 * zero-delay engine): missing and empty fields, unspecified and out-of-range enums, oversized
 * strings and label maps, unknown filters, garbage page tokens, a request id reused with other
 * content, and raw bytes that are not a valid request message (sent with a generic grpc-js
 * client). Every case asserts its documented status code (and reason when the server owns the
 * error); afterwards the server still answers and the store is exactly what it was before the
 * matrix (every page of ListMachines and ListOperations, compared with `assert.deepEqual`).
 *
 * Permissions: `--allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import type { Engine } from "../lib/engine/mod.ts";
import {
  type Machine,
  MachineSchema,
  MachineService,
  MachineStatus_Phase as MachinePhase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { errorInfoOf } from "../lib/grpc/error_details.ts";
import { type BmdemoServer, startServer } from "../lib/grpc/server.ts";
import { connectClient, ConnectError, errorInfo } from "../lib/client/mod.ts";
import { enterMaintenance, importMachines, runOperation, SANITIZE, testEngine } from "./helpers.ts";

const { INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION } = grpc.status;

/** Every page of both lists, read through the engine. */
function snapshot(engine: Engine): { machines: Machine[]; operations: Operation[] } {
  const machines: Machine[] = [];
  const operations: Operation[] = [];
  let token = "";
  do {
    const page = engine.listMachines({ pageSize: 2, pageToken: token, filter: "" });
    machines.push(...page.items);
    token = page.nextPageToken;
  } while (token !== "");
  do {
    const page = engine.listOperations({ pageSize: 2, pageToken: token, filter: "" });
    operations.push(...page.items);
    token = page.nextPageToken;
  } while (token !== "");
  return { machines, operations };
}

/** What a call ended with: OK, or a gRPC status with its ErrorInfo reason. */
interface Outcome {
  code: grpc.status;
  reason?: string;
  details?: string;
}

async function outcomeOf(call: () => Promise<unknown>): Promise<Outcome> {
  try {
    await call();
    return { code: grpc.status.OK };
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    return {
      code: error.code as number,
      reason: errorInfo(error)?.reason,
      details: error.rawMessage,
    };
  }
}

async function readAll(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) { /* read to the end */ }
}

/** One row of the matrix. */
interface Case {
  name: string;
  call: () => Promise<unknown>;
  code: grpc.status;
  /** The ErrorInfo reason; `null` asserts that there is none (an error grpc-js produced). */
  reason: string | null;
}

const UNARY_METHODS = [
  ...MachineService.methods.map((m) => `/${MachineService.typeName}/${m.name}`),
  ...OperationService.methods.filter((m) => m.methodKind === "unary").map((m) =>
    `/${OperationService.typeName}/${m.name}`
  ),
];
const STREAM_METHODS = OperationService.methods.filter((m) => m.methodKind === "server_streaming")
  .map((m) => `/${OperationService.typeName}/${m.name}`);

/**
 * Payloads no protobuf decoder accepts: a length-delimited field longer than the message, a
 * varint that never ends, wire types 6 and 7 (undefined), an END_GROUP with no group, and a
 * string field holding invalid UTF-8.
 */
const MALFORMED: Record<string, number[]> = {
  "truncated length-delimited field": [0x0a, 0xff, 0xff, 0x03, 0x61],
  "unterminated varint": [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
  "wire type 7": [0x0f, 0x01, 0x02],
  "wire type 6": [0x0e, 0x01],
  "END_GROUP without a group": [0x0c],
};

/** Deterministic pseudo-random bytes (mulberry32), so a failure is reproducible. */
function randomBytes(seed: number, length: number): Uint8Array {
  let state = seed >>> 0;
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    bytes[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
  }
  return bytes;
}

function rawUnary(channel: grpc.Client, path: string, payload: Uint8Array): Promise<Outcome> {
  return new Promise((resolve) => {
    channel.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(payload),
      (error) =>
        resolve(
          error
            ? { code: error.code, details: error.details, reason: errorInfoOf(error)?.reason }
            : { code: 0 },
        ),
    );
  });
}

function rawStream(channel: grpc.Client, path: string, payload: Uint8Array): Promise<Outcome> {
  return new Promise((resolve) => {
    const call = channel.makeServerStreamRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(payload),
    );
    call.on("data", () => {});
    call.on("error", () => {});
    call.on("status", (status) =>
      resolve({
        code: status.code,
        details: status.details,
        reason: errorInfoOf({ metadata: status.metadata })?.reason,
      }));
  });
}

/** Sets up machines and finished operations; returns the ids the matrix refers to. */
async function setUp(server: BmdemoServer) {
  const engine = server.engine;
  importMachines(engine, 4);
  await enterMaintenance(engine, "machine-1");
  const reimage = await runOperation(engine, {
    machineId: "machine-1",
    type: OperationType.REIMAGE,
    requestId: "reimage-1",
    imageRef: "ubuntu-2404",
  });
  assert.equal(reimage.phase, OperationPhase.SUCCEEDED);
  const reboot = await runOperation(engine, {
    machineId: "machine-1",
    type: OperationType.REBOOT,
    requestId: "reboot-1",
  });
  assert.equal(reboot.phase, OperationPhase.SUCCEEDED);
  return { finished: reimage.operationId };
}

Deno.test(
  "bad input on every RPC gets its documented status and changes nothing",
  SANITIZE,
  async (t) => {
    await using server = await startServer({ port: 0, engine: testEngine() });
    const { finished } = await setUp(server);
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);
    const before = snapshot(server.engine);
    assert.equal(before.machines.length, 4);
    assert.equal(before.operations.length, 3);

    const big = "x".repeat(5 * 1024 * 1024);
    const long = "m".repeat(200);
    const mib2 = "s".repeat(2 * 1024 * 1024);
    const macAddresses = Array.from({ length: 10_000 }, () => "02:00:00:00:00:01");
    const manyLabels = Object.fromEntries(
      Array.from({ length: 10_000 }, (_, i) => [`k${i}`, "v"]),
    );
    const op = (name: string, fn: (id: string, rid: string) => Promise<unknown>): Case[] => [
      {
        name: `${name}: empty machine_id`,
        call: () => fn("", "r-new"),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: `${name}: empty request_id`,
        call: () => fn("machine-2", ""),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: `${name}: 200-char machine_id`,
        call: () => fn(long, "r-new"),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: `${name}: 200-char request_id`,
        call: () => fn("machine-2", long),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: `${name}: machine_id with a space`,
        call: () => fn("machine 2", "r-new"),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FORMAT",
      },
      {
        name: `${name}: unknown machine`,
        call: () => fn("machine-404", "r-new"),
        code: NOT_FOUND,
        reason: "MACHINE_NOT_FOUND",
      },
      {
        name: `${name}: 5 MiB request_id`,
        call: () => fn("machine-2", big),
        code: RESOURCE_EXHAUSTED,
        reason: null,
      },
    ];

    const cases: Case[] = [
      // ----- RegisterMachine
      {
        name: "RegisterMachine: no machine",
        call: () => machines.registerMachine({}),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "RegisterMachine: status.phase 99",
        call: () =>
          machines.registerMachine({
            machine: { machineId: "new-1", status: { phase: 99 as MachinePhase } },
          }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_ARGUMENT",
      },
      {
        name: "RegisterMachine: status.phase MAINTENANCE",
        call: () =>
          machines.registerMachine({
            machine: { machineId: "new-1", status: { phase: MachinePhase.MAINTENANCE } },
          }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_ARGUMENT",
      },
      {
        name: "RegisterMachine: 200-char machine_id",
        call: () => machines.registerMachine({ machine: { machineId: long } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: machine_id with a slash",
        call: () => machines.registerMachine({ machine: { machineId: "a/b" } }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FORMAT",
      },
      {
        name: "RegisterMachine: 10,000 labels (new machine)",
        call: () =>
          machines.registerMachine({ machine: { machineId: "new-1", labels: manyLabels } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: 10,000 labels (existing machine)",
        call: () =>
          machines.registerMachine({ machine: { machineId: "machine-2", labels: manyLabels } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: empty label key",
        call: () =>
          machines.registerMachine({ machine: { machineId: "new-1", labels: { "": "v" } } }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FORMAT",
      },
      {
        name: "RegisterMachine: label key with a space",
        call: () =>
          machines.registerMachine({ machine: { machineId: "new-1", labels: { "a b": "v" } } }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FORMAT",
      },
      {
        name: "RegisterMachine: 300-char label value",
        call: () =>
          machines.registerMachine({
            machine: { machineId: "new-1", labels: { role: "v".repeat(300) } },
          }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: 2 MiB serial (new machine)",
        call: () =>
          machines.registerMachine({ machine: { machineId: "new-1", spec: { serial: mib2 } } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: 2 MiB serial (existing machine)",
        call: () =>
          machines.registerMachine({ machine: { machineId: "machine-2", spec: { serial: mib2 } } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: 10,000 MAC addresses",
        call: () =>
          machines.registerMachine({ machine: { machineId: "new-1", spec: { macAddresses } } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "RegisterMachine: 5 MiB serial",
        call: () =>
          machines.registerMachine({ machine: { machineId: "new-1", spec: { serial: big } } }),
        code: RESOURCE_EXHAUSTED,
        reason: null,
      },
      // ----- GetMachine
      {
        name: "GetMachine: empty machine_id",
        call: () => machines.getMachine({}),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "GetMachine: unknown machine",
        call: () => machines.getMachine({ machineId: "machine-404" }),
        code: NOT_FOUND,
        reason: "MACHINE_NOT_FOUND",
      },
      {
        name: "GetMachine: 200-char machine_id",
        call: () => machines.getMachine({ machineId: long }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "GetMachine: 5 MiB machine_id",
        call: () => machines.getMachine({ machineId: big }),
        code: RESOURCE_EXHAUSTED,
        reason: null,
      },
      // ----- ListMachines
      {
        name: "ListMachines: unknown filter term",
        call: () => machines.listMachines({ filter: "colour=red" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "ListMachines: phase=99",
        call: () => machines.listMachines({ filter: "phase=99" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "ListMachines: phase=PHASE_UNSPECIFIED",
        call: () => machines.listMachines({ filter: "phase=PHASE_UNSPECIFIED" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "ListMachines: 2,000-char filter",
        call: () => machines.listMachines({ filter: `label.a=${"b".repeat(2000)}` }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "ListMachines: garbage page token",
        call: () => machines.listMachines({ pageToken: "not-a-token!!" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_PAGE_TOKEN",
      },
      {
        name: "ListMachines: 20,000-char page token",
        call: () => machines.listMachines({ pageToken: "t".repeat(20_000) }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "ListMachines: negative page size",
        call: () => machines.listMachines({ pageSize: -1 }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_ARGUMENT",
      },
      // ----- UpdateMachine
      {
        name: "UpdateMachine: no machine",
        call: () => machines.updateMachine({}),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "UpdateMachine: empty machine_id",
        call: () => machines.updateMachine({ machine: { labels: { a: "b" } } }),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "UpdateMachine: unknown machine",
        call: () => machines.updateMachine({ machine: { machineId: "machine-404" } }),
        code: NOT_FOUND,
        reason: "MACHINE_NOT_FOUND",
      },
      {
        name: "UpdateMachine: 200-char machine_id",
        call: () => machines.updateMachine({ machine: { machineId: long } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "UpdateMachine: 2 MiB serial",
        call: () =>
          machines.updateMachine({ machine: { machineId: "machine-2", spec: { serial: mib2 } } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "UpdateMachine: 2 MiB rack",
        call: () =>
          machines.updateMachine({ machine: { machineId: "machine-2", spec: { rack: mib2 } } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "UpdateMachine: 10,000 labels",
        call: () =>
          machines.updateMachine({ machine: { machineId: "machine-2", labels: manyLabels } }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      // ----- operations
      ...op(
        "RebootMachine",
        (machineId, requestId) => machines.rebootMachine({ machineId, requestId }),
      ),
      ...op(
        "ReimageMachine",
        (machineId, requestId) => machines.reimageMachine({ machineId, requestId }),
      ),
      ...op(
        "EnterMaintenance",
        (machineId, requestId) => machines.enterMaintenance({ machineId, requestId }),
      ),
      ...op(
        "ExitMaintenance",
        (machineId, requestId) => machines.exitMaintenance({ machineId, requestId }),
      ),
      {
        name: "ReimageMachine: 300-char image_ref",
        call: () =>
          machines.reimageMachine({
            machineId: "machine-1",
            requestId: "r-new",
            imageRef: "i".repeat(300),
          }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "ReimageMachine: request_id reused with another image",
        call: () =>
          machines.reimageMachine({
            machineId: "machine-1",
            requestId: "reimage-1",
            imageRef: "other",
          }),
        code: INVALID_ARGUMENT,
        reason: "REQUEST_ID_REUSED",
      },
      {
        name: "ReimageMachine: request_id reused with the default image",
        call: () => machines.reimageMachine({ machineId: "machine-1", requestId: "reimage-1" }),
        code: INVALID_ARGUMENT,
        reason: "REQUEST_ID_REUSED",
      },
      {
        name: "RebootMachine: request_id of a REIMAGE",
        call: () => machines.rebootMachine({ machineId: "machine-1", requestId: "reimage-1" }),
        code: INVALID_ARGUMENT,
        reason: "REQUEST_ID_REUSED",
      },
      {
        name: "RebootMachine: request_id reused with force",
        call: () =>
          machines.rebootMachine({ machineId: "machine-1", requestId: "reboot-1", force: true }),
        code: INVALID_ARGUMENT,
        reason: "REQUEST_ID_REUSED",
      },
      {
        name: "ReimageMachine: FACTORY_READY machine",
        call: () => machines.reimageMachine({ machineId: "machine-2", requestId: "r-new" }),
        code: FAILED_PRECONDITION,
        reason: "PHASE_PRECONDITION",
      },
      // ----- CancelOperation
      {
        name: "CancelOperation: empty operation_id",
        call: () => machines.cancelOperation({}),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "CancelOperation: unknown operation",
        call: () => machines.cancelOperation({ operationId: "op-404" }),
        code: NOT_FOUND,
        reason: "OPERATION_NOT_FOUND",
      },
      {
        name: "CancelOperation: 200-char operation_id",
        call: () => machines.cancelOperation({ operationId: long }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "CancelOperation: finished operation",
        call: () => machines.cancelOperation({ operationId: finished }),
        code: FAILED_PRECONDITION,
        reason: "OPERATION_FINISHED",
      },
      // ----- GetOperation, ListOperations
      {
        name: "GetOperation: empty operation_id",
        call: () => operations.getOperation({}),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "GetOperation: unknown operation",
        call: () => operations.getOperation({ operationId: "op-404" }),
        code: NOT_FOUND,
        reason: "OPERATION_NOT_FOUND",
      },
      {
        name: "GetOperation: 200-char operation_id",
        call: () => operations.getOperation({ operationId: long }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "GetOperation: 5 MiB operation_id",
        call: () => operations.getOperation({ operationId: big }),
        code: RESOURCE_EXHAUSTED,
        reason: null,
      },
      {
        name: "ListOperations: unknown filter term",
        call: () => operations.listOperations({ filter: "owner=me" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "ListOperations: type=99",
        call: () => operations.listOperations({ filter: "type=99" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "ListOperations: phase=PHASE_UNSPECIFIED",
        call: () => operations.listOperations({ filter: "phase=PHASE_UNSPECIFIED" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "ListOperations: garbage page token",
        call: () => operations.listOperations({ pageToken: "%%%" }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_PAGE_TOKEN",
      },
      {
        name: "ListOperations: a ListMachines page token",
        call: async () => {
          const page = await machines.listMachines({ pageSize: 1 });
          return operations.listOperations({ pageToken: page.nextPageToken });
        },
        code: INVALID_ARGUMENT,
        reason: "INVALID_PAGE_TOKEN",
      },
      {
        name: "ListOperations: a token issued for another filter",
        call: async () => {
          const page = await operations.listOperations({ pageSize: 1 });
          return operations.listOperations({
            pageToken: page.nextPageToken,
            filter: "machine_id=machine-1",
          });
        },
        code: INVALID_ARGUMENT,
        reason: "INVALID_PAGE_TOKEN",
      },
      {
        name: "ListOperations: 20,000-char page token",
        call: () => operations.listOperations({ pageToken: "t".repeat(20_000) }),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "ListOperations: negative page size",
        call: () => operations.listOperations({ pageSize: -5 }),
        code: INVALID_ARGUMENT,
        reason: "INVALID_ARGUMENT",
      },
      // ----- streams
      {
        name: "WatchOperations: unknown filter term",
        call: () => readAll(operations.watchOperations({ filter: "colour=red" })),
        code: INVALID_ARGUMENT,
        reason: "INVALID_FILTER",
      },
      {
        name: "WatchOperations: 2,000-char filter",
        call: () =>
          readAll(operations.watchOperations({ filter: `machine_id=${"m".repeat(2000)}` })),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
      {
        name: "WatchOperations: 5 MiB filter",
        call: () => readAll(operations.watchOperations({ filter: big })),
        code: RESOURCE_EXHAUSTED,
        reason: null,
      },
      {
        name: "StreamOperationLogs: empty operation_id",
        call: () => readAll(operations.streamOperationLogs({})),
        code: INVALID_ARGUMENT,
        reason: "MISSING_FIELD",
      },
      {
        name: "StreamOperationLogs: unknown operation",
        call: () => readAll(operations.streamOperationLogs({ operationId: "op-404" })),
        code: NOT_FOUND,
        reason: "OPERATION_NOT_FOUND",
      },
      {
        name: "StreamOperationLogs: 200-char operation_id",
        call: () => readAll(operations.streamOperationLogs({ operationId: long })),
        code: INVALID_ARGUMENT,
        reason: "LIMIT_EXCEEDED",
      },
    ];

    const failures: string[] = [];
    for (const c of cases) {
      const outcome = await outcomeOf(c.call);
      const want = `${grpc.status[c.code]}/${c.reason ?? "-"}`;
      const got = `${grpc.status[outcome.code]}/${outcome.reason ?? "-"}`;
      if (want !== got) failures.push(`${c.name}: want ${want}, got ${got} (${outcome.details})`);
    }
    await t.step(`${cases.length} typed cases`, () => {
      assert.deepEqual(failures, []);
    });

    // Raw bytes: a generic client sends payloads that are not a valid request.
    const channel = new grpc.Client(server.address, grpc.credentials.createInsecure());
    try {
      await t.step("malformed messages on every method", async () => {
        const wrong: string[] = [];
        for (const path of [...UNARY_METHODS, ...STREAM_METHODS]) {
          const send = STREAM_METHODS.includes(path) ? rawStream : rawUnary;
          for (const [label, bytes] of Object.entries(MALFORMED)) {
            const outcome = await send(channel, path, Uint8Array.from(bytes));
            // Bad bytes are the client's fault: INVALID_ARGUMENT with reason MALFORMED_REQUEST,
            // through the same status funnel as every other error (not grpc-js' INTERNAL).
            if (
              outcome.code !== INVALID_ARGUMENT || outcome.reason !== "MALFORMED_REQUEST" ||
              !/is not a valid baremetal\.v1\.\w+ message/.test(outcome.details ?? "")
            ) {
              wrong.push(`${path} ${label}: ${grpc.status[outcome.code]} ${outcome.details}`);
            }
          }
        }
        assert.deepEqual(wrong, []);
      });

      await t.step("random bytes on every method end with a defined status", async () => {
        const allowed = new Set([INVALID_ARGUMENT, NOT_FOUND, grpc.status.OK]);
        const wrong: string[] = [];
        const seen: Record<string, number> = {};
        for (const path of [...UNARY_METHODS, ...STREAM_METHODS]) {
          const send = STREAM_METHODS.includes(path) ? rawStream : rawUnary;
          for (let seed = 1; seed <= 24; seed++) {
            const bytes = randomBytes(seed * 7919 + path.length, 1 + (seed * 37) % 512);
            const outcome = await send(channel, path, bytes);
            const name = grpc.status[outcome.code];
            seen[name] = (seen[name] ?? 0) + 1;
            if (!allowed.has(outcome.code)) {
              wrong.push(`${path} seed ${seed}: ${name} ${outcome.details}`);
            }
          }
        }
        assert.deepEqual(wrong, []);
        // Most random payloads are not decodable at all.
        assert.ok((seen.INVALID_ARGUMENT ?? 0) > 0, JSON.stringify(seen));
      });
    } finally {
      channel.close();
    }

    await t.step("the server still answers and the store is unchanged", async () => {
      const machine = await machines.getMachine({ machineId: "machine-1" });
      assert.equal(machine.status?.phase, MachinePhase.MAINTENANCE);
      const listed: Machine[] = [];
      let token = "";
      do {
        const page = await machines.listMachines({ pageSize: 3, pageToken: token });
        listed.push(...page.machines);
        token = page.nextPageToken;
      } while (token !== "");
      const after = snapshot(server.engine);
      assert.deepEqual(after, before);
      assert.deepEqual(listed.map((m) => create(MachineSchema, m)), before.machines);
      assert.equal(server.engine.executor.runningCount, 0);
    });
  },
);
