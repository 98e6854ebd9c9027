import assert from "node:assert/strict";
import {
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { main } from "../lib/cli/main.ts";
import type { CliIo } from "../lib/cli/session.ts";
import { SANITIZE, testEngine, testServer } from "./helpers.ts";

Deno.test(
  "deno task demo runs the whole tour without a terminal and exits 0",
  SANITIZE,
  async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "demo"],
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.doesNotMatch(stdout, /Press Enter/);
    for (
      const expected of [
        "Step 1: Import Machines into Inventory",
        "Step 2: Enter Maintenance Mode",
        "Step 3: Reimage (Full Provisioning Flow), with Live Logs",
        "Step 4: Exit Maintenance",
        "Step 5: Idempotency",
        "Step 6: A Simple Reboot",
        "Step 7: Cancellation",
        "Step 8: When Hardware Fails",
        "Step 9: Operation History and Audit Trail",
        "Demo Complete",
        "$ bmdemo-cli reimage machine-1 -v",
        "  │ [repave] Writing image to disk...",
        "  ✓ verify-in-cluster",
        "→ reboot... ✓",
        "○ CANCELED",
      ]
    ) {
      assert.ok(stdout.includes(expected), `missing: ${expected}`);
    }
    for (
      const step of [
        "set-netboot",
        "reboot-to-netboot",
        "repave-image",
        "join-cluster",
        "verify-in-cluster",
      ]
    ) {
      assert.ok(stdout.includes(`→ ${step}...`), step);
    }
    // Step 8, on the demo server's --fault repave-image:2@machine-4: both attempts of the step
    // fail (one retry), the machine is in ATTENTION, and a second reimage recovers it.
    const fault = stdout.slice(stdout.indexOf("Step 8: When Hardware Fails"));
    assert.match(
      fault,
      /\$ bmdemo-cli reimage machine-4 -v\n[^$]*attempt 1\n[^$]*Retry 1\/1[^$]*attempt 2\n[^$]*✗ FAILED: injected fault: repave-image failed/,
    );
    assert.match(fault, /\$ bmdemo-cli list\n[^$]*machine-4 +MAINT +⚠ATTN/);
    assert.match(fault, /\$ bmdemo-cli reimage machine-4\n[^$]*✓ SUCCEEDED\n/);
    assert.match(fault, /\$ bmdemo-cli list\n[^$]*machine-4 +MAINT +MAINT +✓ +✓/);
    assert.match(
      stdout,
      /The tour canceled it through the API while it ran; from another terminal:/,
    );
    // The idempotent replay answers with the same operation.
    const replays = [
      ...stdout.matchAll(/\$ bmdemo-cli reimage machine-2 --request-id \S+\nOperation: (\S+)\n/g),
    ].map((m) => m[1]);
    assert.equal(replays.length, 2);
    assert.equal(replays[0], replays[1]);
  },
);

