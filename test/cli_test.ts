import assert from "node:assert/strict";
import { type BmdemoServer } from "../lib/grpc/server.ts";
import { displayWidth, formatTable, shortId } from "../lib/cli/format.ts";
import { main } from "../lib/cli/main.ts";
import { parseCommandLine } from "../lib/cli/command_line.ts";
import { type CliIo, UsageError } from "../lib/cli/session.ts";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  logText,
  maintenanceServer,
  nextSubscription,
  runOperation,
  SANITIZE,
  testEngine,
  testServer,
} from "./helpers.ts";

function capture(): { out: string[]; err: string[]; io: Parameters<typeof main>[1] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (t) => void out.push(t), err: (t) => void err.push(t), env: {} } };
}

Deno.test("formatTable aligns by display width, ⚠ and ⛔ count two cells", SANITIZE, () => {
  assert.deepEqual(displayWidth("⚠ATTN"), 6);
  assert.deepEqual(displayWidth("⛔BLOCK"), 7);
  const table = formatTable(["ID", "EFFECTIVE", "X"], [["m-1", "⚠ATTN", "✓"], [
    "m-2",
    "⛔BLOCK",
    "-",
  ]]);
  assert.deepEqual(
    table,
    "ID    EFFECTIVE  X\n" +
      "m-1   ⚠ATTN     ✓\n" +
      "m-2   ⛔BLOCK    -\n",
  );
});

Deno.test("options are accepted after positionals", SANITIZE, () => {
  const parsed = parseCommandLine(["reimage", "machine-1", "--image", "u", "--server", "h:1"]);
  assert.deepEqual(parsed.command, "reimage");
  assert.deepEqual(parsed.positionals, ["machine-1"]);
  assert.deepEqual(parsed.values.image, "u");
  assert.deepEqual(parsed.values.server, "h:1");
});

Deno.test("usage errors", SANITIZE, () => {
  for (const args of [["reimage"], ["bogus"], ["list", "--image", "x"], ["cancel", "a", "b"]]) {
    let caught: unknown;
    try {
      parseCommandLine(args);
    } catch (error) {
      caught = error;
    }
    assert.ok(caught instanceof UsageError, args.join(" "));
  }
});

Deno.test("main exits 2 on usage errors and 0 on --help/--version", SANITIZE, async () => {
  for (const args of [[], ["bogus"], ["import", "0"], ["import", "x"], ["reboot"]]) {
    const c = capture();
    assert.deepEqual(await main(args, c.io), 2, args.join(" "));
    assert.match(c.err.join(""), /^error: /);
  }
  for (const args of [["--help"], ["reimage", "--help"], ["--version"]]) {
    const c = capture();
    assert.deepEqual(await main(args, c.io), 0);
  }
});

Deno.test("list abbreviations and exit codes in-process", SANITIZE, async () => {
  await using server = await testServer();
  const run = async (...args: string[]): Promise<[number, string, string]> => {
    const c = capture();
    const code = await main(["--server", server.address, ...args], c.io);
    return [code, c.out.join(""), c.err.join("")];
  };
  assert.deepEqual((await run("import", "2"))[0], 0);
  assert.deepEqual((await run("enter-maintenance", "machine-2", "--request-id", "r1"))[0], 0);
  const [code, out] = await run("list");
  assert.deepEqual(code, 0);
  assert.deepEqual(
    out,
    "MACHINE_ID   PHASE    EFFECTIVE  REACHABLE  PROVISIONED  ACTIVE_OP\n" +
      "machine-1    FACTORY  NEW        -          -            -\n" +
      "machine-2    MAINT    MAINT      -          -            -\n",
  );
  // Replay with the same request id prints the finished operation at once.
  const [replayCode, replay] = await run("enter-maintenance", "--request-id", "r1", "machine-2");
  assert.deepEqual(replayCode, 0);
  assert.match(replay, /✓ SUCCEEDED\n$/);
  const [rpcCode, , rpcErr] = await run("reimage", "machine-1");
  assert.deepEqual(rpcCode, 3);
  assert.match(rpcErr, /^rpc error: code = FailedPrecondition desc = /);
});

// --- In-process commands against a real gRPC server -------------------------------------------

/** Captured output of one CLI run, with a way to wait for a line to appear. */
interface Capture {
  io: CliIo;
  out(): string;
  err(): string;
  /** Resolves once stdout matches `pattern`. */
  waitFor(pattern: RegExp): Promise<void>;
}

function captureIo(extra: Partial<CliIo> = {}): Capture {
  let out = "";
  let err = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      if (waiter.pattern.test(out)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  return {
    io: {
      out: (text) => {
        out += text;
        check();
      },
      err: (text) => void (err += text),
      env: {},
      ...extra,
    },
    out: () => out,
    err: () => err,
    waitFor: (pattern) => {
      if (pattern.test(out)) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ pattern, resolve });
      return promise;
    },
  };
}

