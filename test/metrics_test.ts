/**
 * The Prometheus metrics (`lib/metrics/`): the `/metrics` text parsed and checked after known
 * sequences of operations and gRPC calls (exact counts), the watchers gauge up and down, the
 * process metrics, the step label bound and the lag probe.
 *
 * @module
 */

import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, connectClient } from "../lib/client/mod.ts";
import { createEngine, type Engine } from "../lib/engine/mod.ts";
import {
  MachineSchema,
  MachineService,
  MachineStatus_Phase as MachinePhase,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationEvent_Kind as EventKind,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  type CallRecorder,
  createMetrics,
  EXPOSITION_CONTENT_TYPE,
  type GrpcObserver,
  type Metrics,
  type ObservedMethod,
} from "../lib/metrics/mod.ts";
import { startLagProbe } from "../lib/metrics/process_metrics.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import { parseFault, withFaults } from "../lib/provider/fault_flag.ts";
import {
  enterMaintenance,
  importMachines,
  nextEvent,
  pendingReboot,
  rejectsWithCode,
  runOperation,
  SANITIZE,
  testEngine,
  testServer,
} from "./helpers.ts";

// --- A parser of the text exposition format (0.0.4) -------------------------------------------

/** One sample line: `name{label="value",...} value`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed exposition: samples, and each family's TYPE. */
interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/gy;

/**
 * Parses the text format strictly: every sample's family has a TYPE line before it, label sets
 * are well formed, values are numbers. Throws on anything else.
 */
function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      assert.ok(!types.has(type[1]), `TYPE of ${type[1]} twice`);
      types.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith("# HELP ")) continue;
    assert.ok(!line.startsWith("#"), `unexpected comment: ${line}`);
    const match = SAMPLE.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    const [, name, labelText = "", valueText] = match;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(types.has(family), `sample before its TYPE line: ${line}`);
    const labels: Record<string, string> = {};
    LABEL.lastIndex = 0;
    let consumed = 0;
    for (let label = LABEL.exec(labelText); label; label = LABEL.exec(labelText)) {
      labels[label[1]] = label[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      consumed = LABEL.lastIndex;
      if (consumed === labelText.length) break;
    }
    assert.equal(consumed, labelText.length, `malformed labels: ${line}`);
    const value = valueText === "+Inf" ? Infinity : Number(valueText);
    assert.ok(!Number.isNaN(value), `not a number: ${line}`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

/** The one sample of `name` whose labels are exactly `labels`. */
function valueOf(exposition: Exposition, name: string, labels: Record<string, string> = {}) {
  const wanted = JSON.stringify(Object.entries(labels).sort());
  const found = exposition.samples.filter((s) =>
    s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === wanted
  );
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0].value;
}

/** Every sample of `name` whose labels include `labels`, as `label values -> value`. */
function series(
  exposition: Exposition,
  name: string,
  by: readonly string[],
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const sample of exposition.samples.filter((s) => s.name === name)) {
    out[by.map((label) => sample.labels[label]).join(" ")] = sample.value;
  }
  return out;
}

/** Scrapes the route as the HTTP surface would, and parses the answer. */
async function scrape(metrics: Metrics): Promise<Exposition> {
  const response = await metrics.route.handle(new Request("http://localhost/metrics"));
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), EXPOSITION_CONTENT_TYPE);
  return parseExposition(await response.text());
}

// --- The engine's metrics ---------------------------------------------------------------------

/** An engine whose event clock advances exactly 1 s per event, with the given faults. */
function faultyEngine(faults: string[]): Engine {
  let now = Date.parse("2026-01-01T00:00:00Z");
  return createEngine({
    provider: withFaults(createFakeProvider({ timing: "zero" }), faults.map(parseFault)),
    executor: { backoff: () => 0 },
    events: { now: () => new Date(now += 1000) },
  });
}