Deno.test(
  "scripts/run-bmdemo.sh runs the tour against a server process and stops exactly it",
  SANITIZE,
  async () => {
    const out = await new Deno.Command("bash", {
      args: ["scripts/run-bmdemo.sh"],
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const pid = Number(/Server \(pid (\d+)\) listening on 127\.0\.0\.1:\d+/.exec(stdout)?.[1]);
    assert.ok(pid > 0, stdout.slice(0, 500));
    assert.match(stdout, /Demo Complete/);
    assert.ok(stdout.includes(`Stopping the server (pid ${pid})...`));
    // The server process is gone.
    assert.throws(() => Deno.kill(pid, "SIGCONT"), Deno.errors.NotFound);
    // Its log outlives the script, at the path printed last and at start.
    const log = /The server's log is kept at (\S+)\n$/.exec(stdout)?.[1] ?? "";
    assert.ok(stdout.includes(`its log (kept after exit): ${log}\n`), stdout.slice(0, 500));
    try {
      assert.match(await Deno.readTextFile(log), /listening on 127\.0\.0\.1:\d+/);
    } finally {
      await Deno.remove(log).catch(() => {});
    }
  },
);

// --- Stopping: failures and Ctrl+C ------------------------------------------------------------

const ROOT = new URL("..", import.meta.url).pathname;

/** A bound on waits that must end, so that a regression (the tour hanging) fails, not hangs. */
const HANG_MS = 30_000;

async function beforeDeadline<T>(promise: Promise<T>, ms: number): Promise<T | "deadline"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"deadline">((resolve) => {
    timer = setTimeout(() => resolve("deadline"), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Captured CLI io with an interrupt, and a way to wait for stdout to match. */
function tourIo(interrupt: AbortSignal): {
  io: CliIo;
  out(): string;
  err(): string;
  waitFor(pattern: RegExp): Promise<void>;
} {
  let out = "";
  let err = "";
  let waiter: { pattern: RegExp; resolve: () => void } | undefined;
  return {
    io: {
      out: (text) => {
        out += text;
        if (waiter?.pattern.test(out)) waiter.resolve();
      },
      err: (text) => void (err += text),
      env: {},
      interrupt,
    },
    out: () => out,
    err: () => err,
    waitFor: (pattern) => {
      if (pattern.test(out)) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiter = { pattern, resolve };
      return promise;
    },
  };
}

Deno.test(
  "the tour stops at the first command that fails, with one message",
  SANITIZE,
  async () => {
    await using server = await testServer({
      engine: testEngine({ faults: { repave: { kind: "fail" } } }),
    });
    const capture = tourIo(new AbortController().signal);
    const code = await main(["tour", "--server", server.address], capture.io);
    assert.equal(code, 4);
    assert.match(capture.out(), /Step 3: Reimage/);
    assert.doesNotMatch(capture.out(), /Step 4|Demo Complete/);
    assert.equal(capture.err().match(/The tour stopped/g)?.length, 1, capture.err());
  },
);

Deno.test(
  "Ctrl+C during a tour operation cancels it and ends the tour with 130",
  SANITIZE,
  async () => {
    const hold = Promise.withResolvers<void>();
    const reached = Promise.withResolvers<void>();
    await using server = await testServer({
      engine: testEngine({
        hooks: {
          repave: () => {
            reached.resolve();
            return hold.promise;
          },
        },
      }),
    });
    const interrupt = new AbortController();
    const capture = tourIo(interrupt.signal);
    const tour = main(["tour", "--server", server.address], capture.io);
    await reached.promise;
    interrupt.abort();
    const code = await beforeDeadline(tour, HANG_MS);
    hold.resolve();
    assert.equal(code, 130, capture.err());
    assert.doesNotMatch(capture.out(), /Step 4|Demo Complete/);
    assert.match(capture.err(), /Interrupted: the tour stopped and canceled the operation/);
    assert.doesNotMatch(capture.err(), /continues on the server/);
    const reimages = server.engine.listOperations({ filter: "machine_id=machine-1" }).items
      .filter((op) => op.type === OperationType.REIMAGE);
    assert.deepEqual(reimages.map((op) => OperationPhase[op.phase]), ["CANCELED"]);
  },
);

Deno.test(
  "deno task demo against an unreachable server prints one error before any narration",
  SANITIZE,
  async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "demo", "--server", "127.0.0.1:1"],
      cwd: ROOT,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 3, stderr);
    assert.equal(stdout, "");
    // One message: the error, and at most its one hint line.
    const lines = stderr.trim().split("\n");
    assert.equal(lines.filter((line) => !line.startsWith("hint: ")).length, 1, stderr);
    assert.ok(lines.length <= 2, stderr);
    assert.match(lines[0], /127\.0\.0\.1:1/);
  },
);

/**
 * Runs a demo command line (default `deno task demo`) in a pseudo-terminal (`script` from
 * util-linux), so it pauses for Enter and Ctrl+C is a real SIGINT from the terminal to its
 * process group.
 */
class TerminalDemo {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #output = "";
  #reading: Promise<void>;
  #changed = Promise.withResolvers<void>();

  constructor(command = `"${Deno.execPath()}" task --quiet demo`) {
    this.#child = new Deno.Command("script", {
      args: ["-qefc", command, "/dev/null"],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const stdout = this.#child.stdout;
    this.#reading = (async () => {
      for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
        this.#output += chunk;
        this.#changed.resolve();
        this.#changed = Promise.withResolvers<void>();
      }
      this.#changed.resolve();
    })();
  }

  get output(): string {
    return this.#output;
  }

  /** Waits until the output matches; presses Enter at every pause on the way. */
  async until(pattern: RegExp): Promise<void> {
    let pauses = 0;
    for (;;) {
      if (pattern.test(this.#output)) return;
      const seen = this.#output.match(/Press Enter to continue/g)?.length ?? 0;
      for (; pauses < seen; pauses++) await this.type("\r");
      const changed = this.#changed.promise;
      if (pattern.test(this.#output)) return;
      await changed;
      const status = await Promise.race([this.#child.status, Promise.resolve(undefined)]);
      if (status && !pattern.test(this.#output)) {
        throw new Error(`exited before ${pattern}: ${this.#output}`);
      }
    }
  }

  async type(text: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(text));
  }

  /** The exit code; fails (and kills the demo) if it does not exit within `deadlineMs`. */
  async exit(deadlineMs = HANG_MS): Promise<number> {
    const status = await beforeDeadline(this.#child.status, deadlineMs);
    if (status === "deadline") {
      this.#child.kill("SIGKILL");
      await this.#child.status;
      await this.#reading;
      throw new Error(`still running ${deadlineMs} ms after Ctrl+C:\n${this.#output}`);
    }
    const { code } = status;
    await this.#reading;
    await this.#writer.close().catch(() => {});
    return code;
  }
}

async function assertPortClosed(port: number): Promise<void> {
  await assert.rejects(
    () => Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
  );
}

Deno.test("Ctrl+C at the pause ends deno task demo at once with 130", SANITIZE, async () => {
  const demo = new TerminalDemo();
  await demo.until(/Press Enter to continue/);
  const port = Number(/server on 127\.0\.0\.1:(\d+)/.exec(demo.output)?.[1]);
  // The dashboard is announced before the first pause, pointed at by the narration, and live.
  const dashboard = /^Live dashboard: (http:\/\/127\.0\.0\.1:(\d+)\/)\r?$/m.exec(demo.output);
  assert.ok(dashboard, demo.output);
  assert.ok(demo.output.includes(`ℹ Live dashboard: ${dashboard[1]} (every step`), demo.output);
  const page = await fetch(dashboard[1]);
  assert.match(await page.text(), /<title>bmdemo dashboard<\/title>/);
  // It serves the server's metrics too, wired as server.ts wires them: gRPC calls observed,
  // an open event stream counted among the watchers.
  const events = await fetch(`${dashboard[1]}events`);
  const metrics = await (await fetch(`${dashboard[1]}metrics`)).text();
  await events.body!.cancel();
  assert.match(metrics, /^bmdemo_machines\{/m, metrics);
  assert.match(metrics, /^bmdemo_grpc_requests_total\{.*\} [1-9]/m, metrics);
  assert.match(metrics, /^bmdemo_watchers 1$/m, metrics);
  await demo.type("\x03");
  assert.equal(await demo.exit(), 130, demo.output);
  assert.match(demo.output, /Interrupted: the tour stopped\./);
  assert.doesNotMatch(demo.output, /Phase vs Effective State/);
  await assertPortClosed(port);
  await assertPortClosed(Number(dashboard[2]));
});

Deno.test(
  "deno task demo --no-web serves no dashboard and the tour does not mention one",
  SANITIZE,
  async () => {
    const demo = new TerminalDemo(`"${Deno.execPath()}" task --quiet demo --no-web`);
    await demo.until(/Press Enter to continue/);
    await demo.type("\x03");
    assert.equal(await demo.exit(), 130, demo.output);
    assert.match(demo.output, /Started a bmdemo server on/);
    assert.doesNotMatch(demo.output, /dashboard/i);
  },
);

Deno.test(
  "Ctrl+C during an operation ends deno task demo with 130 and cancels it",
  SANITIZE,
  async () => {
    const demo = new TerminalDemo();
    await demo.until(/reimage machine-1 -v[^]*→ set-netboot/);
    const port = Number(/server on 127\.0\.0\.1:(\d+)/.exec(demo.output)?.[1]);
    await demo.type("\x03");
    assert.equal(await demo.exit(), 130, demo.output);
    assert.match(demo.output, /○ CANCELED/);
    assert.match(demo.output, /Interrupted: the tour stopped and canceled the operation/);
    assert.doesNotMatch(demo.output, /Step 4|continues on the server/);
    await assertPortClosed(port);
  },
);

Deno.test(
  "Ctrl+C at the pause ends scripts/run-bmdemo.sh with 130 and stops its server",
  SANITIZE,
  async () => {
    const demo = new TerminalDemo("bash scripts/run-bmdemo.sh");
    await demo.until(/Press Enter to continue/);
    const pid = Number(/Server \(pid (\d+)\)/.exec(demo.output)?.[1]);
    await demo.type("\x03");
    assert.equal(await demo.exit(), 130, demo.output);
    assert.match(demo.output, /Interrupted: the tour stopped\./);
    assert.ok(demo.output.includes(`Stopping the server (pid ${pid})...`), demo.output);
    assert.throws(() => Deno.kill(pid, "SIGCONT"), Deno.errors.NotFound);
    // The log is kept on Ctrl+C too.
    const log = /The server's log is kept at (\S+)/.exec(demo.output)?.[1] ?? "";
    try {
      assert.ok((await Deno.stat(log)).isFile, demo.output);
    } finally {
      await Deno.remove(log).catch(() => {});
    }
  },
);

Deno.test("deno.json denies the lifecycle scripts of every locked npm package", async () => {
  // Without the denial, a cold cache prints an "Ignored build scripts" box over the demo.
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}deno.lock`));
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const withScripts = Object.entries(lock.npm as Record<string, { scripts?: boolean }>)
    .filter(([, entry]) => entry.scripts)
    .map(([key]) => `npm:${key.replace(/^(@?[^@]+)@.*$/, "$1")}`);
  assert.ok(withScripts.length > 0);
  assert.deepEqual(config.allowScripts?.deny?.toSorted(), [...new Set(withScripts)].toSorted());
});
