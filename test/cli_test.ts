import assert from "node:assert/strict";
import { startServer } from "../lib/grpc/server.ts";
import { displayWidth, formatTable } from "../lib/cli/format.ts";
import { main, parseCommandLine } from "../lib/cli/main.ts";
import { UsageError } from "../lib/cli/session.ts";

function capture(): { out: string[]; err: string[]; io: Parameters<typeof main>[1] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (t) => void out.push(t), err: (t) => void err.push(t), env: {} } };
}

Deno.test("formatTable aligns by display width, ⚠ and ⛔ count two cells", () => {
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

Deno.test("options are accepted after positionals", () => {
  const parsed = parseCommandLine(["reimage", "machine-1", "--image", "u", "--server", "h:1"]);
  assert.deepEqual(parsed.command, "reimage");
  assert.deepEqual(parsed.positionals, ["machine-1"]);
  assert.deepEqual(parsed.values.image, "u");
  assert.deepEqual(parsed.values.server, "h:1");
});

Deno.test("usage errors", () => {
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

Deno.test("main exits 2 on usage errors and 0 on --help/--version", async () => {
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

Deno.test("list abbreviations and exit codes in-process", async () => {
  await using server = await startServer({ port: 0, timing: "zero" });
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
