/**
 * The CLI's output formats, get/op/wait, --no-wait/--timeout, filters and paging, hints,
 * completion scripts and the bearer token, in-process against a real gRPC server.
 *
 * @module
 */

import assert from "node:assert/strict";
import { equals, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { parse as yamlParse } from "yaml";
import { type BmdemoServer, startServer } from "../lib/grpc/server.ts";
import { main } from "../lib/cli/main.ts";
import type { CliIo } from "../lib/cli/session.ts";
import { parseDuration } from "../lib/cli/output.ts";
import {
  MachineSchema,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  maintenanceServer,
  nextSubscription,
  runOperation,
  SANITIZE,
  testEngine,
  testServer,
} from "./helpers.ts";

interface Run {
  code: number;
  out: string;
  err: string;
}

async function runCli(server: BmdemoServer, args: string[], extra: Partial<CliIo> = {}) {
  let out = "";
  let err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: {},
    ...extra,
  };
  const code = await main([...args, "--server", server.address], io);
  return { code, out, err } satisfies Run;
}

Deno.test(
  "JSON and YAML of list, ops, get, op round-trip to the same messages",
  SANITIZE,
  async () => {
    await using server = await testServer();
    importMachines(server.engine, 3);
    await enterMaintenance(server.engine, "machine-2");
    await runOperation(server.engine, { machineId: "machine-2", type: OperationType.REIMAGE });

    const list = await runCli(server, ["list", "-o", "json"]);
    assert.deepEqual([list.code, list.err], [0, ""]);
    const listJson = JSON.parse(list.out) as JsonValue[];
    assert.ok(Array.isArray(listJson));
    assert.deepEqual(listJson.length, 3);
    assert.ok(list.out.startsWith("[\n  {"), "pretty-printed with 2 spaces");
    for (const value of listJson) {
      const machine = fromJson(MachineSchema, value);
      const got = await runCli(server, ["get", machine.machineId, "--output", "json"]);
      assert.deepEqual(got.code, 0);
      const single = fromJson(MachineSchema, JSON.parse(got.out));
      assert.ok(equals(MachineSchema, machine, single), machine.machineId);
    }
    const listYaml = await runCli(server, ["list", "-o", "yaml"]);
    assert.deepEqual(listYaml.code, 0);
    assert.deepEqual(yamlParse(listYaml.out), listJson);
    // False booleans are written, so `jq '.status'` on a false condition gives false, not null.
    const reimaged = JSON.parse((await runCli(server, ["get", "machine-2", "-o", "json"])).out);
    const needs = reimaged.status.conditions.find((c: { type: string }) =>
      c.type === "NeedsIntervention"
    );
    assert.deepEqual(needs.status, false, JSON.stringify(needs));
    const reimagedYaml = yamlParse((await runCli(server, ["get", "machine-2", "-o", "yaml"])).out);
    assert.deepEqual(reimagedYaml, reimaged);

    const ops = await runCli(server, ["ops", "-o", "json"]);
    assert.deepEqual(ops.code, 0);
    const opsJson = JSON.parse(ops.out) as JsonValue[];
    assert.deepEqual(opsJson.length, 2);
    for (const value of opsJson) {
      const op = fromJson(OperationSchema, value);
      assert.ok(equals(OperationSchema, op, server.engine.getOperation(op.operationId)));
      const one = await runCli(server, ["op", op.operationId, "-o", "json"]);
      assert.ok(equals(OperationSchema, op, fromJson(OperationSchema, JSON.parse(one.out))));
      const yaml = await runCli(server, ["op", op.operationId, "-o", "yaml"]);
      assert.deepEqual(yamlParse(yaml.out), JSON.parse(one.out));
    }
    const opsYaml = await runCli(server, ["ops", "-o", "yaml"]);
    assert.deepEqual(yamlParse(opsYaml.out), opsJson);

    // The readable layouts.
    const wide = await runCli(server, ["list", "-o", "wide"]);
    assert.match(wide.out.split("\n")[0], /PROVIDER\s+RACK\s+LAST_SEEN\s+CONDITIONS$/);
    const opsWide = await runCli(server, ["ops", "-o", "wide"]);
    assert.match(opsWide.out.split("\n")[0], /REQUEST_ID\s+CREATED\s+DURATION$/);
    // Wide enough for every column of the conditions (80 drops LAST_TRANSITION: width_test.ts).
    const get = await runCli(server, ["get", "machine-2", "--width", "120"]);
    assert.match(get.out, /^Machine: +machine-2\nPhase: +MAINTENANCE\n/);
    assert.match(get.out, /\nSpec:\n {2}Provider: +fake\n/);
    assert.match(get.out, /\nLabels:\n {2}role=worker\n/);
    assert.match(get.out, /\nConditions:\n {2}TYPE +STATUS +REASON +LAST_TRANSITION +MESSAGE\n/);
    assert.match(get.out, /\n {2}Provisioned +True +ReimageComplete +\d{4}-\d\d-\d\dT/);
    const op = await runCli(server, ["op", fromJson(OperationSchema, opsJson[1]).operationId]);
    assert.match(op.out, /\nType: +REIMAGE\nPhase: +SUCCEEDED\n/);
    assert.match(op.out, /\nParams: +image_ref=/);

    const bad = await runCli(server, ["list", "-o", "xml"]);
    assert.deepEqual(bad.code, 2);
    assert.match(bad.err, /^error: invalid output format: xml/);
  },
);

