import assert from "node:assert/strict";
import { SANITIZE } from "./helpers.ts";
import { spawnServer } from "../scripts/server_process.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

async function deno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1", ...env },
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test(
  "bundled server and CLI run the quick start with an empty DENO_DIR",
  SANITIZE,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-bundle-" });
    try {
      const build = await deno([
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-run",
        "--allow-env",
        "scripts/build.ts",
        "bundle",
        "--out",
        dir,
      ]);
      assert.equal(build.code, 0, build.stderr);
      const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
      for (const name of ["bmdemo-server", "bmdemo-cli"]) {
        const version = await deno(["run", "--allow-env", `${dir}/${name}.js`, "--version"]);
        assert.equal(version.stdout, `${name} ${config.version}\n`, version.stderr);
      }
      // An empty cache proves the bundles need nothing but themselves (no npm download, no
      // file read next to the source).
      const empty = { DENO_DIR: `${dir}/deno-dir` };
      await using server = await spawnServer(["--http-port", "0"], {
        script: `${dir}/bmdemo-server.js`,
        env: empty,
      });
      // The dashboard's files are in the bundle (a temporary directory with nothing beside it).
      for (
        const [path, file] of [["", "html"], ["assets/dashboard.js", "js"], [
          "assets/dashboard.css",
          "css",
        ]]
      ) {
        const served = await (await fetch(`${server.dashboard}${path}`)).text();
        assert.equal(served, await Deno.readTextFile(`${ROOT}/lib/http/assets/dashboard.${file}`));
      }
      const cli = (...args: string[]) =>
        deno([
          "run",
          "--no-prompt",
          "--allow-net",
          "--allow-env",
          `${dir}/bmdemo-cli.js`,
          "--server",
          server.address,
          ...args,
        ], empty);
      const imported = await cli("import", "2");
      assert.equal(imported.code, 0, imported.stderr);
      assert.equal(imported.stdout, "machine-1   FACTORY_READY\nmachine-2   FACTORY_READY\n");
      assert.equal((await cli("enter-maintenance", "machine-1")).code, 0);
      const reimage = await cli("reimage", "machine-1");
      assert.equal(reimage.code, 0, reimage.stderr);
      assert.match(reimage.stdout, /→ verify-in-cluster\.\.\. ✓\n✓ SUCCEEDED\n$/);
      const list = await cli("list");
      assert.match(list.stdout, /machine-1 +MAINT +MAINT +✓ +✓ +-/);
      assert.equal((await server.stop()).code, 0);
      // Nothing was downloaded into the empty cache.
      const cached = [];
      try {
        for await (const entry of Deno.readDir(empty.DENO_DIR + "/npm")) cached.push(entry.name);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
      assert.deepEqual(cached, []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** `deno task compile` with `env`, into a fresh directory; returns its output. */
async function compileTask(
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-compile-test-" });
  return { ...await deno(["task", "--quiet", "compile", "--out", dir], env), dir };
}

Deno.test(
  "compiled binaries embed only their bundle (a few MB, no npm packages) and keep the V8 flags",
  SANITIZE,
  async () => {
    // DENORT_BIN pointed at deno itself: compile needs no download and still prints its
    // embedded-files report (the result does not run as the program).
    const run = await compileTask({ DENORT_BIN: Deno.execPath() });
    try {
      assert.equal(run.code, 0, run.stderr);
      const output = run.stdout + run.stderr;
      const embedded = [...output.matchAll(/Files: ([\d.]+)(KB|MB|GB)/g)].map(([, n, unit]) =>
        Number(n) * { KB: 1e-3, MB: 1, GB: 1e3 }[unit as "KB" | "MB" | "GB"]
      );
      assert.equal(embedded.length, 2, output);
      for (const mb of embedded) assert.ok(mb < 4, `${mb} MB embedded:\n${output}`);
      assert.doesNotMatch(output, /node_modules|registry\.npmjs\.org/);
      assert.match(
        output,
        /--allow-run=ssh,ipmitool --v8-flags=--max-semi-space-size=2,--expose-gc --output \S+bmdemo-server/,
      );
      for (const name of ["bmdemo-server", "bmdemo-cli"]) await Deno.stat(`${run.dir}/${name}`);
    } finally {
      await Deno.remove(run.dir, { recursive: true });
    }
  },
);

Deno.test(
  "deno task compile without network is one line naming deno task bundle, exit 1",
  SANITIZE,
  async () => {
    // A proxy that refuses every connection stands for "offline" (npm packages are cached).
    const run = await compileTask({ HTTPS_PROXY: "http://127.0.0.1:9" });
    try {
      assert.equal(run.code, 1, run.stderr);
      const lines = run.stderr.trim().split("\n").filter((line) => !line.startsWith("$ "));
      assert.equal(lines.length, 1, run.stderr);
      assert.match(lines[0], /cannot download the Deno runtime.*`deno task bundle`/);
    } finally {
      await Deno.remove(run.dir, { recursive: true });
    }
  },
);
