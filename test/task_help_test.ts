/**
 * Every task of deno.json, run as a user runs it (`deno task <name> ...`, a separate process):
 * `--help` exits 0 and names the task's flags; an unknown flag is one line on stderr naming the
 * flag and `--help`, exit 2, no stack trace. Issue 12 item 8.
 */

import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * Each task, the flags its help must name, and how many lines its refusal of an unknown flag may
 * take: 0 when it accepts any flag (`test` passes them to deno test).
 */
const TASKS: [task: string, flags: string[], refusalLines: number][] = [
  ["server", ["--port", "--host", "--timing", "--db", "--version"], 1],
  ["cli", ["--server", "--tls", "--ca", "--token-file", "--version"], 1],
  ["demo", ["--slow", "--server", "--lab"], 1],
  ["lab", ["--machines", "--vm", "--server", "--http-port", "--credentials"], 1],
  [
    "bench",
    ["--server", "--scenarios", "--json", "--scale", "--server-flags", "--seconds", "--db"],
    1,
  ],
  ["bench:engine", ["--machines", "--timing", "--repeats"], 1],
  ["bench:recovery", ["--machines", "--operations", "--active", "--db"], 1],
  ["load", [
    "--server",
    "--clients",
    "--seconds",
    "--watchers",
    "--machines",
    "--channels",
    "--timing",
  ], 1],
  ["bundle", ["--out"], 1],
  ["compile", ["--target", "--all", "--out"], 1],
  ["proto", ["--help"], 1],
  ["test", ["--filter"], 0],
];

async function runTask(
  task: string,
  flag: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", task, flag],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

for (const [task, flags, refusalLines] of TASKS) {
  Deno.test(`deno task ${task} --help: exit 0, says what it does and names its flags`, async () => {
    const { code, stdout, stderr } = await runTask(task, "--help");
    assert.equal(code, 0, `exit ${code}; stderr: ${stderr}`);
    assert.match(stdout, /usage:/i);
    assert.ok(stdout.split("\n").length >= 4, `help is one line or two:\n${stdout}`);
    for (const flag of flags) assert.ok(stdout.includes(flag), `help lacks ${flag}:\n${stdout}`);
  });

  if (refusalLines === 0) continue;
  Deno.test(`deno task ${task} --bogus: one line naming the flag and --help, exit 2`, async () => {
    const { code, stdout, stderr } = await runTask(task, "--bogus");
    assert.equal(code, 2, `exit ${code}; stdout: ${stdout}; stderr: ${stderr}`);
    const lines = stderr.trimEnd().split("\n");
    assert.ok(lines.length <= refusalLines, `more than ${refusalLines} line(s):\n${stderr}`);
    assert.match(lines[0], /--bogus/);
    assert.match(stderr, /--help/);
    assert.doesNotMatch(stderr, /^\s+at /m);
  });
}
