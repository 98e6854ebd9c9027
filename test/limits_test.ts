/**
 * Request limits (`LIMITS`, lib/store/limits.ts): each at its boundary through the engine (exactly the
 * limit accepted, one over refused with `LIMIT_EXCEEDED` naming the field and the limit, and
 * nothing changed), then once over real gRPC, and a 10,000-label request that must not hurt
 * the server.
 *
 * Permissions: `--allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { DatabaseSync } from "node:sqlite";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Engine } from "../lib/engine/mod.ts";
import { BmdemoError, InvalidArgumentError } from "../lib/model/errors.ts";
import {
  ListMachinesResponseSchema,
  type Machine,
  MachineSchema,
  MachineService,
  MachineSpecSchema,
  Operation_OperationType as OperationType,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { startServer } from "../lib/grpc/server.ts";
import { Code, connectClient, type ConnectError, errorInfo } from "../lib/client/mod.ts";
import { newMachineId } from "../lib/model/ids.ts";
import { LIMITS } from "../lib/store/limits.ts";
import { MAX_PAGE_SIZE } from "../lib/store/query.ts";
import { createSqliteStore } from "../lib/store/sqlite.ts";
import {
  importMachines,
  maintenanceEngine,
  maintenanceServer,
  rejectsWithCode,
  runOperation,
  SANITIZE,
  testEngine,
  untilTerminal,
} from "./helpers.ts";

function labels(count: number, value = "v"): Record<string, string> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, value]));
}

function machine(machineId: string, labelMap: Record<string, string> = {}): Machine {
  return create(MachineSchema, { machineId, spec: { provider: "fake" }, labels: labelMap });
}

/** Everything a client can see, to show a refused request changed nothing. */
function state(engine: Engine): unknown {
  return {
    machines: engine.listMachines({ pageSize: MAX_PAGE_SIZE }).items,
    operations: engine.listOperations({ pageSize: MAX_PAGE_SIZE }).items,
  };
}