Deno.test(
  "/metrics after 3 reimages succeeded, 1 failed by a fault and 1 canceled: exact counts",
  SANITIZE,
  async () => {
    await using engine = faultyEngine([
      "repave-image:once@machine-3", // one retry, then success
      "verify-in-cluster:2@machine-2", // two retries, then success
      "repave-image:always@machine-4", // both attempts fail: FAILED
      "repave-image:hang@machine-5", // held until canceled
    ]);
    using metrics = createMetrics(engine);
    importMachines(engine, 5);
    for (let i = 1; i <= 5; i++) await enterMaintenance(engine, `machine-${i}`);
    engine.registerMachine(create(MachineSchema, {
      machineId: "ready-1",
      status: { phase: MachinePhase.READY },
    }));
    engine.registerMachine(create(MachineSchema, { machineId: "new-1" }));
    // One at a time, so each step's start and end are consecutive events: 1 s apart.
    const outcomes: OperationPhase[] = [];
    for (let i = 1; i <= 4; i++) {
      const op = await runOperation(engine, {
        machineId: `machine-${i}`,
        type: OperationType.REIMAGE,
      });
      outcomes.push(op.phase);
    }
    assert.deepEqual(outcomes, [
      OperationPhase.SUCCEEDED,
      OperationPhase.SUCCEEDED,
      OperationPhase.SUCCEEDED,
      OperationPhase.FAILED,
    ]);

    // machine-5 held in repave-image: one active operation, its machine BUSY.
    using events = engine.events.subscribe();
    const held = engine.startOperation({
      machineId: "machine-5",
      requestId: "held",
      type: OperationType.REIMAGE,
    }).operation;
    await nextEvent(events, (e) => e.kind === EventKind.STEP_STARTED && e.step === "repave-image");
    const during = await scrape(metrics);
    assert.equal(valueOf(during, "bmdemo_active_operations"), 1);
    assert.equal(
      valueOf(during, "bmdemo_machines", { phase: "MAINTENANCE", effective_state: "BUSY" }),
      1,
    );
    engine.cancelOperation(held.operationId);

    const after = await scrape(metrics);
    assert.equal(after.types.get("bmdemo_operations_total"), "counter");
    assert.equal(after.types.get("bmdemo_machines"), "gauge");
    assert.equal(after.types.get("bmdemo_operation_duration_seconds"), "histogram");
    assert.deepEqual(series(after, "bmdemo_operations_total", ["type", "outcome"]), {
      "REBOOT SUCCEEDED": 0,
      "REBOOT FAILED": 0,
      "REBOOT CANCELED": 0,
      "REIMAGE SUCCEEDED": 3,
      "REIMAGE FAILED": 1,
      "REIMAGE CANCELED": 1,
      "ENTER_MAINTENANCE SUCCEEDED": 5,
      "ENTER_MAINTENANCE FAILED": 0,
      "ENTER_MAINTENANCE CANCELED": 0,
      "EXIT_MAINTENANCE SUCCEEDED": 0,
      "EXIT_MAINTENANCE FAILED": 0,
      "EXIT_MAINTENANCE CANCELED": 0,
    });
    assert.deepEqual(series(after, "bmdemo_operation_duration_seconds_count", ["type"]), {
      REBOOT: 0,
      REIMAGE: 5,
      ENTER_MAINTENANCE: 5,
      EXIT_MAINTENANCE: 0,
    });
    assert.deepEqual(series(after, "bmdemo_step_retries_total", ["step"]), {
      "set-netboot": 0,
      "reboot-to-netboot": 0,
      "repave-image": 2,
      "join-cluster": 0,
      "verify-in-cluster": 2,
      "reboot": 0,
    });
    // machine-5's repave-image never ended: it is in no step histogram.
    const stepCounts = {
      "set-netboot": 5,
      "reboot-to-netboot": 5,
      "repave-image": 4,
      "join-cluster": 3,
      "verify-in-cluster": 3,
      "reboot": 0,
    };
    assert.deepEqual(series(after, "bmdemo_step_duration_seconds_count", ["step"]), stepCounts);
    // Every step lasted exactly one tick of the event clock: 1 s.
    assert.deepEqual(series(after, "bmdemo_step_duration_seconds_sum", ["step"]), stepCounts);
    assert.equal(
      valueOf(after, "bmdemo_step_duration_seconds_bucket", { step: "repave-image", le: "0.5" }),
      0,
    );
    assert.equal(
      valueOf(after, "bmdemo_step_duration_seconds_bucket", { step: "repave-image", le: "1" }),
      4,
    );
    assert.equal(valueOf(after, "bmdemo_active_operations"), 0);
    const machines = series(after, "bmdemo_machines", ["phase", "effective_state"]);
    assert.equal(Object.keys(machines).length, 18, "every phase x effective state, 0 included");
    assert.deepEqual(
      Object.fromEntries(Object.entries(machines).filter(([, count]) => count > 0)),
      {
        "MAINTENANCE MAINTENANCE_IDLE": 4, // a canceled reimage needs no intervention
        "MAINTENANCE ATTENTION": 1, // the failed reimage
        "READY IDLE": 1,
        "FACTORY_READY NEW": 1,
      },
    );
  },
);

