/**
 * The layers of lib/, checked from the actual import statements of every module. Each folder's
 * `mod.ts` states the same rules in prose; the rows below are what is enforced.
 */
import assert from "node:assert/strict";
import { SANITIZE } from "./helpers.ts";

/** What a folder of lib/ may depend on: a new folder is one row. */
interface Layer {
  /** The folders of lib/ its modules may import (its own is always allowed). */
  mayImport: readonly string[];
  /** Packages (npm or node:) it must not import: the domain knows nothing of the wire. */
  forbiddenPackages?: RegExp;
  /** Modules of lib/ it must not import even though their folder is allowed. */
  forbiddenModules?: readonly string[];
}

// gRPC, HTTP and the CLI's terminal are surfaces: the domain imports none of them.
const SURFACES = /^(npm:)?@grpc\/|^(npm:)?@connectrpc\/|^(npm:)?grpc-health-check|^node:http2?$/;

const LAYERS: Record<string, Layer> = {
  gen: { mayImport: [] },
  model: { mayImport: ["gen"], forbiddenPackages: SURFACES },
  store: { mayImport: ["model", "gen"], forbiddenPackages: SURFACES },
  provider: { mayImport: ["model", "gen"], forbiddenPackages: SURFACES },
  engine: { mayImport: ["store", "provider", "model", "gen"], forbiddenPackages: SURFACES },
  runtime: { mayImport: [], forbiddenPackages: SURFACES },
  // The gRPC layer serves an engine it is given: it composes none (no provider, no store
  // implementation), so the engine is built in one place (server.ts, the demo, tests).
  grpc: {
    mayImport: ["engine", "store", "model", "gen", "runtime"],
    forbiddenModules: ["store/memory.ts", "store/sqlite.ts"],
  },
  // The HTTP surface (dashboard, events, health, routes mounted by others) serves the same
  // engine beside gRPC and shares nothing with it but the runtime's token check.
  http: {
    mayImport: ["engine", "store", "model", "gen", "runtime"],
    forbiddenPackages: /^(npm:)?@grpc\/|^(npm:)?@connectrpc\//,
    forbiddenModules: ["store/memory.ts", "store/sqlite.ts"],
  },
  // Metrics observe the engine (its event feed, its store at scrape time) and are handed to the
  // surfaces as plain observers and routes: they import no surface, and nothing of the domain
  // imports them.
  metrics: {
    mayImport: ["engine", "store", "model", "gen"],
    forbiddenPackages: SURFACES,
    forbiddenModules: ["store/memory.ts", "store/sqlite.ts"],
  },
  // What a server serves, composed once (server.ts and the demo): gRPC, the HTTP surface and the
  // metrics wired into both, on an engine it is given.
  serve: { mayImport: ["grpc", "http", "metrics", "engine", "provider", "runtime"] },
  // The client side of the wire: connect-es over the generated descriptors, never grpc-js.
  client: { mayImport: ["gen"], forbiddenPackages: /^(npm:)?@grpc\// },
  cli: { mayImport: ["client", "model", "gen"] },
};

const LIB = new URL("../lib/", import.meta.url);

/** Every hand-written module of lib/ (relative to it) with its relative and package imports. */
async function libModules(): Promise<Map<string, { local: string[]; packages: string[] }>> {
  const modules = new Map<string, { local: string[]; packages: string[] }>();
  async function walk(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(new URL(dir, LIB))) {
      const path = `${dir}${entry.name}`;
      if (entry.isDirectory && path !== "gen") await walk(`${path}/`);
      if (entry.isFile && entry.name.endsWith(".ts")) {
        const source = await Deno.readTextFile(new URL(path, LIB));
        modules.set(path, parseImports(path, source));
      }
    }
  }
  await walk("");
  return modules;
}