/** Asserts `fn` throws LIMIT_EXCEEDED for `field` and `limit` and leaves `engine` unchanged. */
function refused(
  engine: Engine,
  fn: () => unknown,
  field: string,
  limit: number,
  reason = "LIMIT_EXCEEDED",
): BmdemoError {
  const before = state(engine);
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof InvalidArgumentError, `expected a refusal, got ${caught}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.equal(caught.metadata.field, field, caught.message);
  if (reason === "LIMIT_EXCEEDED") {
    assert.equal(caught.metadata.limit, String(limit));
    assert.match(caught.message, new RegExp(`the limit is ${limit}:`));
    assert.ok(caught.message.includes(field), caught.message);
  }
  assert.deepEqual(state(engine), before, "a refused request changes nothing");
  return caught;
}

Deno.test("LIMITS are exported with their documented values", SANITIZE, () => {
  assert.deepEqual({ ...LIMITS }, {
    requestIdLength: 128,
    machineIdLength: 128,
    labelsPerMachine: 64,
    labelKeyLength: 63,
    labelValueLength: 256,
    imageRefLength: 256,
    filterLength: 1024,
    maxPageSize: 1000,
    operationIdLength: 128,
    pageTokenLength: 16384,
    providerLength: 64,
    macAddressesPerMachine: 64,
    macAddressLength: 64,
    serialLength: 256,
    sshEndpointLength: 512,
    bmcAddressLength: 512,
    rackLength: 128,
    clusterIdLength: 128,
    kubeconfigSecretRefLength: 512,
    machineBytes: 65536,
    maxPageBytes: 1048576,
  });
  assert.equal(MAX_PAGE_SIZE, LIMITS.maxPageSize);
  assert.ok(Object.isFrozen(LIMITS));
});

Deno.test("machine_id: 128 characters of [A-Za-z0-9._:-]", SANITIZE, async (t) => {
  await using engine = testEngine();
  await t.step("existing id shapes stay valid", () => {
    for (const id of ["machine-1", "demo-1", newMachineId(), "rack1.node_2", "10.0.0.5:1"]) {
      assert.equal(engine.registerMachine(machine(id)).machine.machineId, id);
    }
    assert.match(engine.registerMachine(machine("")).machine.machineId, /^m-/);
  });
  await t.step("exactly the limit is accepted, one over is refused", () => {
    const exact = "a".repeat(LIMITS.machineIdLength);
    assert.equal(engine.registerMachine(machine(exact)).created, true);
    const over = "a".repeat(LIMITS.machineIdLength + 1);
    const error = refused(engine, () => engine.registerMachine(machine(over)), "machine_id", 128);
    assert.match(error.message, /machine_id is 129 characters long; the limit is 128/);
    refused(engine, () => engine.getMachine(over), "machine_id", 128);
    refused(
      engine,
      () =>
        engine.startOperation({
          machineId: over,
          requestId: "r",
          type: OperationType.ENTER_MAINTENANCE,
        }),
      "machine_id",
      128,
    );
  });
  await t.step("spaces, = and quotes are refused with INVALID_FORMAT", () => {
    for (const id of ["a b", "a=b", 'a"b', "a\u0000", "é"]) {
      const error = refused(
        engine,
        () => engine.registerMachine(machine(id)),
        "machine_id",
        0,
        "INVALID_FORMAT",
      );
      assert.match(error.message, /letters, digits, '\.', '_', ':' and '-'/);
    }
  });
});

Deno.test("request_id: at most 128 characters", SANITIZE, async () => {
  await using engine = testEngine();
  importMachines(engine, 2);
  refused(
    engine,
    () =>
      engine.startOperation({
        machineId: "machine-1",
        requestId: "r".repeat(129),
        type: OperationType.ENTER_MAINTENANCE,
      }),
    "request_id",
    128,
  );
  const op = await runOperation(engine, {
    machineId: "machine-1",
    requestId: "r".repeat(128),
    type: OperationType.ENTER_MAINTENANCE,
  });
  assert.equal(op.requestId.length, 128);
});

Deno.test("labels: 64 per machine, keys 63, values 256", SANITIZE, async (t) => {
  await using engine = testEngine();
  engine.registerMachine(machine("machine-1", { role: "worker" }));
  await t.step("count", () => {
    assert.equal(
      Object.keys(engine.registerMachine(machine("m-64", labels(64))).machine.labels).length,
      64,
    );
    const error = refused(
      engine,
      () => engine.registerMachine(machine("m-65", labels(65))),
      "labels",
      64,
    );
    assert.match(error.message, /has 65 labels; the limit is 64/);
    // Updating an existing machine is refused the same way, both ways in.
    refused(engine, () => engine.registerMachine(machine("machine-1", labels(65))), "labels", 64);
    refused(engine, () => engine.updateMachine("machine-1", { labels: labels(65) }), "labels", 64);
  });
  await t.step("key length and characters", () => {
    const key = "k".repeat(63);
    engine.registerMachine(machine("m-key", { [key]: "v", "example.com/role-x_1": "v" }));
    refused(
      engine,
      () => engine.registerMachine(machine("m-key2", { [`${key}k`]: "v" })),
      "label_key",
      63,
    );
    for (const bad of ["", "a b", "a=b", "é"]) {
      refused(
        engine,
        () => engine.registerMachine(machine("m-key3", { [bad]: "v" })),
        "label_key",
        0,
        "INVALID_FORMAT",
      );
    }
  });
  await t.step("value length (in characters, not bytes)", () => {
    engine.registerMachine(machine("m-val", { a: "v".repeat(256), b: "🙂".repeat(256) }));
    const error = refused(
      engine,
      () => engine.updateMachine("machine-1", { labels: { a: "v".repeat(257) } }),
      "label_value",
      256,
    );
    assert.equal(error.metadata.labelKey, "a");
    assert.match(error.message, /label_value of "a" is 257 characters long; the limit is 256/);
  });
  assert.deepEqual(engine.getMachine("machine-1").labels, { role: "worker" });
});

Deno.test("image_ref: at most 256 characters", SANITIZE, async () => {
  await using engine = await maintenanceEngine();
  refused(
    engine,
    () =>
      engine.startOperation({
        machineId: "machine-1",
        requestId: "r-over",
        type: OperationType.REIMAGE,
        imageRef: "i".repeat(257),
      }),
    "image_ref",
    256,
  );
  const op = await runOperation(engine, {
    machineId: "machine-1",
    type: OperationType.REIMAGE,
    imageRef: "i".repeat(256),
  });
  assert.equal(op.params.image_ref.length, 256);
});

Deno.test("filter: at most 1024 characters, for lists and watches", SANITIZE, async () => {
  await using engine = testEngine();
  importMachines(engine, 1);
  const machineFilter = `label.role=${"w".repeat(1024 - "label.role=".length)}`;
  const operationFilter = `machine_id=${"m".repeat(1024 - "machine_id=".length)}`;
  assert.equal(engine.listMachines({ filter: machineFilter }).items.length, 0);
  assert.equal(engine.listOperations({ filter: operationFilter }).items.length, 0);
  engine.watch({ filter: operationFilter })[Symbol.dispose]();
  refused(engine, () => engine.listMachines({ filter: `${machineFilter}w` }), "filter", 1024);
  refused(engine, () => engine.listOperations({ filter: `${operationFilter}m` }), "filter", 1024);
  refused(engine, () => engine.watch({ filter: `${operationFilter}m` }), "filter", 1024);
});

Deno.test(
  "page_token: the longest token the server issues is within the limit",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    // Control characters take six characters each in the token's JSON: the worst case.
    const value = "\u0001".repeat(240);
    engine.registerMachine(machine("machine-1", { a: value }));
    engine.registerMachine(machine("machine-2", { a: value }));
    const filter = Array(4).fill(`label.a=${value}`).join(" AND ");
    assert.ok(filter.length <= LIMITS.filterLength);
    const first = engine.listMachines({ filter, pageSize: 1 });
    assert.ok(first.nextPageToken.length > 7000, `${first.nextPageToken.length}`);
    assert.ok(first.nextPageToken.length <= LIMITS.pageTokenLength / 2);
    const second = engine.listMachines({ filter, pageSize: 1, pageToken: first.nextPageToken });
    assert.deepEqual(second.items.map((m) => m.machineId), ["machine-2"]);
  },
);

Deno.test("page_size: larger requests are capped to 1000, not refused", SANITIZE, async () => {
  await using engine = testEngine();
  importMachines(engine, LIMITS.maxPageSize + 1);
  const page = engine.listMachines({ pageSize: 5000 });
  assert.equal(page.items.length, LIMITS.maxPageSize);
  assert.notEqual(page.nextPageToken, "");
});

Deno.test(
  "limits over gRPC: the limit is accepted, one over is LIMIT_EXCEEDED",
  SANITIZE,
  async () => {
    await using server = await maintenanceServer();
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);

    const cases: {
      field: string;
      limit: number;
      call: (n: number) => Promise<unknown>;
    }[] = [
      {
        field: "machine_id",
        limit: 128,
        call: (n) => machines.registerMachine({ machine: { machineId: "a".repeat(n) } }),
      },
      {
        field: "labels",
        limit: 64,
        call: (n) => machines.registerMachine({ machine: { machineId: "m-l", labels: labels(n) } }),
      },
      {
        field: "label_key",
        limit: 63,
        call: (n) =>
          machines.registerMachine({
            machine: { machineId: "m-k", labels: { ["k".repeat(n)]: "" } },
          }),
      },
      {
        field: "label_value",
        limit: 256,
        call: (n) =>
          machines.updateMachine({
            machine: { machineId: "machine-1", labels: { a: "v".repeat(n) } },
          }),
      },
      {
        field: "filter",
        limit: 1024,
        call: (n) => operations.listOperations({ filter: `type=REBOOT${" ".repeat(n - 11)}` }),
      },
      {
        field: "request_id",
        limit: 128,
        // Within the limit this starts a reboot (machine-1 is in MAINTENANCE).
        call: (n) => machines.rebootMachine({ machineId: "machine-1", requestId: "r".repeat(n) }),
      },
      {
        field: "spec.serial",
        limit: 256,
        call: (n) =>
          machines.registerMachine({
            machine: { machineId: "m-s", spec: { serial: "s".repeat(n) } },
          }),
      },
      {
        field: "spec.rack",
        limit: 128,
        call: (n) =>
          machines.updateMachine({
            machine: { machineId: "machine-2", spec: { rack: "r".repeat(n) } },
          }),
      },
      {
        field: "spec.mac_addresses",
        limit: 64,
        call: (n) =>
          machines.registerMachine({
            machine: {
              machineId: "m-m",
              spec: { macAddresses: Array(n).fill("02:00:00:00:00:01") },
            },
          }),
      },
      {
        field: "spec.mac_address",
        limit: 64,
        call: (n) =>
          machines.updateMachine({
            machine: { machineId: "machine-2", spec: { macAddresses: ["m".repeat(n)] } },
          }),
      },
      {
        field: "spec.target_cluster.kubeconfig_secret_ref",
        limit: 512,
        call: (n) =>
          machines.registerMachine({
            machine: {
              machineId: "m-t",
              spec: { targetCluster: { kubeconfigSecretRef: "k".repeat(n) } },
            },
          }),
      },
      {
        field: "machine",
        limit: 65536,
        // n/1024 labels of 256 four-byte characters: 64 of them are over, 60 are not.
        call: (n) =>
          machines.registerMachine({
            machine: {
              machineId: "m-w",
              labels: Object.fromEntries(
                Array.from(
                  { length: n === 65536 ? 60 : 64 },
                  (_, i) => [`k${i}`, "🙂".repeat(256)],
                ),
              ),
            },
          }),
      },
      {
        field: "operation_id",
        limit: 128,
        call: (n) => operations.getOperation({ operationId: "o".repeat(n) }),
      },
      {
        field: "page_token",
        limit: 16384,
        call: (n) => machines.listMachines({ pageToken: "t".repeat(n) }),
      },
      {
        field: "image_ref",
        limit: 256,
        call: (n) =>
          machines.reimageMachine({
            machineId: "machine-1",
            requestId: `i-${n}`,
            imageRef: "i".repeat(n),
          }),
      },
    ];
    for (const c of cases) {
      // Exactly the limit: whatever happens, it is not a limit error.
      try {
        await c.call(c.limit);
      } catch (error) {
        assert.notEqual(errorInfo(error)?.reason, "LIMIT_EXCEEDED", `${c.field} at the limit`);
      }
      const error = await rejectsWithCode(
        c.call(c.limit + 1),
        Code.InvalidArgument,
        new RegExp(`the limit is ${c.limit}:`),
      );
      const info = errorInfo(error);
      assert.equal(info?.reason, "LIMIT_EXCEEDED", c.field);
      assert.equal(info?.metadata.field, c.field);
      assert.equal(info?.metadata.limit, String(c.limit));
      assert.ok(Number(info?.metadata.actual) > c.limit, `${c.field}: ${info?.metadata.actual}`);
    }
    // The calls at the limit started operations: let them end before the server stops.
    for (const op of server.engine.store.activeOperations()) {
      await untilTerminal(server.engine, op.operationId);
    }
  },
);

Deno.test(
  "10,000 labels in one RegisterMachine are refused cleanly and the server still answers",
  SANITIZE,
  async () => {
    await using server = await startServer({ port: 0, engine: testEngine() });
    importMachines(server.engine, 1);
    using machines = connectClient(MachineService, server.address);
    let caught: unknown;
    try {
      await machines.registerMachine({
        machine: { machineId: "huge", labels: labels(10_000, "value") },
      });
    } catch (error) {
      caught = error;
    }
    const error = caught as ConnectError;
    assert.ok(
      [Code.InvalidArgument, Code.ResourceExhausted].includes(error?.code),
      `got ${grpc.status[error?.code]}: ${error?.rawMessage}`,
    );
    if (error.code === Code.InvalidArgument) {
      assert.equal(errorInfo(error)?.reason, "LIMIT_EXCEEDED");
      assert.match(error.rawMessage, /has 10000 labels; the limit is 64/);
    }
    const after = await machines.listMachines({});
    assert.deepEqual(after.machines.map((m) => m.machineId), ["machine-1"]);
  },
);

/** A SQLite file as an older bmdemo left it: machine-1 … machine-N, the `big` ones with a 2.1 MB serial. */
function oldDatabase(dir: string, count: number, big: string[]): string {
  const path = `${dir}/old.db`;
  {
    using store = createSqliteStore(path);
    for (let i = 1; i <= count; i++) store.registerMachine(machine(`machine-${i}`));
  }
  // Written directly, as a version without spec limits stored them.
  const raw = new DatabaseSync(path);
  try {
    const update = raw.prepare("UPDATE machines SET data = ? WHERE machine_id = ?");
    for (const id of big) {
      const row = raw.prepare("SELECT data FROM machines WHERE machine_id = ?").get(id) as {
        data: Uint8Array;
      };
      const stored = fromBinary(MachineSchema, row.data);
      stored.spec = create(MachineSpecSchema, { provider: "fake", serial: OLD_SERIAL });
      update.run(toBinary(MachineSchema, stored), id);
    }
  } finally {
    raw.close();
  }
  return path;
}

const OLD_SERIAL = "S".repeat(2_100_000);

Deno.test(
  "machines stored before the spec limits stay readable and are fixed by an update",
  SANITIZE,
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-limits-" });
    try {
      const path = oldDatabase(dir, 3, ["machine-1", "machine-2"]);
      {
        using store = createSqliteStore(path);
        await t.step("the file opens and GetMachine returns them whole", () => {
          assert.equal(store.loaded.machines, 3);
          assert.equal(store.getMachine("machine-1").spec?.serial, OLD_SERIAL);
        });
        await t.step("ListMachines returns one per page, over the byte budget", () => {
          const pages: string[][] = [];
          let token = "";
          do {
            const page = store.listMachines({ pageSize: 100, pageToken: token });
            pages.push(page.items.map((m) => m.machineId));
            token = page.nextPageToken;
          } while (token !== "");
          assert.deepEqual(pages, [["machine-1"], ["machine-2"], ["machine-3"]]);
        });
        await t.step("an update that keeps the oversized spec is refused clearly", () => {
          const before = store.getMachine("machine-1");
          let caught: unknown;
          try {
            store.updateMachine("machine-1", { labels: { role: "db" } });
          } catch (error) {
            caught = error;
          }
          assert.ok(caught instanceof InvalidArgumentError, String(caught));
          assert.equal(caught.reason, "LIMIT_EXCEEDED");
          assert.deepEqual({ ...caught.metadata }, {
            machineId: "machine-1",
            field: "spec.serial",
            limit: "256",
            actual: "2100000",
          });
          assert.match(
            caught.message,
            /with its stored spec kept it would break a limit \(spec\.serial is 2100000 characters long; the limit is 256: .*\); send new spec within the limits/,
          );
          assert.equal(store.getMachine("machine-1"), before, "nothing changed");
          assert.throws(
            () => store.updateMachine("machine-2", { labels: { role: "db" } }),
            (error: unknown) =>
              error instanceof InvalidArgumentError && error.metadata.field === "spec.serial",
          );
        });
        await t.step("an update with a spec within the limits fixes it", () => {
          const fixed = store.updateMachine("machine-1", {
            spec: create(MachineSpecSchema, { provider: "fake", serial: "SN-1" }),
            labels: { role: "db" },
          });
          assert.equal(fixed.spec?.serial, "SN-1");
        });
      }
      using reopened = createSqliteStore(path);
      assert.equal(reopened.getMachine("machine-1").spec?.serial, "SN-1");
      assert.deepEqual(reopened.getMachine("machine-1").labels, { role: "db" });
      assert.equal(reopened.getMachine("machine-2").spec?.serial, OLD_SERIAL);
      assert.deepEqual(reopened.getMachine("machine-2").labels, {}, "nothing stored");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "ListMachines over gRPC stays under the client's 4 MiB with two 2.1 MB machines stored",
  SANITIZE,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-limits-" });
    try {
      using store = createSqliteStore(oldDatabase(dir, 5, ["machine-2", "machine-3"]));
      await using server = await startServer({ port: 0, engine: testEngine({}, { store }) });
      using machines = connectClient(MachineService, server.address);
      const pages: string[][] = [];
      let pageToken = "";
      do {
        const page = await machines.listMachines({ pageSize: 1000, pageToken });
        pages.push(page.machines.map((m) => m.machineId));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      // Each oversized machine is a page of its own; the small ones fill the pages around them.
      assert.deepEqual(pages, [["machine-1"], ["machine-2"], ["machine-3"], [
        "machine-4",
        "machine-5",
      ]]);
      const info = errorInfo(
        await rejectsWithCode(
          machines.updateMachine({ machine: { machineId: "machine-2", labels: { a: "b" } } }),
          Code.InvalidArgument,
        ),
      );
      assert.equal(info?.reason, "LIMIT_EXCEEDED");
      assert.equal(info?.metadata.field, "spec.serial");
      assert.equal(info?.metadata.machineId, "machine-2");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "ListMachines and ListOperations replies over gRPC are cut by bytes, every item once",
  SANITIZE,
  async () => {
    await using server = await startServer({ port: 0, engine: testEngine() });
    // 64 labels of 256 three-byte characters: ~52 KB a machine, 1,000 would be ~52 MB.
    const wide = Object.fromEntries(
      Array.from({ length: 64 }, (_, i) => [`k${i}`, "€".repeat(256)]),
    );
    const ids = Array.from({ length: 100 }, (_, i) => `machine-${i + 1}`);
    for (const id of ids) server.engine.registerMachine(machine(id, wide));
    using machines = connectClient(MachineService, server.address);
    const seen: string[] = [];
    let pages = 0;
    let pageToken = "";
    do {
      const page = await machines.listMachines({ pageSize: 1000, pageToken });
      const bytes = toBinary(ListMachinesResponseSchema, page).length;
      assert.ok(bytes <= LIMITS.maxPageBytes + 1024, `${bytes} bytes`);
      seen.push(...page.machines.map((m) => m.machineId));
      pages++;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(seen, ids);
    assert.ok(pages >= 5, `${pages} pages`);
  },
);
