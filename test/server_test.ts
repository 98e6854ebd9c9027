import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  MachineSchema,
  MachineService,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { Code, connectClient, ConnectError, errorInfo, statusName } from "../lib/client/mod.ts";
import { SNAPSHOT_COMPLETE } from "../lib/engine/mod.ts";
import { denoVersionWarning } from "../lib/grpc/server.ts";
import { maintenanceOverGrpc, rejectsWithCode, SANITIZE, testServer } from "./helpers.ts";
import { TIMINGS } from "../lib/provider/fake_timing.ts";
import { runServer, SERVER_V8_FLAGS, spawnServer } from "../scripts/server_process.ts";
import { SIGNAL_ECHO_MS, stopSignalPolicy } from "../lib/runtime/stop_signals.ts";

/** The status name, ErrorInfo reason and details `run` fails with. */
async function failure(
  run: () => Promise<unknown>,
): Promise<{ code: string; reason?: string; details: string }> {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return {
      code: statusName(error.code),
      reason: errorInfo(error)?.reason,
      details: error.rawMessage,
    };
  }
  throw new Error("expected the call to fail");
}

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
      [["--max-watchers", "0"], /--max-watchers must be a whole number of at least 1: got "0"/],
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
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);
    await maintenanceOverGrpc(machines, operations, "machine-1");
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
  using client = connectClient(MachineService, server.address);
  await client.registerMachine({ machine: create(MachineSchema, { machineId: "machine-1" }) });
  await rejectsWithCode(client.getMachine({ machineId: "nope" }), Code.NotFound);
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
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);
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
    // The open watch stream ends instead of holding the server open, with UNAVAILABLE and
    // SHUTTING_DOWN: a client reconnects (CANCELLED or OK would tell it the watch is over).
    const ended = await failure(async () => {
      for (let r = await events.next(); !r.done; r = await events.next()) { /* drain */ }
    });
    assert.deepEqual([ended.code, ended.reason], ["UNAVAILABLE", "SHUTTING_DOWN"], ended.details);
    const status = await stopping;
    assert.equal(status.code, 0, server.stderr());
    assert.match(
      server.stderr(),
      new RegExp(`${reimage.operationId} machine-1 REIMAGE CANCELED: Operation canceled`),
    );
  },
);

Deno.test(
  "server.ts --max-watchers caps the open watch and log streams, naming the flag",
  SANITIZE,
  async () => {
    await using server = await spawnServer(["--max-watchers", "1", "--log-level", "warn"]);
    using first = connectClient(OperationService, server.address);
    using second = connectClient(OperationService, server.address);
    const open = first.watchOperations({ sendInitialSnapshot: true });
    assert.equal((await open.next()).value.message, SNAPSHOT_COMPLETE);
    const refused = await failure(() => second.watchOperations({}).next());
    assert.deepEqual([refused.code, refused.reason], ["RESOURCE_EXHAUSTED", "TOO_MANY_WATCHERS"]);
    assert.match(refused.details, /--max-watchers \(now 1\)/);
    await open.return?.();
  },
);

Deno.test(
  "server.ts holds back a watch stream whose client stopped reading, and says so at debug level",
  SANITIZE,
  async () => {
    // Deno 2.9.3's node:http2 takes every write whatever HTTP/2 flow control allows: without the
    // server's own stall detection a watcher that stops reading pins all it is sent.
    await using server = await spawnServer(["--log-level", "debug"]);
    using machines = connectClient(MachineService, server.address);
    using stalledClient = connectClient(OperationService, server.address);
    const count = 100;
    for (let i = 1; i <= count; i++) {
      await machines.registerMachine({
        machine: create(MachineSchema, { machineId: `machine-${i}` }),
      });
    }
    const stalled = stalledClient.watchOperations({ sendInitialSnapshot: true });
    assert.equal((await stalled.next()).value.message, SNAPSHOT_COMPLETE);
    // Well over the client's 1 MiB stream window plus the server's 64 KiB budget (~200 bytes an
    // event, 6 events a machine per round).
    const line = /WatchOperations: the client stopped reading; holding its stream/;
    for (let round = 0; round < 20 && !line.test(server.stderr()); round++) {
      await Promise.all(Array.from({ length: count }, async (_, i) => {
        const machineId = `machine-${i + 1}`;
        await machines.enterMaintenance({ machineId, requestId: `enter-${round}` });
        for (;;) {
          try {
            return await machines.exitMaintenance({ machineId, requestId: `exit-${round}` });
          } catch (error) {
            // The enter-maintenance may still run (zero work, but asynchronous): try again.
            if (!(error instanceof ConnectError) || errorInfo(error)?.reason !== "MACHINE_BUSY") {
              throw error;
            }
          }
        }
      }));
    }
    assert.match(server.stderr(), line);
    await stalled.return?.();
  },
);

