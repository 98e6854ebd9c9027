import assert from "node:assert/strict";

const DOMAIN_MODULES = [
  "abort",
  "errors",
  "ids",
  "lifecycle",
  "query",
  "plans",
  "provider",
  "fake_provider",
  "store",
  "memory_store",
  "feeds",
  "executor",
  "engine",
  "immutable",
];

Deno.test("domain modules import neither gRPC nor the CLI", async () => {
  for (const name of DOMAIN_MODULES) {
    const source = await Deno.readTextFile(new URL(`../lib/${name}.ts`, import.meta.url));
    assert.doesNotMatch(source, /@grpc\/|from "\.\/grpc\//, `${name}.ts imports gRPC`);
    assert.doesNotMatch(source, /from "\.\/cli\//, `${name}.ts imports the CLI`);
  }
});

Deno.test("no module under lib/ imports lib/cli/ except lib/cli/ itself", async () => {
  for await (const entry of Deno.readDir(new URL("../lib/", import.meta.url))) {
    if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
    const source = await Deno.readTextFile(new URL(`../lib/${entry.name}`, import.meta.url));
    assert.doesNotMatch(source, /\.\/cli\//, `${entry.name} imports lib/cli`);
  }
});