Deno.test("operations restart recovery fails are counted as FAILED", SANITIZE, async () => {
  await using engine = testEngine();
  pendingReboot(engine); // left PENDING by a "previous process": nothing runs it
  using metrics = createMetrics(engine);
  assert.equal(engine.recover().operationIds.length, 1);
  const exposition = await scrape(metrics);
  assert.equal(
    valueOf(exposition, "bmdemo_operations_total", { type: "REBOOT", outcome: "FAILED" }),
    1,
  );
  assert.equal(
    valueOf(exposition, "bmdemo_operation_duration_seconds_count", { type: "REBOOT" }),
    1,
  );
});

Deno.test("the machines gauge reads every page of the store", SANITIZE, async () => {
  await using engine = testEngine();
  using metrics = createMetrics(engine);
  importMachines(engine, 2500); // three pages of 1000
  await enterMaintenance(engine, "machine-2500");
  const exposition = await scrape(metrics);
  assert.equal(
    valueOf(exposition, "bmdemo_machines", { phase: "FACTORY_READY", effective_state: "NEW" }),
    2499,
  );
  assert.equal(
    valueOf(exposition, "bmdemo_machines", {
      phase: "MAINTENANCE",
      effective_state: "MAINTENANCE_IDLE",
    }),
    1,
  );
});

Deno.test("steps past the label bound are counted under `other`", SANITIZE, async () => {
  await using engine = testEngine();
  using metrics = createMetrics(engine, { steps: [], maxSteps: 2 });
  importMachines(engine, 1);
  await enterMaintenance(engine, "machine-1");
  await runOperation(engine, { machineId: "machine-1", type: OperationType.REIMAGE });
  const exposition = await scrape(metrics);
  assert.deepEqual(series(exposition, "bmdemo_step_duration_seconds_count", ["step"]), {
    "set-netboot": 1,
    "reboot-to-netboot": 1,
    "other": 3,
  });
});

Deno.test("closed metrics stop listening to the engine", SANITIZE, async () => {
  await using engine = testEngine();
  const metrics = createMetrics(engine);
  importMachines(engine, 1);
  await enterMaintenance(engine, "machine-1");
  metrics.close();
  metrics.close(); // idempotent
  await runOperation(engine, { machineId: "machine-1", type: OperationType.REBOOT });
  const exposition = await scrape(metrics);
  assert.equal(
    valueOf(exposition, "bmdemo_operations_total", {
      type: "ENTER_MAINTENANCE",
      outcome: "SUCCEEDED",
    }),
    1,
  );
  assert.equal(
    valueOf(exposition, "bmdemo_operations_total", { type: "REBOOT", outcome: "SUCCEEDED" }),
    0,
  );
});

// --- gRPC -------------------------------------------------------------------------------------

/** `observer`, also calling `onEnded` after each call's end is recorded. */
function spied(
  observer: GrpcObserver,
  onEnded: (method: string, code: string) => void,
): GrpcObserver {
  return (info: ObservedMethod): CallRecorder => {
    const recorder = observer(info);
    return {
      started: () => recorder.started(),
      ended(code, seconds) {
        recorder.ended(code, seconds);
        onEnded(info.method, code);
      },
    };
  };
}

