/**
 * `watch` and the connection failures of the CLI: no internal rows, every output format, an
 * unknown machine refused, colours, and the server stopping under a watch or a followed
 * operation (a real gRPC server that shuts down, in-process and in its own process).
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { main } from "../lib/cli/main.ts";
import type { CliIo } from "../lib/cli/session.ts";
import type { BmdemoServer } from "../lib/grpc/server.ts";
import { spawnServer } from "../scripts/server_process.ts";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  maintenanceServer,
  nextSubscription,
  SANITIZE,
  testServer,
} from "./helpers.ts";

interface Watching {
  /** Resolves with the exit code. */
  run: Promise<number>;
  out(): string;
  err(): string;
  /** Resolves once stdout contains `text`. */
  printed(text: string): Promise<void>;
  stop(): void;
}

function startCli(args: string[], address: string, extra: Partial<CliIo> = {}): Watching {
  let out = "";
  let err = "";
  const waiting: { text: string; resolve(): void }[] = [];
  const interrupt = new AbortController();
  const io: CliIo = {
    out: (t) => {
      out += t;
      for (const w of waiting.filter((w) => out.includes(w.text))) w.resolve();
    },
    err: (t) => void (err += t),
    env: {},
    interrupt: interrupt.signal,
    ...extra,
  };
  return {
    run: main([...args, "--server", address], io),
    out: () => out,
    err: () => err,
    printed(text) {
      if (out.includes(text)) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiting.push({ text, resolve });
      return promise;
    },
    stop: () => interrupt.abort(),
  };
}

/** Watches machine-1 in `format` while it enters maintenance; returns what watch printed. */
async function watchEntering(server: BmdemoServer, format: string, extra: Partial<CliIo> = {}) {
  const subscribed = nextSubscription(server.engine);
  const watch = startCli(["watch", "machine-1", "-o", format], server.address, extra);
  await subscribed;
  await enterMaintenance(server.engine, "machine-1");
  await watch.printed("SUCCEEDED");
  watch.stop();
  return { code: await watch.run, out: watch.out(), err: watch.err() };
}

Deno.test("watch prints no snapshot marker, in table, json and yaml", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  const table = await watchEntering(server, "table");
  assert.equal(table.code, 0, table.err);
  assert.doesNotMatch(table.out, /Snapshot complete|PHASE_UNSPECIFIED/);
  assert.match(table.out, /machine-1 \| SUCCEEDED \|/);
  const json = await watchEntering(server, "json");
  const events = json.out.trimEnd().split("\n").map((line) => JSON.parse(line));
  assert.ok(events.length > 0 && events.every((e) => e.snapshot?.machineId === "machine-1"));
  assert.ok(events.every((e) => e.kind !== "SNAPSHOT_COMPLETE"));
  const yaml = await watchEntering(server, "yaml");
  assert.equal(yaml.code, 0, yaml.err);
  const docs = parseAllDocuments(yaml.out).map((doc) => doc.toJS());
  assert.ok(docs.length > 0 && docs.every((e) => e.snapshot?.machineId === "machine-1"));
  assert.ok(docs.some((e) => e.snapshot?.phase === "SUCCEEDED"));
  assert.doesNotMatch(yaml.out, /^\s*[{[]/, "YAML, not JSON");
});

Deno.test("watch colours phases on a terminal, not with NO_COLOR", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  const coloured = await watchEntering(server, "table", { isTerminal: true });
  assert.ok(coloured.out.includes("\x1b[32mSUCCEEDED\x1b[39m"), coloured.out);
  const plain = await watchEntering(server, "table", { isTerminal: true, env: { NO_COLOR: "1" } });
  assert.ok(!plain.out.includes("\x1b["), plain.out);
});

Deno.test("watch on an unknown machine is refused with NOT_FOUND", SANITIZE, async () => {
  await using server = await testServer();
  const watch = startCli(["watch", "nope"], server.address);
  assert.equal(await watch.run, 3);
  assert.match(watch.err(), /code = NotFound/);
  assert.match(watch.err(), /hint: bmdemo-cli list shows the registered machines/);
  assert.equal(watch.out(), "");
});

Deno.test("watch exits 3 saying the server is shutting down", SANITIZE, async () => {
  await using server = await testServer();
  importMachines(server.engine, 1);
  const subscribed = nextSubscription(server.engine);
  const watch = startCli(["watch"], server.address);
  await subscribed;
  await server.shutdown();
  assert.equal(await watch.run, 3, watch.err());
  assert.match(watch.err(), /^error: the bmdemo server at .* is shutting down\n/);
  assert.doesNotMatch(watch.err(), /cannot reach|deno task server/);
});

Deno.test(
  "cross-process: watch exits non-zero when the server process stops",
  SANITIZE,
  async () => {
    await using server = await spawnServer(["--timing", "zero"]);
    const setup = startCli(["import", "1"], server.address);
    assert.equal(await setup.run, 0, setup.err());
    const entering = startCli(["enter-maintenance", "machine-1"], server.address);
    assert.equal(await entering.run, 0, entering.err());
    const watch = startCli(["watch", "machine-1"], server.address);
    // Once a row of an operation started now is printed, the watch is open on the server.
    for (let n = 0; !watch.out().includes(" | machine-1 | "); n++) {
      const verb = n % 2 === 0 ? "exit-maintenance" : "enter-maintenance";
      const op = startCli([verb, "machine-1"], server.address);
      assert.equal(await op.run, 0, op.err());
    }
    await server.stop("SIGTERM");
    assert.equal(await watch.run, 3, watch.err());
    assert.match(watch.err(), /^error: the bmdemo server at .* (is shutting down|ended the watch)/);
  },
);

Deno.test(
  "the server stopping during a reimage: a line of its own, and the outcome is unknown",
  SANITIZE,
  async () => {
    const repave = holdVerb();
    await using server = await maintenanceServer({ hooks: { repave: repave.hook } });
    const reimage = startCli(["reimage", "machine-1"], server.address);
    await repave.entered;
    await reimage.printed("→ repave-image...");
    const stopping = server.shutdown();
    // The engine cancels the reimage at shutdown once its verb returns.
    repave.release();
    await stopping;
    const code = await reimage.run;
    assert.equal(code, 3, reimage.err() + reimage.out());
    assert.ok(reimage.out().endsWith("\n"), `progress line left open: ${reimage.out()}`);
    assert.match(
      reimage.err(),
      /^error: the bmdemo server at .* shut down while operation \S+ ran; its outcome is unknown\n/,
    );
    assert.match(reimage.err(), /hint: bmdemo-cli op \S+ shows how it ended/);
  },
);
