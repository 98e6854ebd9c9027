import assert from "node:assert/strict";

Deno.test("domain modules (every lib/*.ts) import neither gRPC nor the CLI", async () => {
  const names: string[] = [];
  for await (const entry of Deno.readDir(new URL("../lib/", import.meta.url))) {
    if (entry.isFile && entry.name.endsWith(".ts")) names.push(entry.name.slice(0, -3));
  }
  // A guard that the listing worked: the engine's core modules are there.
  for (const core of ["store", "executor", "engine", "lifecycle", "sqlite_store"]) {
    assert.ok(names.includes(core), core);
  }
  for (const name of names) {
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