Deno.test("watch -o json prints one parseable event per line", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  const interrupt = new AbortController();
  let out = "";
  const seen = Promise.withResolvers<void>();
  const io: CliIo = {
    out: (t) => {
      out += t;
      if (out.includes("Operation succeeded")) seen.resolve();
    },
    err: () => {},
    env: {},
    interrupt: interrupt.signal,
  };
  const started = nextSubscription(server.engine);
  const run = main(["watch", "machine-1", "-o", "json", "--server", server.address], io);
  await started;
  await enterMaintenance(server.engine, "machine-1");
  await seen.promise;
  interrupt.abort();
  assert.deepEqual(await run, 0);
  const lines = out.trimEnd().split("\n");
  const events = lines.map((l) => JSON.parse(l));
  assert.ok(events.every((e) => e.kind !== "SNAPSHOT_COMPLETE"));
  assert.ok(events.some((e) => e.snapshot?.machineId === "machine-1"));
  for (const line of lines) assert.doesNotMatch(line, /\n/);
  // Default values are written, so a field a script reads is never missing.
  const created = events.find((e) => e.kind === "CREATED");
  assert.deepEqual([created.stepIndex, created.snapshot.currentStage], [0, ""]);
});

Deno.test("wait exits 0, 4, 5 and 6 (timeout) like an operation command", SANITIZE, async () => {
  // SUCCEEDED, also when already finished.
  {
    const repave = holdVerb();
    await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
    const { operation } = server.engine.startOperation({
      machineId: "machine-1",
      requestId: crypto.randomUUID(),
      type: OperationType.REIMAGE,
    });
    await repave.entered;
    const following = nextSubscription(server.engine);
    const waiting = runCli(server, ["wait", operation.operationId]);
    // Released only once wait is following, so the live path is what this checks.
    await following;
    repave.release();
    const done = await waiting;
    assert.deepEqual([done.code, done.err], [0, ""]);
    assert.match(done.out, new RegExp(`^Operation: ${operation.operationId}\n`));
    assert.match(done.out, /✓ SUCCEEDED\n$/);
    const again = await runCli(server, ["wait", operation.operationId]);
    assert.deepEqual(again.code, 0);
    const unknown = await runCli(server, ["wait", "op-nope"]);
    assert.deepEqual(unknown.code, 3);
  }
  // FAILED.
  {
    await using server = await maintenanceServer({ faults: { reboot: { kind: "fail" } } });
    const op = await runOperation(server.engine, {
      machineId: "machine-1",
      type: OperationType.REBOOT,
    });
    assert.deepEqual(op.phase, OperationPhase.FAILED);
    const failed = await runCli(server, ["wait", op.operationId]);
    assert.deepEqual(failed.code, 4);
    assert.match(failed.out, /✗ FAILED: /);
  }
  // CANCELED while waiting, then a timeout on a held operation.
  {
    const repave = holdVerb();
    await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
    const { operation } = server.engine.startOperation({
      machineId: "machine-1",
      requestId: crypto.randomUUID(),
      type: OperationType.REIMAGE,
    });
    await repave.entered;
    const timedOut = await runCli(server, ["wait", operation.operationId, "--timeout", "50ms"]);
    assert.deepEqual(timedOut.code, 6);
    assert.match(timedOut.err, /Timed out after 50ms: operation .* continues on the server/);
    assert.ok(timedOut.err.includes(`cancel ${operation.operationId}`));
    assert.deepEqual(
      server.engine.getOperation(operation.operationId).phase,
      OperationPhase.RUNNING,
    );

    const following = nextSubscription(server.engine);
    const waiting = runCli(server, ["wait", operation.operationId]);
    await following;
    server.engine.cancelOperation(operation.operationId);
    const canceled = await waiting;
    assert.deepEqual(canceled.code, 5);
    assert.match(canceled.out, /○ CANCELED\n$/);
    repave.release();
    await server.engine.executor.idle();
  }
});

