/**
 * `watch --reconnect`: the watch outlives a server restart (real processes: the server and the
 * CLI), resumes with what changed while it was away (in-process, with the retry's wait held by
 * the test), and without the flag a stopped server still ends the watch with exit 3.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../lib/cli/main.ts";
import { palette } from "../lib/cli/format.ts";
import { watchCommand } from "../lib/cli/operation_queries.ts";
import type { CliIo, Session } from "../lib/cli/session.ts";
import { backoffDelay } from "../lib/cli/watch_reconnect.ts";
import { abortableDelay } from "../lib/model/abort.ts";
import { connectClient } from "../lib/client/mod.ts";
import { MachineService, OperationService } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { spawnServer } from "../scripts/server_process.ts";
import { importMachines, nextSubscription, SANITIZE, testServer } from "./helpers.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Text that grows, and promises that resolve once it contains a string. */
class Transcript {
  #text = "";
  #waiting: { text: string; from: number; resolve(): void; reject(error: Error): void }[] = [];
  #closed = false;

  add(chunk: string): void {
    this.#text += chunk;
    this.#waiting = this.#waiting.filter((w) => {
      if (!this.#text.includes(w.text, w.from)) return true;
      w.resolve();
      return false;
    });
  }

  get text(): string {
    return this.#text;
  }

  /** The writer is gone: what is still awaited will never come. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiting) w.reject(this.#missing(w.text));
    this.#waiting = [];
  }

  #missing(text: string): Error {
    return new Error(`ended without ${JSON.stringify(text)}:\n${this.#text}`);
  }

  /** Resolves once the text contains `text` at or after position `from`. */
  shows(text: string, from = 0): Promise<void> {
    if (this.#text.includes(text, from)) return Promise.resolve();
    if (this.#closed) return Promise.reject(this.#missing(text));
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#waiting.push({ text, from, resolve, reject });
    return promise;
  }
}

/** Runs a CLI command in this process; asserts it exits 0. */
async function run(address: string, ...args: string[]): Promise<string> {
  let out = "";
  let err = "";
  const io: CliIo = { out: (t) => void (out += t), err: (t) => void (err += t), env: {} };
  const code = await main([...args, "--server", address], io);
  assert.equal(code, 0, `${args.join(" ")}: ${err}`);
  return out;
}

/** `bmdemo-cli watch …` in its own process, its stdout and stderr collected as they come. */
function watchProcess(address: string, ...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      CLI,
      "--server",
      address,
      "watch",
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Transcript();
  const err = new Transcript();
  const drained = Promise.all([
    child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (chunk) => out.add(chunk), close: () => out.close() }),
    ),
    child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (chunk) => err.add(chunk), close: () => err.close() }),
    ),
  ]);
  return {
    out,
    err,
    async exit(signal?: Deno.Signal): Promise<number> {
      if (signal) child.kill(signal);
      const [status] = await Promise.all([child.status, drained]);
      return status.code;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await Promise.all([child.status, drained]);
    },
  };
}

/**
 * Toggles machine-1 in and out of maintenance until the watch prints one of its rows: then the
 * watch is open on the server (an operation that ended before it subscribed is never shown).
 */
async function untilWatching(address: string, out: Transcript): Promise<string> {
  const verbs = ["enter-maintenance", "exit-maintenance"];
  let n = 0;
  while (!out.text.includes(" | machine-1 | ")) await run(address, verbs[n++ % 2], "machine-1");
  return verbs[n % 2];
}