Deno.test(
  "connectClient() starts a stream when it is called, before it is read",
  SANITIZE,
  async () => {
    await using server = await testServer();
    using machines = connectClient(MachineService, server.address);
    using operations = connectClient(OperationService, server.address);
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
  "connectClient() stream return() ends a stream that was never read",
  SANITIZE,
  async () => {
    await using server = await testServer();
    using operations = connectClient(OperationService, server.address);
    await operations.listOperations({}); // connected, so closing leaves no connection timers
    const events = operations.watchOperations({});
    await events.return?.();
    const done = await events.next();
    assert.equal(done.done, true);
  },
);

Deno.test("denoVersionWarning() names the crashing Deno releases and the fix", SANITIZE, () => {
  for (const version of ["2.9.4", "2.9.5", "2.9.6"]) {
    assert.match(denoVersionWarning(version) ?? "", /aborts in node:http2.*Deno 2\.9\.3/);
  }
  assert.equal(denoVersionWarning("2.9.3"), undefined);
  assert.equal(denoVersionWarning(Deno.version.deno), undefined, "the pinned Deno runs the tests");
});

Deno.test("the server runs with the same V8 flags however it is started", SANITIZE, async () => {
  const flag = `--v8-flags=${SERVER_V8_FLAGS.join(",")}`;
  const root = new URL("../", import.meta.url);
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  assert.ok(config.tasks.server.includes(` ${flag} `), `deno task server lacks ${flag}`);
  const script = await Deno.readTextFile(new URL("scripts/run-bmdemo.sh", root));
  assert.ok(script.includes(` ${flag} server.ts`), `run-bmdemo.sh lacks ${flag}`);
  const build = await Deno.readTextFile(new URL("scripts/build.ts", root));
  assert.match(build, /--v8-flags=\$\{SERVER_V8_FLAGS\.join\(","\)\}/);
});

Deno.test(
  "one Ctrl+C on `deno task server` stops it gracefully with exit 0",
  SANITIZE,
  async () => {
    // The terminal signals the whole process group (deno task and the server) and deno task
    // forwards its copy too: the server gets SIGINT twice, microseconds apart. Whether the two
    // copies are read as one depends on timing, so a few runs make the double delivery sure.
    for (let run = 0; run < 5; run++) {
      await using server = await spawnServer([], { task: true });
      const status = await server.stop("SIGINT");
      assert.equal(status.code, 0, `run ${run}: ${server.stderr()}`);
      assert.match(server.stderr(), /Received SIGINT; shutting down/);
      assert.doesNotMatch(server.stderr(), /Second SIGINT/);
    }
  },
);

Deno.test(
  "stopSignalPolicy: the first signal stops, a repeat within 1 s is an echo, a later one forces",
  SANITIZE,
  () => {
    let now = 100;
    const next = stopSignalPolicy({ now: () => now });
    assert.equal(next(), "stop");
    assert.equal(next(), "echo");
    now += SIGNAL_ECHO_MS - 1;
    assert.equal(next(), "echo");
    now += 1;
    assert.equal(next(), "force");
  },
);

Deno.test(
  "a second server on a used port says so in one line naming --port, exit 1",
  SANITIZE,
  async () => {
    await using first = await spawnServer();
    const port = first.address.slice(first.address.lastIndexOf(":") + 1);
    const second = await runServer(["--port", port]);
    assert.equal(second.code, 1);
    const lines = second.stderr.trim().split("\n");
    const error = lines.filter((line) => !line.includes("[INF]"));
    assert.equal(error.length, 1, second.stderr);
    assert.match(error[0], new RegExp(`port ${port} is in use.*--port`));
    assert.doesNotMatch(second.stderr, /No address added|EADDRINUSE/);
  },
);

Deno.test(
  "server.ts --version and cli.ts --version print deno.json's version",
  SANITIZE,
  async () => {
    const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
    assert.match(config.version, /^\d+\.\d+\.\d+/);
    const server = await runServer(["--version"]);
    assert.equal(server.code, 0, server.stderr);
    assert.equal(server.stdout, `bmdemo-server ${config.version}\n`);
    const { VERSION } = await import("../lib/cli/main.ts");
    assert.equal(VERSION, config.version);
  },
);
