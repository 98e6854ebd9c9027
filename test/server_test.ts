import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  MachineSchema,
  MachineService,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { createClient } from "../lib/grpc/client.ts";
import { SNAPSHOT_COMPLETE } from "../lib/engine.ts";
import { denoVersionWarning, startServer } from "../lib/grpc/server.ts";
import { SANITIZE, testEngine } from "./helpers.ts";
import { TIMINGS } from "../lib/fake_provider.ts";
import { runServer, SERVER_V8_FLAGS, spawnServer } from "../scripts/server_process.ts";

Deno.test("server.ts --help prints the flags and exits 0", SANITIZE, async () => {
  const { code, stdout } = await runServer(["--help"]);
  assert.equal(code, 0);
  for (const flag of ["--port", "--host", "--timing", "--slow", "--log-level", "--help"]) {
    assert.ok(stdout.includes(flag), flag);
  }
});

Deno.test("server.ts refuses bad flags with exit code 2 and says why", SANITIZE, async (t) => {
  for (
    const [args, pattern] of [
      [["--port", "http"], /--port must be a whole number/],
      [["--log-level", "loud"], /--log-level must be one of debug, info, warn, error/],
      [["--colour"], /Unknown option '--colour'/],
      [["--timing", "fast"], /--timing must be one of normal, slow, zero: got "fast"/],
      [["--slow", "--timing", "zero"], /--slow is --timing slow; it contradicts --timing zero/],
    ] as const
  ) {
    await t.step(args.join(" "), async () => {
      const { code, stderr } = await runServer([...args]);
      assert.equal(code, 2);
      assert.match(stderr, pattern);
    });
  }
});

Deno.test(
  "server.ts --timing zero runs the provider without delays; --slow is --timing slow",
  SANITIZE,
  async () => {
    await using server = await spawnServer(["--timing", "zero"]);
    using machines = createClient(MachineService, server.address);
    using operations = createClient(OperationService, server.address);
    await machines.registerMachine({ machine: create(MachineSchema, { machineId: "machine-1" }) });
    const enter = await machines.enterMaintenance({ machineId: "machine-1", requestId: "e" });
    for await (const _ of operations.streamOperationLogs({ operationId: enter.operationId })) {
      // The log stream ends when the operation does.
    }
    const reimage = await machines.reimageMachine({ machineId: "machine-1", requestId: "r" });
    for await (const _ of operations.streamOperationLogs({ operationId: reimage.operationId })) {
      // Idem.
    }
    const done = await operations.getOperation({ operationId: reimage.operationId });
    assert.equal(done.phase, OperationPhase.SUCCEEDED);
    // With the normal profile setTimeout alone makes a reimage last at least its simulated work
    // (timers never fire early); zero timing has no timer at all.
    const spanMs = Number(timestampMs(done.finishedAt!) - timestampMs(done.createdAt!));
    const { netbootMs, rebootMs, repaveMs, mintJoinMs, joinNodeMs, verifyMs } = TIMINGS.normal;
    const normalMs = netbootMs + rebootMs + repaveMs + mintJoinMs + joinNodeMs + verifyMs;
    assert.ok(spanMs < normalMs, `a zero-timing reimage took ${spanMs} ms`);
    // Logs are written in batches: stopping flushes them.
    await server.stop();
    assert.match(server.stderr(), /Using zero simulated hardware timing/);

    // spawnServer passes SERVER_V8_FLAGS, as `deno task server` does.
    assert.match(server.stderr(), /Heap collector on/);

    await using slow = await spawnServer(["--slow"]);
    await slow.stop();
    assert.match(slow.stderr(), /Using slow simulated hardware timing/);
  },
);

Deno.test("server.ts logs every RPC at debug level", SANITIZE, async () => {
  await using server = await spawnServer(["--log-level", "debug"]);
  using client = createClient(MachineService, server.address);
  await client.registerMachine({ machine: create(MachineSchema, { machineId: "machine-1" }) });
  await assert.rejects(client.getMachine({ machineId: "nope" }));
  const status = await server.stop();
  assert.equal(status.code, 0);
  assert.match(server.stderr(), /RegisterMachine OK in/);
  assert.match(server.stderr(), /GetMachine NOT_FOUND in .*machine "nope" not found/);
});

