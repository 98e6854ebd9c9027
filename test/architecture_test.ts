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

Deno.test("the CLI never loads grpc-js, not even through a dynamic import", async () => {
  // The CLI's start-up time is a product figure (issue 6): grpc-js costs ~35 ms to load, so the
  // CLI talks through lib/client/mod.ts (connect-es). Type-only imports are fine; code edges are
  // not.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("../cli.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success, "deno info failed");
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: { specifier: string; dependencies?: { code?: { specifier: string } }[] }[];
    redirects?: Record<string, string>;
  };
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  const resolve = (s: string): string => graph.redirects?.[s] ?? s;
  const seen = new Set<string>();
  const pending = graph.roots.map(resolve);
  while (pending.length > 0) {
    const specifier = pending.pop()!;
    if (seen.has(specifier)) continue;
    seen.add(specifier);
    for (const dep of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (dep.code) pending.push(resolve(dep.code.specifier));
    }
  }
  assert.ok([...seen].some((s) => s.endsWith("/lib/client/mod.ts")), "graph walk failed");
  const grpcJs = [...seen].filter((s) => s.includes("@grpc/grpc-js"));
  assert.deepEqual(grpcJs, [], "the CLI's module graph reaches grpc-js");
});