Deno.test(
  "gRPC calls are counted per method and code, watchers go up and down",
  SANITIZE,
  async () => {
    const engine = testEngine();
    using metrics = createMetrics(engine);
    const watchCancelled = Promise.withResolvers<void>();
    await using server = await testServer({
      engine,
      authToken: "s3cret",
      callObserver: spied(metrics.grpcObserver, (method, code) => {
        if (method === "WatchOperations" && code === "CANCELLED") watchCancelled.resolve();
      }),
    });
    using machines = connectClient(MachineService, server.address, { token: "s3cret" });
    using operations = connectClient(OperationService, server.address, { token: "s3cret" });
    using anonymous = connectClient(MachineService, server.address);

    await machines.registerMachine({ machine: create(MachineSchema, { machineId: "m-1" }) });
    await machines.getMachine({ machineId: "m-1" });
    await machines.getMachine({ machineId: "m-1" });
    await rejectsWithCode(machines.getMachine({ machineId: "nope" }), Code.NotFound);
    await rejectsWithCode(machines.getMachine({ machineId: "" }), Code.InvalidArgument);
    await rejectsWithCode(anonymous.getMachine({ machineId: "m-1" }), Code.Unauthenticated);
    const enter = await machines.enterMaintenance({ machineId: "m-1", requestId: "e-1" });
    // The log stream ends by itself (OK) once the operation has ended.
    for await (const _ of operations.streamOperationLogs({ operationId: enter.operationId })) {
      // drained
    }
    await rejectsWithCode(
      (async () => {
        for await (const _ of operations.streamOperationLogs({ operationId: "op-nope" })) {
          // fails before the first message
        }
      })(),
      Code.NotFound,
    );

    const watch = operations.watchOperations({ sendInitialSnapshot: true })[
      Symbol.asyncIterator
    ]();
    const first = await watch.next(); // "Snapshot complete": the server's handler is running
    assert.equal(first.value?.kind, EventKind.SNAPSHOT_COMPLETE);
    using dashboard = metrics.trackWatcher();
    const open = await scrape(metrics);
    assert.equal(valueOf(open, "bmdemo_watchers"), 2);
    dashboard[Symbol.dispose]();
    dashboard[Symbol.dispose](); // idempotent
    assert.equal(valueOf(await scrape(metrics), "bmdemo_watchers"), 1);
    await watch.return?.();
    await watchCancelled.promise;

    const after = await scrape(metrics);
    assert.equal(valueOf(after, "bmdemo_watchers"), 0);
    assert.equal(after.types.get("bmdemo_grpc_requests_total"), "counter");
    const requests = series(after, "bmdemo_grpc_requests_total", ["method", "code"]);
    assert.deepEqual(
      Object.fromEntries(Object.entries(requests).filter(([, count]) => count > 0)),
      {
        "RegisterMachine OK": 1,
        "GetMachine OK": 2,
        "GetMachine NOT_FOUND": 1,
        "GetMachine INVALID_ARGUMENT": 1,
        "GetMachine UNAUTHENTICATED": 1,
        "EnterMaintenance OK": 1,
        "StreamOperationLogs OK": 1,
        "StreamOperationLogs NOT_FOUND": 1,
        "WatchOperations CANCELLED": 1,
      },
    );
    // Every method of both services has its OK series from the start.
    const methods = [...MachineService.methods, ...OperationService.methods].map((m) => m.name);
    for (const method of methods) assert.ok(`${method} OK` in requests, method);
    const durations = series(after, "bmdemo_grpc_request_duration_seconds_count", ["method"]);
    assert.equal(durations["GetMachine"], 5);
    assert.equal(durations["WatchOperations"], 1);
    assert.equal(durations["ListMachines"], 0);
    assert.equal(
      valueOf(after, "bmdemo_grpc_request_duration_seconds_bucket", {
        method: "GetMachine",
        le: "+Inf",
      }),
      5,
    );
  },
);

