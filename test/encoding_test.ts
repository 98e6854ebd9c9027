import assert from "node:assert/strict";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ListMachinesResponseSchema,
  LogChunkSchema,
  MachineSchema,
  OperationEventSchema,
  OperationSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { encodeMessage } from "../lib/grpc/encoding.ts";
import { freezeSnapshot } from "../lib/model/immutable.ts";
import { cachedEncoding, elementSize } from "../lib/store/snapshot_encoding.ts";
import { SANITIZE } from "./helpers.ts";

const ts = timestampFromDate(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)));

function machine(i: number) {
  return freezeSnapshot(create(MachineSchema, {
    machineId: `machine-${i}`,
    spec: {
      provider: "fake",
      macAddresses: ["02:00:00:00:00:01"],
      targetCluster: { clusterId: "c" },
    },
    labels: { role: "worker", rack: `r${i}` },
    status: {
      phase: 3,
      effectiveState: 4,
      lastSeen: ts,
      conditions: [
        { type: "Provisioned", status: true, reason: "ReimageComplete", lastTransitionTime: ts },
        { type: "NeedsIntervention", status: false, reason: "OperationSucceeded" },
      ],
    },
  }));
}

Deno.test(
  "encodeMessage() decodes to the same message as toBinary() would produce",
  SANITIZE,
  () => {
    const response = create(ListMachinesResponseSchema, {
      machines: Array.from({ length: 300 }, (_, i) => machine(i)),
      nextPageToken: "abc",
    });
    const decoded = fromBinary(
      ListMachinesResponseSchema,
      encodeMessage(ListMachinesResponseSchema, response),
    );
    assert.ok(equals(ListMachinesResponseSchema, decoded, response));
    assert.equal(
      encodeMessage(ListMachinesResponseSchema, response).length,
      toBinary(ListMachinesResponseSchema, response).length,
    );
    const event = freezeSnapshot(create(OperationEventSchema, {
      ts,
      message: "Step repave-image started",
      snapshot: create(OperationSchema, {
        operationId: "op-1",
        params: { image_ref: "x" },
        startedAt: ts,
      }),
    }));
    assert.ok(
      equals(
        OperationEventSchema,
        fromBinary(OperationEventSchema, encodeMessage(OperationEventSchema, event)),
        event,
      ),
    );
    const chunk = freezeSnapshot(create(LogChunkSchema, {
      ts,
      operationId: "op-1",
      stream: "stderr",
      data: new TextEncoder().encode("line\n"),
      seq: 300n,
    }));
    // Field order may differ from toBinary's (allowed by protobuf); the content may not.
    const chunkBytes = encodeMessage(LogChunkSchema, chunk);
    assert.ok(equals(LogChunkSchema, fromBinary(LogChunkSchema, chunkBytes), chunk));
    assert.equal(chunkBytes.length, toBinary(LogChunkSchema, chunk).length);
    const empty = create(ListMachinesResponseSchema);
    assert.deepEqual(
      encodeMessage(ListMachinesResponseSchema, empty),
      toBinary(ListMachinesResponseSchema, empty),
    );
  },
);

Deno.test(
  "encodeMessage() reuses the encoding of a frozen message, never of a mutable one",
  SANITIZE,
  () => {
    const frozen = machine(1);
    assert.equal(encodeMessage(MachineSchema, frozen), encodeMessage(MachineSchema, frozen));
    const mutable = create(MachineSchema, { machineId: "m" });
    const first = encodeMessage(MachineSchema, mutable);
    mutable.machineId = "changed";
    assert.equal(
      fromBinary(MachineSchema, encodeMessage(MachineSchema, mutable)).machineId,
      "changed",
    );
    assert.notEqual(first, encodeMessage(MachineSchema, mutable));
  },
);

Deno.test(
  "a listed machine is encoded once: the page's measure is the reply's bytes",
  SANITIZE,
  () => {
    const machines = [machine(1), machine(2)];
    // What the store's page assembly measures, before the reply is built.
    const sizes = machines.map((m) => elementSize(MachineSchema, m));
    const measured = machines.map((m) => cachedEncoding(m));
    assert.ok(measured.every((bytes) => bytes !== undefined));
    // The serializer sends those very byte arrays, not a second encoding.
    for (const [i, m] of machines.entries()) {
      assert.equal(encodeMessage(MachineSchema, m), measured[i]);
    }
    const reply = create(ListMachinesResponseSchema, { machines });
    assert.equal(
      encodeMessage(ListMachinesResponseSchema, reply).length,
      sizes.reduce((a, b) => a + b, 0),
    );
    assert.equal(cachedEncoding(create(MachineSchema, { machineId: "mutable" })), undefined);
  },
);

Deno.test("freezeSnapshot() freezes deeply and leaves byte arrays alone", SANITIZE, () => {
  const chunk = freezeSnapshot(create(LogChunkSchema, { ts, data: new Uint8Array([1, 2]) }));
  assert.ok(Object.isFrozen(chunk) && Object.isFrozen(chunk.ts));
  assert.equal(chunk.data[0], 1);
});
