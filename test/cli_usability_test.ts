/**
 * The CLI explaining itself: operation ids by unique prefix, one hint per error naming the
 * program as invoked, a suggestion for a mistyped command, per-command help with examples, and
 * a token file whose content never reaches the output.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BmdemoServer, startServer } from "../lib/grpc/server.ts";
import { main } from "../lib/cli/main.ts";
import { shortId } from "../lib/cli/format.ts";
import { closestCommand } from "../lib/cli/help.ts";
import { programName } from "../lib/cli/program.ts";
import type { CliIo } from "../lib/cli/session.ts";
import { Operation_OperationType as OperationType } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  maintenanceServer,
  runOperation,
  SANITIZE,
  testEngine,
  testServer,
} from "./helpers.ts";

async function run(
  args: string[],
  options: { server?: BmdemoServer; env?: Record<string, string> } = {},
): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: options.env ?? {},
  };
  const server = options.server ? ["--server", options.server.address] : [];
  const code = await main([...args, ...server], io);
  return { code, out, err };
}

Deno.test("operation ids: a unique prefix resolves, with or without op-", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 2);
  await enterMaintenance(server.engine, "machine-1");
  const op = await runOperation(server.engine, {
    machineId: "machine-1",
    type: OperationType.REBOOT,
  });
  // What list and watch print is what the user pastes.
  for (const typed of [shortId(op.operationId), op.operationId.slice(3, 9)]) {
    const shown = await run(["op", typed, "-o", "json"], { server });
    assert.deepEqual([shown.code, shown.err], [0, ""], typed);
    assert.deepEqual(JSON.parse(shown.out).operationId, op.operationId);
  }
  const logs = await run(["logs", shortId(op.operationId)], { server });
  assert.deepEqual([logs.code, logs.err], [0, ""]);
  assert.match(logs.out, /reboot/i);
  const wait = await run(["wait", shortId(op.operationId)], { server });
  assert.deepEqual(wait.code, 0);
  assert.ok(wait.out.includes(op.operationId));
});

Deno.test("operation ids: an ambiguous prefix lists the candidates, exit 2", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 2);
  const ids: string[] = [];
  for (const machineId of ["machine-1", "machine-2"]) {
    await enterMaintenance(server.engine, machineId);
    ids.push(
      (await runOperation(server.engine, { machineId, type: OperationType.REBOOT })).operationId,
    );
  }
  for (const command of ["op", "logs", "wait", "cancel"]) {
    const ambiguous = await run([command, "op-"], { server });
    assert.deepEqual([ambiguous.code, ambiguous.out], [2, ""], command);
    assert.match(ambiguous.err, /^error: operation id prefix "op-" matches 4 operations/);
    for (const id of ids) assert.ok(ambiguous.err.includes(id), `${command}: ${id}`);
  }
});

Deno.test("operation ids: a prefix that matches nothing is NOT_FOUND", SANITIZE, async () => {
  await using server = await testServer();
  const none = await run(["op", "op-zzz"], { server });
  assert.deepEqual(none.code, 3);
  assert.match(none.err, /^rpc error: code = NotFound/);
  assert.match(none.err, /\nhint: bmdemo-cli ops shows the operations\n$/);
});

Deno.test("shortId shows op- and 8 hex digits", () => {
  assert.deepEqual(shortId("op-b2f7e1a3-0000-4000-8000-000000000000"), "op-b2f7e1a3");
  assert.deepEqual(shortId(""), "-");
});

Deno.test("one hint per error, naming the program as invoked", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  const env = { BMDEMO_CLI_PROGRAM: "deno task cli" };
  const reimage = await run(["reimage", "machine-1"], { server, env });
  assert.deepEqual(reimage.code, 3);
  assert.deepEqual(reimage.err.trimEnd().split("\n"), [
    'rpc error: code = FailedPrecondition desc = machine "machine-1" is in phase FACTORY_READY; ' +
    "reimage requires MAINTENANCE",
    "hint: run deno task cli enter-maintenance machine-1 first",
  ]);
  const missing = await run(["get", "machine-9"], { server, env });
  assert.deepEqual(
    missing.err,
    'rpc error: code = NotFound desc = machine "machine-9" not found\n' +
      "hint: deno task cli list shows the registered machines\n",
  );
  const usage = await run(["reimage", "--help"], { env });
  assert.match(usage.out, /^Usage: deno task cli reimage <machine-id>/);
});

Deno.test("the timeout advice names the program and the whole id", SANITIZE, async () => {
  const repave = holdVerb();
  await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
  const started = await run(["reimage", "machine-1", "--no-wait"], { server });
  const id = /^Operation: (op-\S+)$/m.exec(started.out)?.[1] ?? "";
  await repave.entered;
  const env = { BMDEMO_CLI_PROGRAM: "deno task cli" };
  const timed = await run(["wait", shortId(id), "--timeout", "50ms"], { server, env });
  assert.deepEqual(timed.code, 6);
  assert.ok(
    timed.err.includes(`  wait for it: deno task cli --server ${server.address} wait ${id}\n`),
    timed.err,
  );
  repave.release();
  await server.engine.executor.idle();
});

Deno.test("programName: the task's variable, a compiled binary's name, or bmdemo-cli", () => {
  assert.deepEqual(programName({ BMDEMO_CLI_PROGRAM: "deno task cli" }), "deno task cli");
  assert.deepEqual(programName({}, "/opt/bin/bmdemo-cli"), "bmdemo-cli");
  assert.deepEqual(programName({}, "C:\\bin\\my-cli.exe"), "my-cli");
  assert.deepEqual(programName({}, "/usr/bin/deno"), "bmdemo-cli");
  assert.deepEqual(programName({}), "bmdemo-cli");
});

Deno.test("a mistyped command gets a short usage and a suggestion, exit 2", async () => {
  const typo = await run(["reimag", "machine-1"]);
  assert.deepEqual([typo.code, typo.out], [2, ""]);
  assert.deepEqual(
    typo.err,
    "error: unknown command: reimag\n" +
      "Did you mean 'bmdemo-cli reimage'?\n" +
      "Usage: bmdemo-cli <command> [args] [options]; 'bmdemo-cli --help' lists the commands\n",
  );
  const far = await run(["frobnicate"]);
  assert.deepEqual(far.code, 2);
  assert.doesNotMatch(far.err, /Did you mean/);
  assert.deepEqual(far.err.split("\n").length, 3);
  assert.deepEqual(closestCommand("lsit"), "list");
  assert.deepEqual(closestCommand("enter"), "enter-maintenance");
  assert.deepEqual(closestCommand("e"), undefined);
});

Deno.test("an unknown flag is one line naming it and the right --help, exit 2", async () => {
  for (
    const [args, expected] of [
      [["list", "--bogus"], "error: unknown flag --bogus (see 'bmdemo-cli list --help')\n"],
      [["--bogus", "list"], "error: unknown flag --bogus (see 'bmdemo-cli list --help')\n"],
      [["--bogus"], "error: unknown flag --bogus (see 'bmdemo-cli --help')\n"],
      [["list", "-o", "json", "-x"], "error: unknown flag -x (see 'bmdemo-cli list --help')\n"],
      [
        ["reimage", "m-1", "--image=u", "--zap=1"],
        "error: unknown flag --zap (see 'bmdemo-cli reimage --help')\n",
      ],
    ] as const
  ) {
    const refused = await run([...args]);
    assert.deepEqual([refused.code, refused.out, refused.err], [2, "", expected], args.join(" "));
  }
  // A flag another command has is unknown to this one.
  const other = await run(["list", "--image", "u"]);
  assert.deepEqual(other.err, "error: unknown flag --image (see 'bmdemo-cli list --help')\n");
});

Deno.test("command help: its own flags, examples, global flags in one line", async () => {
  const help = await run(["reimage", "--help"]);
  assert.deepEqual([help.code, help.err], [0, ""]);
  assert.match(help.out, /^Usage: bmdemo-cli reimage <machine-id>\n/);
  assert.ok(help.out.includes("\n  --image <ref> "));
  assert.ok(help.out.includes("\nExamples:\n  bmdemo-cli enter-maintenance machine-1\n"));
  assert.match(
    help.out,
    /\nGlobal options \(see 'bmdemo-cli --help'\):\n {2}--server .*--token-file.*\n$/,
  );
  assert.doesNotMatch(help.out, /Exit codes:|--ca <file>/);
  assert.ok(help.out.split("\n").length < 25, help.out);
  const general = await run(["--help"]);
  assert.match(general.out, /Exit codes:/);
  assert.match(general.out, /--token-file <file>/);
});

Deno.test("--token-file sends the token and never prints it", SANITIZE, async () => {
  await using server = await startServer({ port: 0, engine: testEngine(), authToken: "s3cret" });
  const dir = await Deno.makeTempDir();
  try {
    const good = `${dir}/good`;
    const wrong = `${dir}/wrong`;
    await Deno.writeTextFile(good, "s3cret\n");
    await Deno.writeTextFile(wrong, "wr0ng-t0ken\n");
    const ok = await run(["list", "--token-file", good], { server });
    assert.deepEqual([ok.code, ok.err], [0, ""]);
    const refused = await run(["list", "--token-file", wrong], { server });
    assert.deepEqual(refused.code, 3);
    assert.ok(!`${refused.out}${refused.err}`.includes("wr0ng"), refused.err);
    assert.match(refused.err, /\nhint: the server refused the token: [^\n]*\n$/);
    assert.deepEqual(refused.err.match(/hint:/g)?.length, 1);
    const none = await run(["list"], { server });
    assert.match(none.err, /\nhint: pass --token-file <file> or set BMDEMO_TOKEN\n$/);
    const both = await run(["list", "--token-file", good, "--token", "x"], { server });
    assert.deepEqual(both.code, 2);
    await Deno.writeTextFile(wrong, " \n");
    const empty = await run(["list", "--token-file", wrong], { server });
    assert.deepEqual(empty.code, 2);
    assert.ok(empty.err.startsWith(`error: the token file ${wrong} is empty\n`), empty.err);
    const absent = await run(["list", "--token-file", `${dir}/nope`], { server });
    assert.deepEqual(absent.code, 2);
    assert.match(absent.err, /^error: cannot read token file .*\/nope/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  "deno task cli: --token-file keeps the token out of what the task prints; hints say deno task cli",
  SANITIZE,
  async () => {
    await using server = await startServer({ port: 0, engine: testEngine(), authToken: "s3cret" });
    importMachines(server.engine, 1);
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(file, "s3cret\n");
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["task", "cli", "get", "machine-9", "--server", server.address, "--token-file", file],
        cwd: new URL("..", import.meta.url).pathname,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(output.stdout) +
        new TextDecoder().decode(output.stderr);
      assert.deepEqual(output.code, 3, text);
      assert.ok(!text.includes("s3cret"), text);
      assert.match(text, /\nhint: deno task cli list shows the registered machines\n$/);
    } finally {
      await Deno.remove(file);
    }
  },
);
