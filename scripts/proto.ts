/**
 * `deno task proto`: regenerates `lib/gen/` from `proto/` (our contract) and from protos
 * vendored out of npm packages, with buf and protoc-gen-es run by Deno: the `google/rpc` protos
 * of `google-proto-files` (the rich error model), `grpc/health/v1/health.proto` of
 * `grpc-health-check` and `grpc/reflection/{v1,v1alpha}/reflection.proto` of `@grpc/reflection`
 * (those packages read their `.proto` files at run time, which a bundled server cannot do). Each
 * file is copied to its canonical upstream path in a temp dir first. The output is committed; CI
 * regenerates it and fails on a diff.
 *
 * @module
 */

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { parseScriptArgs } from "./cli_args.ts";

parseScriptArgs({ options: {} }, {
  program: "deno task proto",
  help: `usage: deno task proto

Regenerates lib/gen/ from proto/ and the protos vendored out of npm packages (google/rpc,
grpc health, grpc reflection), with buf and protoc-gen-es. Takes no flags; CI runs it and fails
if lib/gen changes.

  -h, --help    this help`,
});

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

// The packages' files live in Deno's npm cache; node's resolver finds them there.
const require = createRequire(import.meta.url);
const packageDir = (name: string): string => dirname(require.resolve(`${name}/package.json`));

/** Vendored protos: [source file, path under the temp dir (the canonical import path)]. */
const VENDORED: [string, string][] = [
  ...GOOGLE_RPC.map((file): [string, string] => [
    join(packageDir("google-proto-files"), "google", "rpc", file),
    join("google", "rpc", file),
  ]),
  [
    join(packageDir("grpc-health-check"), "proto", "health", "v1", "health.proto"),
    join("grpc", "health", "v1", "health.proto"),
  ],
  ...["v1", "v1alpha"].map((version): [string, string] => [
    join(
      packageDir("@grpc/reflection"),
      "build",
      "proto",
      "grpc",
      "reflection",
      version,
      "reflection.proto",
    ),
    join("grpc", "reflection", version, "reflection.proto"),
  ]),
];

const vendor = await Deno.makeTempDir({ prefix: "bmdemo-proto-" });
try {
  for (const [from, to] of VENDORED) {
    await Deno.mkdir(join(vendor, dirname(to)), { recursive: true });
    await Deno.copyFile(from, join(vendor, to));
  }
  await Deno.remove(join(ROOT, "lib", "gen"), { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  await buf(["generate", "proto"]);
  await buf(["generate", vendor]);
} finally {
  await Deno.remove(vendor, { recursive: true });
}
