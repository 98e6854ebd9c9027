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
 * runtime of each target from Deno's download server the first time.
 *
 * @module
 */

import { SERVER_V8_FLAGS } from "./server_process.ts";
import { parseArgs } from "node:util";

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
  { name: "bmdemo-server", entry: "server.ts", flags: [`--v8-flags=${SERVER_V8_FLAGS.join(",")}`] },
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

async function compile(outDir: string, targets: readonly (string | undefined)[]): Promise<void> {
  for (const target of targets) {
    for (const { name, entry, flags } of PROGRAMS) {
      const suffix = target ? `-${target}` : "";
      const exe = target?.includes("windows") ? ".exe" : "";
      await deno([
        "compile",
        ...PERMISSIONS,
        ...flags,
        ...(target ? ["--target", target] : []),
        "--output",
        `${outDir}/${name}${suffix}${exe}`,
        entry,
      ]);
    }
  }
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      target: { type: "string", multiple: true },
      all: { type: "boolean", default: false },
      out: { type: "string", default: "dist" },
    },
  });
  const [command] = positionals;
  const targets = values.all ? TARGETS : values.target ?? [undefined];
  for (const target of targets) {
    if (target !== undefined && !(TARGETS as readonly string[]).includes(target)) {
      console.error(`unknown target "${target}": use one of ${TARGETS.join(", ")}`);
      return 2;
    }
  }
  await Deno.mkdir(values.out, { recursive: true });
  if (command === "bundle") await bundle(values.out);
  else if (command === "compile") await compile(values.out, targets);
  else {
    console.error("usage: build.ts bundle | compile [--target <triple>]... [--all] [--out dist]");
    return 2;
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