/** Runs the CLI against a server; returns the exit code and the captured output. */
async function runCli(
  server: BmdemoServer,
  args: string[],
  extra: Partial<CliIo> = {},
): Promise<{ code: number; out: string; err: string }> {
  const c = captureIo(extra);
  const code = await main([...args, "--server", server.address], c.io);
  return { code, out: c.out(), err: c.err() };
}

Deno.test("list -o wide and get measure text beyond ASCII by display width", SANITIZE, async () => {
  await using server = await testServer();
  for (const [machineId, rack] of [["machine-1", "ラック-1"], ["machine-2", "r2"]]) {
    server.engine.registerMachine(create(MachineSchema, {
      machineId,
      spec: { provider: "fake", rack },
      labels: { site: "東京" },
    }));
  }
  const list = await runCli(server, ["list", "-o", "wide"]);
  assert.deepEqual([list.code, list.err], [0, ""]);
  // "ラック-1" is 8 cells wide, not 5 characters: the columns after it stay aligned.
  assert.deepEqual(
    list.out,
    "MACHINE_ID   PHASE    EFFECTIVE  REACHABLE  PROVISIONED  ACTIVE_OP  PROVIDER  RACK      " +
      "LAST_SEEN  CONDITIONS\n" +
      "machine-1    FACTORY  NEW        -          -            -          fake      ラック-1  " +
      "-          -\n" +
      "machine-2    FACTORY  NEW        -          -            -          fake      r2        " +
      "-          -\n",
  );

  const get = await runCli(server, ["get", "machine-1"]);
  assert.deepEqual([get.code, get.err], [0, ""]);
  assert.match(get.out, /site=東京/);
});

Deno.test("ops lists operations oldest first, or says there are none", SANITIZE, async () => {
  await using server = await testServer();
  const empty = await runCli(server, ["ops"]);
  assert.deepEqual(empty, { code: 0, out: "No operations.\n", err: "" });

  importMachines(server.engine, 2);
  const first = await runOperation(server.engine, {
    machineId: "machine-2",
    type: OperationType.ENTER_MAINTENANCE,
  });
  const second = await runOperation(server.engine, {
    machineId: "machine-2",
    type: OperationType.REBOOT,
  });
  const { code, out, err } = await runCli(server, ["ops"]);
  assert.deepEqual([code, err], [0, ""]);
  const lines = out.trimEnd().split("\n");
  assert.deepEqual(lines.length, 3);
  // Within 80 columns: the ids are their pasteable prefix (width_test.ts has every width).
  assert.deepEqual(lines[0].split(/\s+/), [
    "OPERATION",
    "MACHINE",
    "TYPE",
    "PHASE",
    "STAGE",
    "ERROR",
  ]);
  assert.deepEqual(lines[1].split(/\s+/).slice(0, 4), [
    shortId(first.operationId),
    "machine-2",
    "ENTER_MAINTENANCE",
    "SUCCEEDED",
  ]);
  assert.deepEqual(lines[2].split(/\s+/).slice(0, 4), [
    shortId(second.operationId),
    "machine-2",
    "REBOOT",
    "SUCCEEDED",
  ]);
  assert.match(lines[1], / -$/);
  // -o wide is never limited: the whole ids.
  const wide = await runCli(server, ["ops", "-o", "wide"]);
  assert.ok(wide.out.includes(`\n${second.operationId} `), wide.out);
});

