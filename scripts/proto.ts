/**
 * `deno task proto`: regenerates `lib/gen/` from `proto/` (our contract) and from the
 * `google/rpc` protos of the npm package `google-proto-files` (the rich error model), with buf
 * and protoc-gen-es run by Deno. The output is committed; CI regenerates it and fails on a diff.
 *
 * @module
 */

import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const GOOGLE_RPC = ["status.proto", "error_details.proto"];

async function buf(args: string[]): Promise<void> {
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run",
      "--allow-sys",
      "npm:@bufbuild/buf@1.75.0",
      ...args,
    ],
    cwd: ROOT,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (code !== 0) throw new Error(`buf ${args.join(" ")} failed with exit code ${code}`);
}

// The package's files live in Deno's npm cache; node's resolver finds them there.
const require = createRequire(import.meta.url);
const source = dirname(require.resolve("google-proto-files/google/rpc/status.proto"));
const vendor = await Deno.makeTempDir({ prefix: "bmdemo-proto-" });
try {
  await Deno.mkdir(join(vendor, "google", "rpc"), { recursive: true });
  for (const file of GOOGLE_RPC) {
    await Deno.copyFile(join(source, file), join(vendor, "google", "rpc", file));
  }
  await Deno.remove(join(ROOT, "lib", "gen"), { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  await buf(["generate", "proto"]);
  await buf(["generate", vendor]);
} finally {
  await Deno.remove(vendor, { recursive: true });
}