Deno.test(
  "--no-wait returns at once; --timeout stops following an operation",
  SANITIZE,
  async () => {
    const repave = holdVerb();
    await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
    const noWait = await runCli(server, ["reimage", "machine-1", "--no-wait"]);
    assert.deepEqual([noWait.code, noWait.err], [0, ""]);
    const [opLine, requestLine, phaseLine] = noWait.out.trimEnd().split("\n");
    const id = /^Operation: (op-\S+)$/.exec(opLine)?.[1];
    assert.ok(id, noWait.out);
    assert.match(requestLine, /^Request ID: \S+$/);
    assert.match(phaseLine, /^Phase: (PENDING|RUNNING)$/);
    await repave.entered;
    assert.deepEqual(server.engine.getOperation(id).phase, OperationPhase.RUNNING);

    // The machine is busy: the hint names the active operation.
    const busy = await runCli(server, ["reboot", "machine-1"]);
    assert.deepEqual(busy.code, 3);
    assert.ok(
      busy.err.endsWith(
        `hint: wait with bmdemo-cli wait ${id}, or cancel it with bmdemo-cli cancel ${id}\n`,
      ),
      busy.err,
    );
    server.engine.cancelOperation(id);
    await server.engine.executor.idle();

    const timed = await runCli(server, ["reimage", "machine-1", "--timeout", "50ms"]);
    assert.deepEqual(timed.code, 6);
    assert.match(timed.out, /^Operation: op-/);
    assert.match(timed.err, /Timed out after 50ms: operation op-\S+ continues on the server/);
    for (const bad of ["5", "abc", "1d", "0s"]) {
      const usage = await runCli(server, ["reimage", "machine-1", "--timeout", bad]);
      assert.deepEqual(usage.code, 2, bad);
      assert.match(usage.err, /^error: invalid duration/);
    }
    repave.release();
    await server.engine.executor.idle();
  },
);

Deno.test("durations", SANITIZE, () => {
  assert.deepEqual(
    ["90s", "5m", "1h", "500ms", "1.5s"].map((d) => parseDuration(d)),
    [90_000, 300_000, 3_600_000, 500, 1500],
  );
});

