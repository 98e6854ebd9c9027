import assert from "node:assert/strict";
import { createEngine } from "../lib/engine/mod.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import { SANITIZE, testServer } from "./helpers.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const GOLDEN = new URL("./golden/", import.meta.url);

async function cli(server: string, ...args: string[]): Promise<[number, string, string]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", CLI, "--server", server, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array): string => new TextDecoder().decode(b);
  return [output.code, text(output.stdout), text(output.stderr)];
}

/**
 * Sources the bash completion script ($1), runs the CLI as `bmdemo-cli` ($2 run $3) and prints
 * the candidates of four command lines against the server $4, each followed by `---`.
 */
const COMPLETE_IN_BASH = `
source "$1"
deno="$2" cli="$3"
bmdemo-cli() { "$deno" run --allow-net --allow-env "$cli" "$@"; }
tab() { COMP_WORDS=("$@"); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _bmdemo_cli
  [ \${#COMPREPLY[@]} -gt 0 ] && printf '%s\\n' "\${COMPREPLY[@]}"; echo ---; }
tab bmdemo-cli --server "$4" get mach
tab bmdemo-cli --server "$4" wait op-
tab bmdemo-cli --server "$4" get machine-1 ""
tab bmdemo-cli --server 127.0.0.1:1 reboot ""
`;

/** Replaces operation ids and UUIDs by stable placeholders. */
function normalise(text: string): string {
  return text
    .replace(/op-[0-9a-f-]{36}/g, "op-<id>")
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<uuid>");
}

Deno.test("quick start session matches the golden output", SANITIZE, async () => {
  await using server = await testServer();
  const steps = [
    ["import", "3"],
    ["list"],
    ["enter-maintenance", "machine-1"],
    ["reimage", "machine-1"],
    ["exit-maintenance", "machine-1"],
    ["list"],
  ];
  let transcript = "";
  for (const args of steps) {
    const [code, out, err] = await cli(server.address, ...args);
    assert.deepEqual([code, err], [0, ""], args.join(" "));
    transcript += `$ bmdemo ${args.join(" ")}\n${normalise(out)}\n`;
  }
  const golden = new URL("quick_start.txt", GOLDEN);
  if (Deno.env.get("UPDATE_GOLDEN")) await Deno.writeTextFile(golden, transcript);
  assert.deepEqual(transcript, await Deno.readTextFile(golden));
});

Deno.test("a failed operation exits 4 with the step error", SANITIZE, async () => {
  const engine = createEngine({
    provider: createFakeProvider({
      timing: "zero",
      faults: { repave: { kind: "fail", message: "simulated repave failure" } },
    }),
    executor: { backoff: () => 0 },
  });
  await using server = await testServer({ engine });
  await cli(server.address, "import", "1");
  await cli(server.address, "enter-maintenance", "machine-1");
  const [code, out] = await cli(server.address, "reimage", "machine-1");
  assert.deepEqual(code, 4);
  const golden = new URL("reimage_failed.txt", GOLDEN);
  if (Deno.env.get("UPDATE_GOLDEN")) await Deno.writeTextFile(golden, normalise(out));
  assert.deepEqual(normalise(out), await Deno.readTextFile(golden));
});

Deno.test("an unreachable server exits 3 and names the fix", SANITIZE, async () => {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = listener.addr.port;
  listener.close();
  const [code, out, err] = await cli(`127.0.0.1:${port}`, "list");
  assert.deepEqual([code, out], [3, ""]);
  assert.deepEqual(
    err,
    `error: cannot reach the bmdemo server at 127.0.0.1:${port}\n` +
      "hint: start it with bmdemo-server, or point bmdemo-cli at it with --server " +
      "host:port; if it serves TLS, add --tls or --ca <file>\n",
  );
});

Deno.test(
  "cross-process: -o json, --no-wait and the bash completion script",
  SANITIZE,
  async () => {
    await using server = await testServer();
    await cli(server.address, "import", "2");
    const [code, out, err] = await cli(server.address, "list", "-o", "json", "--page-size", "1");
    assert.deepEqual([code, err], [0, ""]);
    assert.deepEqual(JSON.parse(out).map((m: { machineId: string }) => m.machineId), [
      "machine-1",
      "machine-2",
    ]);
    const [noWait, started] = await cli(
      server.address,
      "enter-maintenance",
      "machine-1",
      "--no-wait",
    );
    assert.deepEqual(noWait, 0);
    const id = /^Operation: (op-\S+)\n/.exec(started)?.[1];
    assert.ok(id, started);
    const [waited, waitOut] = await cli(server.address, "wait", id, "--timeout", "30s");
    assert.deepEqual(waited, 0);
    assert.match(waitOut, /✓ SUCCEEDED\n$/);
    const [completionCode, script] = await cli(server.address, "completion", "bash");
    assert.deepEqual(completionCode, 0);
    const file = await Deno.makeTempFile({ suffix: ".bash" });
    try {
      await Deno.writeTextFile(file, script);
      const check = await new Deno.Command("bash", { args: ["-n", file] }).output();
      assert.deepEqual(check.code, 0, new TextDecoder().decode(check.stderr));
      // Tab after a command that takes an id asks the server, with the line's --server.
      const tab = await new Deno.Command("bash", {
        args: ["-c", COMPLETE_IN_BASH, "bash", file, Deno.execPath(), CLI, server.address],
        env: { NO_COLOR: "1" },
      }).output();
      const [machines, operations, second, unreachable] = new TextDecoder().decode(tab.stdout)
        .split("---\n");
      assert.deepEqual(machines, "machine-1\nmachine-2\n");
      assert.deepEqual(operations, `${id}\n`);
      assert.doesNotMatch(second, /machine-/, "only the first argument is an id");
      assert.deepEqual(unreachable, "", "an unreachable server completes nothing");
      assert.deepEqual(new TextDecoder().decode(tab.stderr), "", "and prints nothing");
    } finally {
      await Deno.remove(file);
    }
  },
);
