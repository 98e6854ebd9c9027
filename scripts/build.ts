/**
 * Builds the distributable forms of bmdemo-server and bmdemo-cli.
 *
 *   deno task bundle                      dist/bmdemo-server.js, dist/bmdemo-cli.js (one JS file
 *                                         each; run with `deno run --allow-net --allow-env`)
 *   deno task compile                     self-contained binaries for this machine
 *   deno task compile --target <triple>   cross-compile, e.g. aarch64-apple-darwin
 *   deno task compile --all               every release target
 *
 * Binaries get the minimal permissions the programs need: network (gRPC) and environment
 * (grpc-js reads its settings from the environment). `deno compile` downloads the `denort`
 * runtime of each target from Deno's download server the first time; offline that fails with
 * one line naming `deno task bundle`, which needs no download.
 *
 * A binary is compiled from the program's bundle, not from its source: compiling `server.ts`
 * embeds every npm package of deno.json's imports (205 MB: the buf binary, google-proto-files,
 * typescript, which only codegen needs), its bundle embeds ~1.4 MB.
 *
 * @module
 */

import { SERVER_V8_FLAGS } from "./server_process.ts";
import { parseScriptArgs, usageError } from "./cli_args.ts";

/** Release targets: linux x64/arm64, macOS x64/arm64, windows x64. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const PROGRAMS = [
  // The server's V8 flags are baked into its binary (see SERVER_V8_FLAGS for why).
  {
    name: "bmdemo-server",
    entry: "server.ts",
    // The real hardware drivers run the system's ssh and ipmitool (docs/hardware.md).
    flags: ["--allow-run=ssh,ipmitool", `--v8-flags=${SERVER_V8_FLAGS.join(",")}`],
  },
  { name: "bmdemo-cli", entry: "cli.ts", flags: [] },
];

// Read access is for the TLS and token files named on the command line.
const PERMISSIONS = ["--allow-net", "--allow-env", "--allow-read", "--allow-write"];

async function deno(args: string[]): Promise<void> {
  console.error(`$ deno ${args.join(" ")}`);
  const { code } = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "inherit",
    stderr: "inherit",
  })
    .output();
  if (code !== 0) throw new Error(`deno ${args[0]} failed with exit code ${code}`);
}

async function bundle(outDir: string): Promise<void> {
  for (const { name, entry } of PROGRAMS) {
    await deno([
      "bundle",
      "--quiet",
      "--platform",
      "deno",
      "--output",
      `${outDir}/${name}.js`,
      entry,
    ]);
  }
}

/** A failure already explained in one line: printed as is, without a backtrace. */
class BuildError extends Error {}

/**
 * `deno compile` of one bundle. Its output passes through on success (the embedded-files
 * report); on failure a download error becomes one line naming the bundle alternative.
 */
async function compileOne(args: string[]): Promise<void> {
  console.error(`$ deno ${args.join(" ")}`);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), { args }).output();
  await Deno.stdout.write(stdout);
  if (code === 0) {
    await Deno.stderr.write(stderr);
    return;
  }
  const text = new TextDecoder().decode(stderr);
  if (/dns error|error sending request|failed to lookup|download/i.test(text)) {
    throw new BuildError(
      "deno compile cannot download the Deno runtime it embeds (offline?); run `deno task " +
        "bundle` instead (one JS file per program, run with `deno run`), or retry online",
    );
  }
  await Deno.stderr.write(stderr);
  throw new BuildError(`deno compile failed with exit code ${code}`);
}

async function compile(outDir: string, targets: readonly (string | undefined)[]): Promise<void> {
  const bundles = await Deno.makeTempDir({ prefix: "bmdemo-compile-" });
  try {
    await bundle(bundles);
    for (const target of targets) {
      for (const { name, flags } of PROGRAMS) {
        const suffix = target ? `-${target}` : "";
        const exe = target?.includes("windows") ? ".exe" : "";
        await compileOne([
          "compile",
          // The bundle needs nothing of deno.json: without it, no npm package is embedded.
          "--no-config",
          ...PERMISSIONS,
          ...flags,
          ...(target ? ["--target", target] : []),
          "--output",
          `${outDir}/${name}${suffix}${exe}`,
          `${bundles}/${name}.js`,
        ]);
      }
    }
  } finally {
    await Deno.remove(bundles, { recursive: true });
  }
}

const BUILD_HELP = `usage: deno task bundle [--out dir]
       deno task compile [--target <triple>]... [--all] [--out dir]

bundle: writes dist/bmdemo-server.js and dist/bmdemo-cli.js, single files run with deno run.
compile: builds the server and CLI binaries from those bundles (downloads denort per target).

  --out dir            output directory (default dist)
  --target <triple>    compile for this target (repeatable), one of:
${TARGETS.map((target) => `                         ${target}`).join("\n")}
  --all                compile for every target
  -h, --help           this help`;

async function main(args: string[]): Promise<number> {
  // The task names the command (`build.ts bundle`), so messages name the task the user ran.
  const program = args[0] === "bundle" || args[0] === "compile"
    ? `deno task ${args[0]}`
    : "build.ts";
  const { values, positionals } = parseScriptArgs({
    args,
    allowPositionals: true,
    options: {
      target: { type: "string", multiple: true },
      all: { type: "boolean", default: false },
      out: { type: "string", default: "dist" },
    },
  }, { program, help: BUILD_HELP });
  const [command, extra] = positionals;
  if (extra !== undefined) usageError(program, `unexpected argument "${extra}"`);
  const targets = values.all ? TARGETS : values.target ?? [undefined];
  for (const target of targets) {
    if (target !== undefined && !(TARGETS as readonly string[]).includes(target)) {
      usageError(program, `unknown target "${target}": use one of ${TARGETS.join(", ")}`);
    }
  }
  await Deno.mkdir(values.out, { recursive: true });
  if (command === "bundle") await bundle(values.out);
  else if (command === "compile") await compile(values.out, targets);
  else usageError(program, `the first argument is bundle or compile: got "${command ?? ""}"`);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    if (error instanceof Error && !(error instanceof BuildError)) console.error(error.stack);
    Deno.exit(1);
  }
}