Deno.test("--filter and --page-size read every page; a bad filter exits 3", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 5);
  await enterMaintenance(server.engine, "machine-2");
  await enterMaintenance(server.engine, "machine-4");
  const all = await runCli(server, ["list", "--page-size", "2", "-o", "json"]);
  assert.deepEqual(all.code, 0);
  assert.deepEqual(
    JSON.parse(all.out).map((m: { machineId: string }) => m.machineId),
    ["machine-1", "machine-2", "machine-3", "machine-4", "machine-5"],
  );
  const table = await runCli(server, ["list", "--page-size", "2"]);
  assert.deepEqual(table.out.trimEnd().split("\n").length, 6);
  const maint = await runCli(server, ["list", "--filter", "phase=MAINTENANCE", "--page-size", "1"]);
  assert.deepEqual(maint.code, 0);
  assert.deepEqual(maint.out.trimEnd().split("\n").slice(1).map((l) => l.split(/\s+/)[0]), [
    "machine-2",
    "machine-4",
  ]);
  const ops = await runCli(server, ["ops", "--filter", "machine_id=machine-4", "-o", "json"]);
  assert.deepEqual(JSON.parse(ops.out).length, 1);
  const opsPaged = await runCli(server, ["ops", "--page-size", "1", "-o", "json"]);
  assert.deepEqual(JSON.parse(opsPaged.out).length, 2);

  const bad = await runCli(server, ["list", "--filter", "colour=blue"]);
  assert.deepEqual([bad.code, bad.out], [3, ""]);
  assert.match(
    bad.err,
    /^rpc error: code = InvalidArgument desc = Cannot parse filter "colour=blue"/,
  );
  const badSize = await runCli(server, ["list", "--page-size", "x"]);
  assert.deepEqual(badSize.code, 2);
});

Deno.test("hints follow rpc errors", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  const reimage = await runCli(server, ["reimage", "machine-1"]);
  assert.deepEqual(reimage.code, 3);
  const lines = reimage.err.trimEnd().split("\n");
  assert.match(lines[0], /^rpc error: code = FailedPrecondition/);
  assert.deepEqual(lines[1], "hint: run bmdemo-cli enter-maintenance machine-1 first");
  const missing = await runCli(server, ["get", "machine-9"]);
  assert.match(missing.err, /\nhint: bmdemo-cli list shows the registered machines\n$/);
  await runCli(server, ["enter-maintenance", "machine-1", "--request-id", "r-1"]);
  const reused = await runCli(server, ["reboot", "machine-1", "--request-id", "r-1"]);
  assert.match(reused.err, /\nhint: omit --request-id to use a fresh one\n$/);
  const op = await runOperation(server.engine, {
    machineId: "machine-1",
    type: OperationType.REBOOT,
  });
  const finished = await runCli(server, ["cancel", op.operationId]);
  assert.ok(finished.err.endsWith(`hint: bmdemo-cli op ${op.operationId} shows how it ended\n`));
});

Deno.test(
  "completion scripts cover the commands; bash -n accepts the bash one",
  SANITIZE,
  async () => {
    for (const shell of ["bash", "zsh", "fish"]) {
      let out = "";
      const code = await main(["completion", shell], {
        out: (t) => void (out += t),
        err: () => {},
      });
      assert.deepEqual(code, 0);
      for (
        const word of ["wait", "get", "completion", "--output", "--filter", "--no-wait", "--token"]
      ) {
        assert.ok(
          out.includes(word.replace(/^--/, shell === "fish" ? "-l " : "--")),
          `${shell}: ${word}`,
        );
      }
      const checker = shell === "fish" ? ["fish", "--no-execute"] : [shell, "-n"];
      const file = await Deno.makeTempFile({ suffix: `.${shell}` });
      try {
        await Deno.writeTextFile(file, out);
        let result: Deno.CommandOutput;
        try {
          result = await new Deno.Command(checker[0], { args: [...checker.slice(1), file] })
            .output();
        } catch (error) {
          if (shell !== "bash" && error instanceof Deno.errors.NotFound) continue; // not installed
          throw error;
        }
        assert.deepEqual(result.code, 0, `${shell}: ${new TextDecoder().decode(result.stderr)}`);
      } finally {
        await Deno.remove(file);
      }
    }
    const bad = await main(["completion", "tcsh"], { out: () => {}, err: () => {} });
    assert.deepEqual(bad, 2);
  },
);