Deno.test(
  "a call on a bucket's bound counts in that bucket (le is inclusive)",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    using metrics = createMetrics(engine);
    const recorder = metrics.grpcObserver({ method: "GetMachine", kind: "unary" });
    recorder.started();
    recorder.ended("OK", 0.001);
    recorder.ended("OK", 0.0010001);
    recorder.ended("UNAVAILABLE", 60);
    const exposition = await scrape(metrics);
    const bucket = (le: string) =>
      valueOf(exposition, "bmdemo_grpc_request_duration_seconds_bucket", {
        method: "GetMachine",
        le,
      });
    assert.deepEqual([bucket("0.0005"), bucket("0.001"), bucket("0.0025"), bucket("10")], [
      0,
      1,
      2,
      2,
    ]);
    assert.equal(bucket("+Inf"), 3);
    assert.equal(
      valueOf(exposition, "bmdemo_grpc_request_duration_seconds_sum", { method: "GetMachine" }),
      60.0020001,
    );
    assert.equal(
      valueOf(exposition, "bmdemo_grpc_requests_total", {
        method: "GetMachine",
        code: "UNAVAILABLE",
      }),
      1,
    );
  },
);

// --- Process metrics, the route, the lag probe ------------------------------------------------

Deno.test("process metrics are present and positive", SANITIZE, async () => {
  await using engine = testEngine();
  const sampled = Promise.withResolvers<void>();
  using metrics = createMetrics(engine, {
    eventLoop: { intervalMs: 1, onSample: () => sampled.resolve() },
  });
  // The probe's timer is unref'd (it never keeps a server alive): hold the loop open meanwhile.
  const keepAlive = setInterval(() => {}, 1000);
  await sampled.promise;
  clearInterval(keepAlive);
  const exposition = await scrape(metrics);
  assert.ok(valueOf(exposition, "process_resident_memory_bytes") > 1_000_000);
  assert.ok(valueOf(exposition, "bmdemo_heap_used_bytes") > 0);
  assert.ok(
    valueOf(exposition, "bmdemo_heap_total_bytes") >= valueOf(exposition, "bmdemo_heap_used_bytes"),
  );
  const start = valueOf(exposition, "process_start_time_seconds");
  assert.ok(start > Date.parse("2020-01-01") / 1000 && start <= Date.now() / 1000 + 1);
  assert.equal(exposition.types.get("bmdemo_event_loop_lag_seconds"), "histogram");
  assert.ok(valueOf(exposition, "bmdemo_event_loop_lag_seconds_count") >= 1);
  assert.ok(valueOf(exposition, "bmdemo_event_loop_lag_seconds_sum") >= 0);
});

Deno.test("the lag probe measures a blocked event loop", SANITIZE, async () => {
  const sample = Promise.withResolvers<number>();
  using _probe = startLagProbe((seconds) => sample.resolve(seconds), { intervalMs: 10 });
  const keepAlive = setInterval(() => {}, 1000); // the probe's timer is unref'd
  // Hold the loop 60 ms: the 10 ms timer cannot fire before, so it is at least 50 ms late.
  const until = performance.now() + 60;
  while (performance.now() < until) {
    // busy
  }
  const seconds = await sample.promise;
  clearInterval(keepAlive);
  assert.ok(seconds >= 0.049, `the probe saw the blocked loop: ${seconds} s`);
  assert.throws(() => startLagProbe(() => {}, { intervalMs: 0 }), RangeError);
});

Deno.test(
  "the /metrics route: GET, behind the token, text exposition 0.0.4",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    using metrics = createMetrics(engine);
    assert.equal(metrics.route.method, "GET");
    assert.equal(metrics.route.path, "/metrics");
    assert.equal(metrics.route.access, "token");
    assert.equal(EXPOSITION_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    const response = await metrics.route.handle(new Request("http://localhost/metrics"));
    assert.equal(response.headers.get("content-type"), EXPOSITION_CONTENT_TYPE);
    const text = await response.text();
    assert.match(text, /^# HELP bmdemo_/m);
    // Every family is ours, a standard process metric, or nothing.
    for (const family of parseExposition(text).types.keys()) {
      assert.match(family, /^(bmdemo_|process_(resident_memory_bytes|start_time_seconds)$)/);
    }
  },
);