// Import and re-export statements (not `@example` code in comments: those lines start with *),
// and dynamic imports.
const STATIC =
  /^\s*(?:import|export)\s+(?:type\s+)?(?:\{[^}]*\}|\*(?:\s+as\s+\w+)?|\w+(?:\s*,\s*\{[^}]*\})?)\s*from\s*"([^"]+)"|^\s*import\s*"([^"]+)"/gm;
const DYNAMIC = /\bimport\(\s*"([^"]+)"\s*\)/g;

function parseImports(path: string, source: string): { local: string[]; packages: string[] } {
  const local: string[] = [];
  const packages: string[] = [];
  const specifiers = [
    ...[...source.matchAll(STATIC)].map((m) => m[1] ?? m[2]),
    ...[...source.matchAll(DYNAMIC)].map((m) => m[1]),
  ];
  for (const specifier of specifiers) {
    const resolved = new URL(specifier, new URL(path, LIB)).href;
    // The project's manifest (its version) is the one file outside lib/ a module may import.
    if (resolved === new URL("../deno.json", LIB).href) continue;
    if (specifier.startsWith(".")) {
      local.push(resolved.slice(LIB.href.length));
    } else {
      packages.push(specifier);
    }
  }
  return { local, packages };
}

function folderOf(path: string): string {
  return path.includes("/") ? path.slice(0, path.indexOf("/")) : "";
}

/** Every import of lib/ that breaks a row of {@linkcode LAYERS}, one line each. */
function violations(modules: Map<string, { local: string[]; packages: string[] }>): string[] {
  const found: string[] = [];
  for (const [path, imports] of modules) {
    const folder = folderOf(path);
    const layer = LAYERS[folder];
    if (!layer) {
      found.push(`${path}: lib/${folder || path} has no row in LAYERS`);
      continue;
    }
    for (const target of imports.local) {
      const to = folderOf(target);
      if (to === "") found.push(`${path} imports lib/${target}, outside every layer folder`);
      else if (to !== folder && !layer.mayImport.includes(to)) {
        found.push(`${path} imports lib/${target}: ${folder} may import ${layer.mayImport}`);
      } else if (layer.forbiddenModules?.includes(target)) {
        found.push(`${path} imports lib/${target}, which ${folder} must not import`);
      }
    }
    for (const pkg of imports.packages) {
      if (layer.forbiddenPackages?.test(pkg)) found.push(`${path} imports ${pkg}`);
    }
  }
  return found;
}

/** One import cycle among the modules, as a path, or `undefined`. */
function findCycle(modules: Map<string, { local: string[] }>): string[] | undefined {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  function visit(path: string): string[] | undefined {
    if (state.get(path) === "done") return undefined;
    if (state.get(path) === "open") return [...stack.slice(stack.indexOf(path)), path];
    state.set(path, "open");
    stack.push(path);
    for (const next of modules.get(path)?.local ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(path, "done");
    return undefined;
  }
  for (const path of modules.keys()) {
    const cycle = visit(path);
    if (cycle) return cycle;
  }
  return undefined;
}

Deno.test(
  "every module of lib/ imports only what its folder's row in LAYERS allows",
  SANITIZE,
  async () => {
    const modules = await libModules();
    // A guard that the walk worked: the core modules are there.
    for (const core of ["store/mod.ts", "engine/executor.ts", "engine/mod.ts", "provider/mod.ts"]) {
      assert.ok(modules.has(core), core);
    }
    assert.deepEqual(violations(modules), []);
  },
);

Deno.test(
  "the layer check catches a forbidden import, a surface package and a stray folder",
  SANITIZE,
  () => {
    const modules = new Map([
      ["store/mod.ts", { local: ["engine/events.ts"], packages: [] }],
      ["provider/fake.ts", { local: ["store/mod.ts"], packages: [] }],
      ["engine/mod.ts", { local: ["cli/main.ts"], packages: ["@grpc/grpc-js"] }],
      ["grpc/server.ts", { local: ["provider/fake.ts", "store/sqlite.ts"], packages: [] }],
      ["stray/mod.ts", { local: [], packages: [] }],
    ]);
    assert.equal(violations(modules).length, 7, violations(modules).join("\n"));
  },
);

Deno.test("no module under lib/ imports lib/cli/ except lib/cli/ itself", SANITIZE, async () => {
  for (const [path, imports] of await libModules()) {
    if (folderOf(path) === "cli") continue;
    assert.deepEqual(imports.local.filter((target) => folderOf(target) === "cli"), [], path);
  }
});

Deno.test("lib/ has no import cycle", SANITIZE, async () => {
  const modules = await libModules();
  assert.equal(findCycle(modules), undefined);
  const cyclic = new Map([["a.ts", { local: ["b.ts"] }], ["b.ts", { local: ["a.ts"] }]]);
  assert.deepEqual(findCycle(cyclic), ["a.ts", "b.ts", "a.ts"]);
});

Deno.test("every folder of lib/ opens its mod.ts with a @module comment", SANITIZE, async () => {
  for (const folder of Object.keys(LAYERS).filter((name) => name !== "gen")) {
    const source = await Deno.readTextFile(new URL(`${folder}/mod.ts`, LIB));
    const opening = source.slice(0, source.indexOf("*/"));
    assert.ok(source.startsWith("/**") && opening.includes("@module"), `lib/${folder}/mod.ts`);
  }
});

Deno.test("the CLI never loads grpc-js, not even through a dynamic import", SANITIZE, async () => {
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