Deno.test(
  "cross-process: watch --reconnect outlives a server restart and prints what runs after it",
  SANITIZE,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-watch-" });
    try {
      const db = `${dir}/state.db`;
      const first = await spawnServer(["--timing", "zero", "--db", db]);
      const port = first.address.split(":").at(-1)!;
      await run(first.address, "import", "1");
      await using watch = watchProcess(first.address, "--reconnect", "machine-1");
      await watch.out.shows("Watching operation events");
      const verb = await untilWatching(first.address, watch.out);
      await first.stop("SIGTERM");
      await watch.err.shows("went away; reconnecting (Ctrl+C to stop)");
      await using second = await spawnServer(["--timing", "zero", "--db", db, "--port", port]);
      await watch.err.shows(`watch: reconnected to the bmdemo server at ${first.address} after `);
      const from = watch.out.text.length;
      const started = await run(second.address, verb, "machine-1");
      const opId = /op-[0-9a-f]{8}/.exec(started)?.[0];
      assert.ok(opId, started);
      await watch.out.shows(`${opId} | machine-1 | SUCCEEDED |`, from);
      assert.equal(await watch.exit("SIGINT"), 0, watch.err.text);
      assert.match(watch.out.text, /\nStopped watching\.\n$/);
      assert.equal(
        watch.err.text.match(/went away/g)?.length,
        1,
        `one line for the outage, however many retries: ${watch.err.text}`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "cross-process: without --reconnect, a stopped server ends the watch with exit 3",
  SANITIZE,
  async () => {
    const server = await spawnServer(["--timing", "zero"]);
    await run(server.address, "import", "1");
    await using watch = watchProcess(server.address, "machine-1");
    await watch.out.shows("Watching operation events");
    await untilWatching(server.address, watch.out);
    await server.stop("SIGTERM");
    assert.equal(await watch.exit(), 3, watch.err.text);
    assert.doesNotMatch(watch.err.text, /reconnect/);
  },
);

Deno.test(
  "cross-process: watch --reconnect names a running operation a fresh server does not know",
  SANITIZE,
  async () => {
    const hang = ["--timing", "zero", "--fault", "repave-image:hang"];
    const first = await spawnServer(hang);
    const port = first.address.split(":").at(-1)!;
    await run(first.address, "import", "1");
    await run(first.address, "enter-maintenance", "machine-1");
    await using watch = watchProcess(first.address, "--reconnect");
    await watch.out.shows("Watching operation events");
    await untilWatching(first.address, watch.out);
    await run(first.address, "enter-maintenance", "machine-1");
    const started = await run(first.address, "reimage", "machine-1", "--no-wait");
    const opId = /op-[0-9a-f]{8}/.exec(started)?.[0];
    assert.ok(opId, started);
    await watch.out.shows(`${opId} | machine-1 | RUNNING | stage=repave-image`);
    // Killed: no last event, the operation was RUNNING when the server vanished.
    await first.stop("SIGKILL");
    await watch.err.shows("went away; reconnecting");
    await using second = await spawnServer(["--timing", "zero", "--port", port]);
    await watch.err.shows(
      `watch: operation ${opId} is unknown to the server since it restarted; ` +
        "its outcome was not recorded\n",
    );
    assert.equal(await watch.exit("SIGINT"), 0, watch.err.text);
    assert.ok(second.pid > 0);
  },
);

/** A session of the CLI's own clients, as main() builds it. */
function sessionFor(address: string, io: CliIo, interrupt: AbortSignal): Session {
  return {
    io,
    address,
    machines: connectClient(MachineService, address),
    operations: connectClient(OperationService, address),
    colors: palette(false),
    interrupt,
  };
}

Deno.test(
  "watch --reconnect prints, marked, what ended while disconnected",
  SANITIZE,
  async () => {
    const first = await testServer();
    importMachines(first.engine, 2);
    const out = new Transcript();
    const err = new Transcript();
    const stop = new AbortController();
    const session = sessionFor(first.address, {
      out: (t) => out.add(t),
      err: (t) => err.add(t),
    }, stop.signal);
    // The retry waits until the test lets it go: the outage lasts exactly as long as the test
    // needs.
    const retry = Promise.withResolvers<void>();
    const retries: number[] = [];
    const subscribed = nextSubscription(first.engine);
    const watching = watchCommand(session, undefined, "table", {
      reconnect: true,
      sleep: (ms) => {
        retries.push(ms);
        return retry.promise;
      },
    });
    try {
      await subscribed;
      await run(first.address, "enter-maintenance", "machine-1");
      await out.shows("machine-1 | SUCCEEDED");
      await first.shutdown();
      await err.shows("went away; reconnecting");
      await using second = await testServer({ port: first.port });
      importMachines(second.engine, 2);
      // Created and ended while the watch was away: only a resync can show it.
      const ended = await run(second.address, "enter-maintenance", "machine-2");
      const opId = /op-[0-9a-f]{8}/.exec(ended)?.[0];
      assert.ok(opId, ended);
      const from = out.text.length;
      retry.resolve();
      await err.shows("watch: reconnected to the bmdemo server");
      await out.shows(`${opId} | machine-2 | SUCCEEDED | stage=`, from);
      assert.match(out.text.slice(from), /\| Resync: ended while disconnected\n/);
      // The machine-1 operation ended before the outage: it is not printed again.
      assert.doesNotMatch(out.text.slice(from), /machine-1/);
      assert.deepEqual(retries.length, 1);
      stop.abort();
      assert.equal(await watching, 0, err.text);
    } finally {
      stop.abort();
      await watching.catch(() => {});
      session.machines.close();
      session.operations.close();
      await first.shutdown();
    }
  },
);

Deno.test("Ctrl+C while reconnecting stops the watch with exit 130", SANITIZE, async () => {
  const server = await testServer();
  const err = new Transcript();
  const stop = new AbortController();
  const out = new Transcript();
  const session = sessionFor(server.address, {
    out: (t) => out.add(t),
    err: (t) => err.add(t),
  }, stop.signal);
  importMachines(server.engine, 1);
  const subscribed = nextSubscription(server.engine);
  const watching = watchCommand(session, undefined, "table", {
    reconnect: true,
    sleep: (_ms, signal) => abortableDelay(3_600_000, signal),
  });
  try {
    await subscribed;
    // Reconnecting starts once the first connection was confirmed: a row printed.
    await run(server.address, "enter-maintenance", "machine-1");
    await out.shows("machine-1 | SUCCEEDED");
    await server.shutdown();
    await err.shows("went away; reconnecting");
    stop.abort();
    assert.equal(await watching, 130);
    assert.match(err.text, /\nStopped watching while disconnected\.\n$/);
  } finally {
    stop.abort();
    await watching.catch(() => {});
    session.machines.close();
    session.operations.close();
  }
});

Deno.test("the retry delay doubles from 0.5 s to 10 s, jittered", SANITIZE, () => {
  assert.deepEqual([0, 1, 2, 5, 40].map((n) => backoffDelay(n, 0)), [250, 500, 1000, 5000, 5000]);
  assert.deepEqual([0, 1, 5, 40].map((n) => backoffDelay(n, 1)), [500, 1000, 10000, 10000]);
});
