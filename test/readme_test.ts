/**
 * The README and docs/ stay true: the README's Quick start runs as written (its commands and
 * the output it shows are read from the README itself, so editing the README changes what is
 * tested), its `deno install -g` commands install working programs, every relative link of
 * README.md and docs/*.md reaches an existing file and heading, and every flag the server and
 * the CLI list in `--help` is documented in docs/server.md and docs/cli.md.
 */
import assert from "node:assert/strict";
import { SANITIZE } from "./helpers.ts";
import { runServer, spawnServer } from "../scripts/server_process.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/** The body of the `## <title>` section of a Markdown text, up to the next `## ` heading. */
function section(markdown: string, title: string): string {
  const lines = markdown.split("\n");
  const start = lines.indexOf(`## ${title}`);
  assert.notEqual(start, -1, `README.md has no "## ${title}" section`);
  const end = lines.findIndex((line, i) => i > start && line.startsWith("## "));
  return lines.slice(start + 1, end === -1 ? undefined : end).join("\n");
}

/** Fenced code blocks: their language and lines. */
function fencedBlocks(markdown: string): { lang: string; lines: string[] }[] {
  const blocks: { lang: string; lines: string[] }[] = [];
  let current: { lang: string; lines: string[] } | undefined;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) {
      if (current) blocks.push(current);
      current = current ? undefined : { lang: line.slice(3).trim(), lines: [] };
    } else current?.lines.push(line);
  }
  return blocks;
}

/** Shell commands of the `bash` blocks: one per line, comments and blank lines left out. */
function commandsOf(markdown: string): string[] {
  return fencedBlocks(markdown).filter((b) => b.lang === "bash")
    .flatMap((b) => b.lines.map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#")));
}

/** The `console` blocks as `$ command` and the lines it prints. */
function transcriptOf(markdown: string): { command: string; output: string[] }[] {
  const entries: { command: string; output: string[] }[] = [];
  for (const block of fencedBlocks(markdown).filter((b) => b.lang === "console")) {
    for (const line of block.lines) {
      if (line.startsWith("$ ")) entries.push({ command: line.slice(2), output: [] });
      else if (line !== "") entries.at(-1)?.output.push(line);
    }
  }
  return entries;
}

/** A transcript line as a pattern: `…` stands for any text (ids that change every run). */
function linePattern(line: string): RegExp {
  const parts = line.split("…").map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join(".+")}$`);
}

async function bash(
  command: string,
  env: Record<string, string>,
  cwd = ROOT,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("bash", {
    args: ["-c", command],
    cwd,
    stdin: "null",
    env: { NO_COLOR: "1", ...env },
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

const readme = await Deno.readTextFile(`${ROOT}README.md`);

Deno.test("README: the Quick start's commands run as written and print what it shows", {
  ...SANITIZE,
}, async () => {
  const quickStart = section(readme, "Quick start");
  const commands = commandsOf(quickStart);
  const transcript = transcriptOf(quickStart);
  const [serverCommand, ...cliCommands] = commands;
  assert.match(
    serverCommand ?? "",
    /^deno task server\b/,
    "the Quick start starts the server first",
  );
  assert.ok(cliCommands.length > 0 && transcript.length > 0, "no CLI commands or output");
  // The server runs as the README says (as `deno task server` in its own process group, as a
  // shell runs it), on a free port: the README documents `--port` and that the CLI reads
  // BMDEMO_SERVER, which is how the commands below reach it.
  const args = serverCommand.replace(/^deno task server/, "").trim().split(/\s+/).filter(Boolean);
  const server = await spawnServer(args, { task: true });
  try {
    let shown = 0;
    for (const command of cliCommands) {
      const run = await bash(command, { BMDEMO_SERVER: server.address });
      assert.equal(run.code, 0, `${command}: exit ${run.code}\n${run.stdout}${run.stderr}`);
      if (transcript[shown]?.command !== command) continue;
      const actual = run.stdout.trimEnd().split("\n");
      const expected = transcript[shown++].output;
      assert.equal(actual.length, expected.length, `${command} printed:\n${run.stdout}`);
      expected.forEach((line, i) =>
        assert.match(actual[i], linePattern(line), `${command}, line ${i + 1}:\n${run.stdout}`)
      );
    }
    assert.equal(
      shown,
      transcript.length,
      `the output shown for "$ ${transcript[shown]?.command}" belongs to no Quick start command ` +
        "(in that order)",
    );
  } finally {
    const status = await server.stop("SIGINT");
    assert.equal(status.code, 0, `the server's exit on Ctrl+C\n${server.stderr()}`);
  }
});