Deno.test("logs prints every line of a finished reimage and ends", SANITIZE, async () => {
  await using server = await maintenanceServer();
  const op = await runOperation(server.engine, {
    machineId: "machine-1",
    type: OperationType.REIMAGE,
  });
  assert.deepEqual(op.phase, OperationPhase.SUCCEEDED);
  const { code, out, err } = await runCli(server, ["logs", op.operationId]);
  assert.deepEqual([code, err], [0, ""]);
  const lines = out.trimEnd().split("\n");
  const expected = logText(server.engine, op.operationId);
  assert.deepEqual(lines.length, expected.length);
  for (const [i, line] of lines.entries()) {
    assert.match(line, /^\[\d\d:\d\d:\d\d\] (stdout|stderr): /);
    assert.deepEqual(line.replace(/^\[\d\d:\d\d:\d\d\] (stdout|stderr): /, ""), expected[i]);
  }
  assert.match(
    lines[0],
    new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\] stdout: === Starting operation ${op.operationId} `),
  );
  assert.match(lines.at(-1)!, /stdout: === Operation SUCCEEDED ===$/);
  assert.ok(lines.some((l) => l.endsWith("stdout: [repave] Writing image to disk...")));

  const unknown = await runCli(server, ["logs", "no-such-operation"]);
  assert.deepEqual([unknown.code, unknown.out], [3, ""]);
  assert.match(unknown.err, /^rpc error: code = NotFound desc = /);
});

Deno.test("cancel cancels a running operation, again is fine, finished is refused", {
  ...SANITIZE,
}, async () => {
  const repave = holdVerb();
  await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
  const { operation } = server.engine.startOperation({
    machineId: "machine-1",
    requestId: crypto.randomUUID(),
    type: OperationType.REIMAGE,
  });
  const id = operation.operationId;
  await repave.entered;
  const first = await runCli(server, ["cancel", id]);
  assert.deepEqual(first, {
    code: 0,
    out: `✓ Canceled operation ${id} (phase: CANCELED)\n`,
    err: "",
  });
  const again = await runCli(server, ["cancel", id]);
  assert.deepEqual(again, {
    code: 0,
    out: `✓ Canceled operation ${id} (phase: CANCELED)\n`,
    err: "",
  });
  await server.engine.executor.idle();
  assert.deepEqual(server.engine.getOperation(id).phase, OperationPhase.CANCELED);

  repave.release();
  const done = await runOperation(server.engine, {
    machineId: "machine-1",
    type: OperationType.REBOOT,
  });
  assert.deepEqual(done.phase, OperationPhase.SUCCEEDED);
  const finished = await runCli(server, ["cancel", done.operationId]);
  assert.deepEqual([finished.code, finished.out], [3, ""]);
  assert.match(finished.err, /^rpc error: code = FailedPrecondition desc = /);
});

Deno.test("an operation canceled while it runs exits 5 and marks its step", SANITIZE, async () => {
  const repave = holdVerb();
  await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
  const run = runCli(server, ["reimage", "machine-1"]);
  const call = await repave.entered;
  server.engine.cancelOperation(call.operationId);
  const { code, out, err } = await run;
  assert.deepEqual([code, err], [5, ""]);
  assert.match(out, new RegExp(`^Operation: ${call.operationId}\n`));
  assert.match(out, /→ set-netboot\.\.\. ✓\n→ reboot-to-netboot\.\.\. ✓\n/);
  assert.match(out, /→ repave-image\.\.\. ○\n/);
  assert.match(out, /○ CANCELED\n$/);
  assert.doesNotMatch(out, /join-cluster/);
  await server.engine.executor.idle();
});

Deno.test("-v prints provider log lines under the step that wrote them", SANITIZE, async () => {
  await using server = await maintenanceServer();
  for (const flag of ["-v", "--logs"]) {
    const { code, out, err } = await runCli(server, ["reimage", "machine-1", flag]);
    assert.deepEqual([code, err], [0, ""], flag);
    const lines = out.trimEnd().split("\n");
    assert.match(lines[0], /^Operation: /);
    assert.match(lines[1], /^Request ID: /);
    assert.deepEqual(lines.at(-1), "✓ SUCCEEDED");
    const steps = ["set-netboot", "reboot-to-netboot", "repave-image", "join-cluster"];
    // Lines the operation logs before its first step come first.
    let cursor = lines.indexOf("→ set-netboot...");
    assert.ok(cursor >= 2, flag);
    for (const line of lines.slice(2, cursor)) assert.match(line, /^ {2}│ /, `${flag}: ${line}`);
    for (const step of [...steps, "verify-in-cluster"]) {
      const start = lines.indexOf(`→ ${step}...`);
      const end = lines.indexOf(`  ✓ ${step}`);
      assert.deepEqual(start, cursor, `${flag} ${step} starts right after the previous step`);
      assert.ok(end > start + 1, `${flag} ${step} has log lines`);
      for (const line of lines.slice(start + 1, end)) {
        assert.match(line, /^ {2}│!? \S/, `${flag} ${step}: ${line}`);
      }
      if (step === "repave-image") {
        assert.ok(lines.slice(start + 1, end).includes("  │ [repave] Writing image to disk..."));
      }
      cursor = end + 1;
    }
    assert.deepEqual(cursor, lines.length - 1, flag);
  }
});

Deno.test("Ctrl+C leaves the operation running and says how to follow it", SANITIZE, async () => {
  const repave = holdVerb();
  await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
  const interrupt = new AbortController();
  const run = runCli(server, ["reimage", "machine-1"], { interrupt: interrupt.signal });
  const call = await repave.entered;
  interrupt.abort();
  const { code, out, err } = await run;
  const id = call.operationId;
  assert.deepEqual(code, 130);
  assert.match(out, new RegExp(`^Operation: ${id}\n`));
  assert.match(err, new RegExp(`Interrupted: operation ${id} continues on the server`));
  assert.ok(err.includes(`wait for it: bmdemo-cli --server ${server.address} wait ${id}\n`), err);
  assert.ok(err.includes(`bmdemo-cli --server ${server.address} logs ${id}\n`), err);
  assert.ok(err.includes(`bmdemo-cli --server ${server.address} cancel ${id}\n`), err);
  assert.deepEqual(server.engine.getOperation(id).phase, OperationPhase.RUNNING);
  repave.release();
  await server.engine.executor.idle();
  assert.deepEqual(server.engine.getOperation(id).phase, OperationPhase.SUCCEEDED);
});

Deno.test("watch prints events until interrupted", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 2);
  const interrupt = new AbortController();
  const c = captureIo({ interrupt: interrupt.signal });
  const watching = nextSubscription(server.engine);
  const run = main(["watch", "machine-1", "--server", server.address], c.io);
  await watching;
  await enterMaintenance(server.engine, "machine-2");
  await enterMaintenance(server.engine, "machine-1");
  await c.waitFor(/\| machine-1 \| .* \| Operation succeeded\n/);
  interrupt.abort();
  assert.deepEqual(await run, 0);
  assert.deepEqual(c.err(), "");
  const out = c.out();
  assert.match(out, /^Watching operation events/);
  assert.match(out, /\nStopped watching\.\n$/);
  assert.doesNotMatch(out, /machine-2/);
  const events = out.split("\n").filter((l) => l.includes("| machine-1 |"));
  assert.deepEqual(events.map((l) => l.split(" | ").at(-1)), [
    "Operation created",
    "Operation started",
    "Operation succeeded",
  ]);
  for (const line of events) {
    assert.match(line, /^\[\d\d:\d\d:\d\d\] \S+ \| machine-1 \| [A-Z]+ \| stage=\S+ \| /);
  }
});

Deno.test("tour runs to completion without pauses", SANITIZE, async () => {
  await using server = await testServer();
  const { code, out, err } = await runCli(server, ["tour"]);
  assert.deepEqual([code, err], [0, ""]);
  let cursor = 0;
  for (
    const title of [
      "Phase vs Effective State",
      "Step 1: Import Machines",
      "Step 2: Enter Maintenance Mode",
      "Step 3: Reimage",
      "Step 4: Exit Maintenance",
      "Step 5: Idempotency",
      "Step 6: A Simple Reboot",
      "Step 7: Cancellation",
      "Step 8: When Hardware Fails",
      "Step 9: Operation History",
      "Demo Complete",
    ]
  ) {
    const at = out.indexOf(`\n${title}`, cursor);
    assert.ok(at > cursor, title);
    cursor = at;
  }
  // A server without --fault: the reimage of machine-4 succeeds, and the tour says so.
  assert.match(out, /This server has no fault on machine-4, so the reimage succeeded/);
  assert.doesNotMatch(out, /machine-4 is in ATTENTION/);
  assert.ok(
    out.includes("○ CANCELED") || out.includes("completed before we could cancel"),
    out,
  );
  assert.match(out, /\$ bmdemo-cli reimage machine-1 -v\n/);
  await server.engine.executor.idle();
});

Deno.test("demo runs on a server whose demo-1 is already in maintenance", SANITIZE, async () => {
  const engine = testEngine();
  engine.registerMachine(
    create(MachineSchema, { machineId: "demo-1", spec: { provider: "fake" } }),
  );
  await enterMaintenance(engine, "demo-1");
  await using server = await testServer({ engine });
  const { code, out, err } = await runCli(server, ["demo"]);
  assert.deepEqual([code, err], [0, ""]);
  const stepLines = out.split("\n").filter((l) => l.startsWith("  step: "));
  assert.deepEqual(stepLines, [
    "  step: set-netboot",
    "  step: reboot-to-netboot",
    "  step: repave-image",
    "  step: join-cluster",
    "  step: verify-in-cluster",
  ]);
  assert.match(out, /Expected error: rpc error: code = FailedPrecondition desc = /);
  assert.match(out, /\*Demo complete\./);
  assert.doesNotMatch(out, /result: (FAILED|CANCELED|INTERRUPTED)/);
});

Deno.test("main: unknown command and missing machine id exit 2 with usage", SANITIZE, async () => {
  const unknown = captureIo();
  assert.deepEqual(await main(["frobnicate"], unknown.io), 2);
  assert.deepEqual(unknown.out(), "");
  assert.match(unknown.err(), /^error: unknown command: frobnicate\n/);
  assert.ok(unknown.err().includes("Usage: bmdemo-cli <command> [args] [options]"));
  assert.ok(!unknown.err().includes("Commands:"));

  const missing = captureIo();
  assert.deepEqual(await main(["reimage"], missing.io), 2);
  assert.deepEqual(missing.out(), "");
  assert.match(missing.err(), /^error: missing <machine-id>\n\n/);
  assert.ok(missing.err().includes("Usage: bmdemo-cli reimage <machine-id>"));
});