Deno.test(
  "server.ts stops on SIGTERM: ends streams, cancels operations, exits 0",
  SANITIZE,
  async () => {
    await using server = await spawnServer(["--slow"]);
    using machines = createClient(MachineService, server.address);
    using operations = createClient(OperationService, server.address);
    await machines.registerMachine({ machine: create(MachineSchema, { machineId: "machine-1" }) });
    const enter = await machines.enterMaintenance({ machineId: "machine-1", requestId: "e" });
    // Wait for the enter-maintenance to finish, through the watch stream.
    const events = operations.watchOperations({ filter: "machine_id=machine-1" })[
      Symbol.asyncIterator
    ]();
    const reimage = await machines.reimageMachine({ machineId: "machine-1", requestId: "r" });
    for (;;) {
      const { value } = await events.next();
      if (
        value?.snapshot?.operationId === reimage.operationId && value.message.startsWith("Step")
      ) {
        break;
      }
    }
    assert.ok(enter.operationId);
    const stopping = server.stop("SIGTERM");
    // The open watch stream ends (OK or an error status) instead of holding the server open.
    let ended = false;
    try {
      for (let r = await events.next(); !r.done; r = await events.next()) { /* drain */ }
      ended = true;
    } catch {
      ended = true;
    }
    assert.ok(ended);
    const status = await stopping;
    assert.equal(status.code, 0, server.stderr());
    assert.match(
      server.stderr(),
      new RegExp(`${reimage.operationId} machine-1 REIMAGE CANCELED: Operation canceled`),
    );
  },
);

Deno.test(
  "createClient() starts a stream when it is called, before it is read",
  SANITIZE,
  async () => {
    await using server = await startServer({ port: 0, engine: testEngine() });
    using machines = createClient(MachineService, server.address);
    using operations = createClient(OperationService, server.address);
    await machines.registerMachine({ machine: create(MachineSchema, { machineId: "machine-1" }) });
    const events = operations.watchOperations({ sendInitialSnapshot: true });
    // Reading the marker proves the server registered the watch; only then act.
    assert.equal((await events.next()).value.message, SNAPSHOT_COMPLETE);
    const op = await machines.enterMaintenance({ machineId: "machine-1", requestId: "r" });
    const first = await events.next();
    assert.deepEqual(
      [first.value.message, first.value.snapshot?.operationId],
      ["Operation created", op.operationId],
    );
    await events.return?.();
  },
);

Deno.test(
  "createClient() stream return() ends a stream that was never read",
  SANITIZE,
  async () => {
    await using server = await startServer({ port: 0, engine: testEngine() });
    using operations = createClient(OperationService, server.address);
    await operations.listOperations({}); // connected, so closing leaves no connection timers
    const events = operations.watchOperations({});
    await events.return?.();
    const done = await events.next();
    assert.equal(done.done, true);
  },
);

Deno.test("denoVersionWarning() names the crashing Deno releases and the fix", () => {
  for (const version of ["2.9.4", "2.9.5", "2.9.6"]) {
    assert.match(denoVersionWarning(version) ?? "", /aborts in node:http2.*Deno 2\.9\.3/);
  }
  assert.equal(denoVersionWarning("2.9.3"), undefined);
  assert.equal(denoVersionWarning(Deno.version.deno), undefined, "the pinned Deno runs the tests");
});

Deno.test("the server runs with the same V8 flags however it is started", async () => {
  const flag = `--v8-flags=${SERVER_V8_FLAGS.join(",")}`;
  const root = new URL("../", import.meta.url);
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  assert.ok(config.tasks.server.includes(` ${flag} `), `deno task server lacks ${flag}`);
  const script = await Deno.readTextFile(new URL("scripts/run-bmdemo.sh", root));
  assert.ok(script.includes(` ${flag} server.ts`), `run-bmdemo.sh lacks ${flag}`);
  const build = await Deno.readTextFile(new URL("scripts/build.ts", root));
  assert.match(build, /--v8-flags=\$\{SERVER_V8_FLAGS\.join\(","\)\}/);
});