Deno.test(
  "__complete lists ids by prefix for the scripts and prints nothing on failure",
  SANITIZE,
  async () => {
    await using server = await testServer();
    importMachines(server.engine, 12);
    const operation = await runOperation(server.engine, {
      machineId: "machine-1",
      type: OperationType.ENTER_MAINTENANCE,
    });
    const complete = async (...args: string[]) => {
      let out = "", err = "";
      const code = await main(["__complete", ...args], {
        out: (t) => void (out += t),
        err: (t) => void (err += t),
      });
      return { code, out, err };
    };
    const on = ["--server", server.address];
    assert.deepEqual(await complete("machines", "machine-1", ...on), {
      code: 0,
      out: "machine-1\nmachine-10\nmachine-11\nmachine-12\n",
      err: "",
    });
    assert.deepEqual(await complete("operations", "op-", ...on), {
      code: 0,
      out: `${operation.operationId}\n`,
      err: "",
    });
    assert.deepEqual((await complete("machines", "nope", ...on)).out, "");
    // Failures are silent: a shell shows whatever this prints at the prompt.
    for (
      const args of [
        ["machines", "", "--server", "127.0.0.1:1"],
        ["machines", "", "--token-file", "/nonexistent/token", ...on],
        ["hosts", ""],
        [],
      ]
    ) {
      const result = await complete(...args);
      assert.notDeepEqual(result.code, 0, args.join(" "));
      assert.deepEqual([result.out, result.err], ["", ""], args.join(" "));
    }
    // The scripts call it for the commands that take an id, and only those.
    for (const shell of ["bash", "zsh", "fish"]) {
      let out = "";
      await main(["completion", shell], { out: (t) => void (out += t), err: () => {} });
      assert.ok(out.includes("__complete"), shell);
    }
    let bash = "";
    await main(["completion", "bash"], { out: (t) => void (bash += t), err: () => {} });
    assert.ok(bash.includes("get|reboot|reimage|enter-maintenance|exit-maintenance|watch)"), bash);
    assert.ok(bash.includes("op|wait|logs|cancel) ids=operations"), bash);
  },
);

Deno.test("--token and BMDEMO_TOKEN send authorization: Bearer", SANITIZE, async () => {
  await using server = await startServer({
    port: 0,
    engine: testEngine(),
    authToken: "s3cret",
  });
  const none = await runCli(server, ["list"]);
  assert.deepEqual(none.code, 3);
  assert.match(none.err, /^rpc error: code = Unauthenticated/);
  assert.match(none.err, /\nhint: pass --token-file <file> or set BMDEMO_TOKEN\n$/);
  const flag = await runCli(server, ["list", "--token", "s3cret"]);
  assert.deepEqual([flag.code, flag.err], [0, ""]);
  const env = await runCli(server, ["ops"], { env: { BMDEMO_TOKEN: "s3cret" } });
  assert.deepEqual([env.code, env.err], [0, ""]);
  const wrong = await runCli(server, ["list", "--token", "nope"]);
  assert.deepEqual(wrong.code, 3);
});

Deno.test("TLS files that cannot be read are usage errors naming the file", SANITIZE, async () => {
  for (
    const [args, env] of [
      [["--ca", "/no/such/ca.pem"], {}],
      [[], { BMDEMO_CA: "/no/such/ca.pem" }],
      [["--cert", "/no/such/ca.pem", "--key", "/no/such/key.pem"], {}],
    ] as [string[], Record<string, string>][]
  ) {
    let err = "";
    const code = await main(["list", ...args], { out: () => {}, err: (t) => void (err += t), env });
    assert.deepEqual(code, 2, args.join(" "));
    assert.match(err, /^error: cannot read .* file \/no\/such\/(ca|key)\.pem/);
  }
  let err = "";
  assert.deepEqual(
    await main(["list", "--cert", "c.pem"], { out: () => {}, err: (t) => void (err += t) }),
    2,
  );
  assert.match(err, /^error: --cert needs --key/);
});
