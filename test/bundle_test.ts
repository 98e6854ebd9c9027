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
      // An empty cache proves the bundles need nothing but themselves (no npm download, no
      // file read next to the source).
      const empty = { DENO_DIR: `${dir}/deno-dir` };
      await using server = await spawnServer([], {
        script: `${dir}/bmdemo-server.js`,
        env: empty,
      });
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