Deno.test("README: the deno install -g commands of Install give bmdemo-server and bmdemo-cli", {
  ...SANITIZE,
}, async () => {
  const block = fencedBlocks(section(readme, "Install"))
    .find((b) => b.lines.some((l) => l.startsWith("deno install -g")));
  assert.ok(block, "Install has no block of deno install -g commands");
  const root = await Deno.makeTempDir({ prefix: "bmdemo-install-" });
  try {
    const run = await bash(`set -e\n${block.lines.join("\n")}`, {
      DENO_INSTALL_ROOT: root,
      PATH: `${root}/bin:${Deno.env.get("PATH")}`,
    });
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const { version } = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
    assert.equal(run.stdout, `bmdemo-server ${version}\nbmdemo-cli ${version}\n`);
    // The installed CLI names itself in hints as installed (not `deno task cli`), and has the
    // network: an unreachable server is the "cannot reach" error, not a permission error.
    const cli = await new Deno.Command(`${root}/bin/bmdemo-cli`, {
      args: ["--server", "127.0.0.1:1", "list"],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = decoder.decode(cli.stderr);
    assert.equal(cli.code, 3, stderr);
    assert.match(stderr, /bmdemo-server/);
    assert.doesNotMatch(stderr, /--allow-net|deno task/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("docs/server.md: its TLS set-up gives certificates the CLI accepts by name and by IP", {
  ...SANITIZE,
}, async () => {
  const server = await Deno.readTextFile(`${ROOT}docs/server.md`);
  const setUp = fencedBlocks(section(server, "TLS and token set-up"))[0].lines
    .filter((line) => /^(openssl|echo) /.test(line));
  assert.ok(setUp.length >= 4, `set-up commands read: ${setUp}`);
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-tls-doc-" });
  try {
    const made = await bash(`set -e\n${setUp.join("\n")}`, {}, dir);
    assert.equal(made.code, 0, made.stderr);
    const tlsServer = await spawnServer([
      ...["--tls-cert", `${dir}/server.pem`, "--tls-key", `${dir}/server.key`],
      ...["--auth-token-file", `${dir}/token`],
    ]);
    try {
      const port = tlsServer.address.split(":").at(-1);
      for (const host of ["localhost", "127.0.0.1"]) {
        const list = await bash(
          `deno task cli --server ${host}:${port} --ca ${dir}/ca.pem --token-file ${dir}/token list`,
          {},
        );
        assert.equal(list.code, 0, `--server ${host}:${port}\n${list.stdout}${list.stderr}`);
        assert.match(list.stdout, /No machines registered/);
      }
    } finally {
      await tlsServer.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

async function anchorsOf(path: string): Promise<Set<string>> {
  const text = await Deno.readTextFile(path);
  const prose = text.replace(/^```[\s\S]*?^```/gm, "");
  return new Set([...prose.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1])));
}

Deno.test("README and docs/: every relative link reaches a file (and its heading)", async () => {
  const files = ["README.md"];
  for await (const entry of Deno.readDir(`${ROOT}docs`)) {
    if (entry.name.endsWith(".md")) files.push(`docs/${entry.name}`);
  }
  const broken: string[] = [];
  let links = 0;
  for (const file of files) {
    const text = (await Deno.readTextFile(`${ROOT}${file}`)).replace(/^```[\s\S]*?^```/gm, "");
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
      links++;
      const [path, anchor] = target.split("#");
      const resolved = path === ""
        ? `${ROOT}${file}`
        : new URL(path, `file://${ROOT}${file}`).pathname;
      try {
        await Deno.stat(resolved);
      } catch {
        broken.push(`${file}: ${target} (no such file)`);
        continue;
      }
      if (anchor && resolved.endsWith(".md") && !(await anchorsOf(resolved)).has(anchor)) {
        broken.push(`${file}: ${target} (no such heading)`);
      }
    }
  }
  assert.ok(links > 20, `only ${links} relative links found: is the link pattern right?`);
  assert.deepEqual(broken, []);
});

/** The flags an option list of a `--help` text names: `-h, --help  ...` and `--a --b` lines. */
function helpFlags(help: string): string[] {
  const flags = new Set<string>();
  for (const line of help.split("\n")) {
    if (!/^\s+-/.test(line)) continue;
    const names = line.trim().split(/\s{2,}/)[0];
    for (const [flag] of names.matchAll(/(?<![\w-])--?[a-z][a-z0-9-]*/g)) flags.add(flag);
  }
  return [...flags];
}

/** Flags a document does not mention as a word of their own. */
function undocumented(flags: string[], doc: string): string[] {
  return flags.filter((flag) => !new RegExp(`(?<![\\w-])${flag}(?![\\w-])`).test(doc));
}

Deno.test("docs/server.md names every flag of bmdemo-server --help", async () => {
  const help = await runServer(["--help"]);
  assert.equal(help.code, 0, help.stderr);
  const flags = helpFlags(help.stdout);
  assert.ok(flags.includes("--port") && flags.includes("-h"), `flags read: ${flags}`);
  const doc = await Deno.readTextFile(`${ROOT}docs/server.md`);
  assert.deepEqual(undocumented(flags, doc), []);
});

Deno.test("docs/cli.md names every command and every flag of bmdemo-cli --help", async () => {
  const cli = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", "--allow-read", `${ROOT}cli.ts`, ...args],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output().then((out) => decoder.decode(out.stdout));
  const help = await cli(["--help"]);
  const commandList = help.split(/^Commands:$/m)[1]?.split("\n\n")[0] ?? "";
  const commands = [...commandList.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]);
  assert.ok(commands.includes("reimage"), `commands read: ${commands}`);
  const helps = [help, ...await Promise.all(commands.map((c) => cli([c, "--help"])))];
  const flags = [...new Set(helps.flatMap(helpFlags))];
  assert.ok(flags.includes("--image") && flags.includes("--server"), `flags read: ${flags}`);
  const doc = await Deno.readTextFile(`${ROOT}docs/cli.md`);
  assert.deepEqual(undocumented(flags, doc), []);
  assert.deepEqual(commands.filter((c) => !doc.includes(`\`${c}`)), []);
});

Deno.test("docs/api.md explains every error reason of lib/model/errors.ts", async () => {
  const source = await Deno.readTextFile(`${ROOT}lib/model/errors.ts`);
  const union = /export type ErrorReason =([^;]+);/.exec(source)?.[1] ?? "";
  const reasons = [...union.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]);
  assert.ok(reasons.length > 10, `reasons read: ${reasons}`);
  const doc = await Deno.readTextFile(`${ROOT}docs/api.md`);
  // A reason is explained in a row of the Errors table, where it is quoted.
  assert.deepEqual(reasons.filter((r) => !new RegExp(`^\\|.*\`${r}\``, "m").test(doc)), []);
});
