/**
 * Layout for narrow terminals and projectors (`lib/cli/layout.ts`, table fitting in
 * `lib/cli/format.ts`, the spinner of `lib/cli/follow.ts`): in process with the width override
 * or an injected terminal width, then the real CLI and `deno task demo` in a pseudo-terminal
 * (`script` from util-linux) of 60, 80 and 120 columns set by `stty`. Widths are measured with
 * string-width itself, not with the code under test.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { main } from "../lib/cli/main.ts";
import { formatMachineTable, formatOperationTable, palette } from "../lib/cli/format.ts";
import {
  explicitWidth,
  LineWrapper,
  parseWidth,
  screenWidth,
  wrapText,
} from "../lib/cli/layout.ts";
import { StepPrinter } from "../lib/cli/follow.ts";
import type { Ticker } from "../lib/cli/spinner.ts";
import { type CliIo, type Session, UsageError } from "../lib/cli/session.ts";
import { prepareWidths } from "../lib/cli/width.ts";
import stringWidth from "string-width";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  maintenanceEngine,
  runOperation,
  SANITIZE,
  testServer,
} from "./helpers.ts";

const WIDTHS = [60, 80, 120];
const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.execPath();
const CLI = `"${DENO}" run --allow-net --allow-env --allow-read cli.ts`;
const FRAME = /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] (\d+\.\d)s/;

/** Screen lines: the output split at newlines and carriage returns, colours removed. */
function screenLines(text: string): string[] {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").split(/[\r\n]/);
}

/** Cells as a terminal draws them (⚠ takes two, as `lib/cli/width.ts` counts it). */
function cells(line: string): number {
  return stringWidth(line) + [...line].filter((ch) => ch === "⚠").length;
}

function assertFits(text: string, width: number, what: string): void {
  for (const line of screenLines(text)) {
    assert.ok(cells(line) <= width, `${what} at ${width}: ${cells(line)} cells: ${line}`);
  }
}

function words(text: string): string[] {
  return text.split(/\s+/).filter((w) => w !== "");
}

async function runCli(
  args: string[],
  extra: Partial<CliIo> = {},
): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, ...extra };
  const code = await main(args, io);
  return { code, out, err };
}

Deno.test("the width: --width, else COLUMNS, else the terminal's, else 80", () => {
  assert.equal(screenWidth({}), 80);
  assert.equal(screenWidth({ terminal: 0 }), 80);
  assert.equal(screenWidth({ terminal: 60 }), 60);
  assert.equal(screenWidth({ terminal: 7 }), 20);
  assert.equal(screenWidth({ columnsEnv: "120", terminal: 60 }), 120);
  assert.equal(screenWidth({ columnsEnv: "wide", terminal: 60 }), 60);
  assert.equal(screenWidth({ columnsEnv: "0" }), 80);
  assert.ok(explicitWidth("100") && !explicitWidth("") && !explicitWidth("x"));
  assert.equal(parseWidth("60"), 60);
  assert.equal(parseWidth("0"), Infinity);
  for (const bad of ["10", "abc", "-1", "1001", "6O"]) {
    assert.throws(() => parseWidth(bad, "list"), UsageError, bad);
  }
});

Deno.test("wrapText breaks at spaces only, under the text's start, within the width", () => {
  const help = "  --token-file <file>   Send 'authorization: Bearer <token>' with the token read " +
    "from <file> (or set BMDEMO_TOKEN); prefer either to --token, which the shell history shows\n";
  const point = "  ℹ A failed step is retried (repave-image: 2 attempts); when every attempt " +
    "fails, the operation FAILS and the machine gets NeedsIntervention.\n";
  const log = "[12:00:00] stdout: === Starting operation op-10000559 (type: REIMAGE) ===\n";
  for (const width of [40, ...WIDTHS]) {
    for (const text of [help, point, log]) {
      const wrapped = wrapText(text, width);
      for (const line of screenLines(wrapped)) assert.ok(cells(line) <= width, line);
      assert.deepEqual(words(wrapped), words(text));
    }
  }
  assert.equal(
    wrapText(point, 60),
    "  ℹ A failed step is retried (repave-image: 2 attempts);\n" +
      "    when every attempt fails, the operation FAILS and the\n" +
      "    machine gets NeedsIntervention.\n",
  );
  assert.equal(
    wrapText(help, 60).split("\n")[1],
    "                        with the token read from <file> (or",
  );
  assert.equal(wrapText(log, 40).split("\n")[1], "           operation op-10000559 (type:");
  // Lines that fit pass unchanged; only a word wider than the line is cut.
  assert.equal(wrapText("a  b\n  c\n", 20), "a  b\n  c\n");
  assert.equal(wrapText("x".repeat(25) + "\n", 20), "x".repeat(20) + "\n" + "x".repeat(5) + "\n");
  assert.equal(wrapText("anything\n", Infinity), "anything\n");
});

Deno.test("LineWrapper wraps a line written in pieces, colours taking no room", () => {
  const c = palette(true);
  const wrapper = new LineWrapper(() => 24);
  const out = [
    wrapper.wrap("→ verify-in-cluster..."),
    wrapper.wrap(` ${c.green("✓")}`),
    wrapper.wrap(` ${c.dim("12.3s")}\n`),
    wrapper.wrap(`${c.dim("  │ twelve chars and")} ${c.red("more")} words\n`),
  ].join("");
  for (const line of screenLines(out)) assert.ok(cells(line) <= 24, line);
  // deno-lint-ignore no-control-regex
  const plain = out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
  assert.equal(plain, "→ verify-in-cluster... ✓\n  12.3s\n  │ twelve chars and\n    more words\n");
  // A colour starts where its word starts, also on a new line.
  assert.ok(out.includes(`\n    ${c.red("").slice(0, 5)}more`), JSON.stringify(out));
});

function operation(init: { id: string; type: OperationType; stage?: string; error?: string }) {
  return create(OperationSchema, {
    operationId: init.id,
    machineId: "machine-12",
    type: init.type,
    phase: init.error ? OperationPhase.FAILED : OperationPhase.SUCCEEDED,
    currentStage: init.stage ?? "",
    error: init.error ? { code: "STEP_FAILED", message: init.error } : undefined,
  });
}

Deno.test("ops and list tables fit 60, 80 and 120 columns, cutting with … only", async () => {
  const ops: Operation[] = [
    operation({ id: "op-6da0c61a-7683-4a9e-a517-ed62c7326cf7", type: 3 }),
    operation({
      id: "op-10000559-df27-498b-a386-664f091492a0",
      type: OperationType.REIMAGE,
      stage: "verify-in-cluster",
      error: "injected fault: repave-image failed (attempt 2 of 2), the machine needs attention",
    }),
  ];
  const machines = Array.from({ length: 3 }, (_, i) =>
    create(MachineSchema, {
      machineId: `machine-${i + 10}`,
      status: {
        activeOperationId: ops[0].operationId,
        conditions: [{ type: "Reachable", status: true }],
      },
    }));
  await prepareWidths(ops);
  for (const width of WIDTHS) {
    for (
      const [name, table] of [
        ["ops", formatOperationTable(ops, width)],
        ["list", formatMachineTable(machines, width)],
      ]
    ) {
      assertFits(table, width, name);
      // Every cell is whole, an id's prefix, or cut with … .
      for (const word of words(table)) {
        assert.ok(
          !word.includes("...") && (!word.endsWith("…") || word.length > 1),
          `${name} at ${width}: ${word}`,
        );
      }
    }
  }
  const at80 = formatOperationTable(ops, 80).split("\n");
  assert.match(at80[0], /^OPERATION +MACHINE +TYPE +PHASE +ERROR$/);
  assert.match(at80[2], /^op-10000559 +machine-12 +REIMAGE +FAILED +injected fault: .*…$/);
  assert.match(formatOperationTable(ops, 120).split("\n")[0], /STAGE +ERROR$/);
  assert.match(formatMachineTable(machines, 60).split("\n")[0], /REACH +PROV +ACTIVE_OP$/);
  assert.match(
    formatMachineTable(machines, 80).split("\n")[0],
    /REACHABLE +PROVISIONED +ACTIVE_OP$/,
  );
});

Deno.test(
  "every command's output fits --width 60, 80 and 120 with its words whole",
  SANITIZE,
  async () => {
    await using server = await testServer({ engine: await maintenanceEngine() });
    importMachines(server.engine, 12);
    const reimage = await runOperation(server.engine, {
      machineId: "machine-1",
      type: OperationType.REIMAGE,
    });
    await enterMaintenance(server.engine, "machine-12");
    const at = ["--server", server.address];
    const full = await runCli(["--help", "--width", "0"]);
    for (const width of WIDTHS) {
      const w = ["--width", String(width)];
      for (
        const args of [
          ["--help"],
          ["reimage", "--help"],
          ["list"],
          ["ops"],
          ["get", "machine-1"],
          ["op", reimage.operationId],
          ["logs", reimage.operationId],
          ["reimage", "machine-12", "-v"],
          ["reboot", "machine-3"],
          ["reimage", "machine-4"],
        ]
      ) {
        const run = await runCli([...args, ...at, ...w]);
        assertFits(run.out + run.err, width, args.join(" "));
      }
      const help = await runCli(["--help", ...w]);
      assert.deepEqual(words(help.out), words(full.out), `--help at ${width}`);
    }
  },
);

Deno.test(
  "without a terminal: tables and help fit 80, log lines and messages stay whole",
  SANITIZE,
  async () => {
    await using server = await testServer({ engine: await maintenanceEngine() });
    const reimage = await runOperation(server.engine, {
      machineId: "machine-1",
      type: OperationType.REIMAGE,
    });
    const at = ["--server", server.address];
    for (const args of [["ops"], ["--help"], ["list"], ["get", "machine-1"]]) {
      assertFits((await runCli([...args, ...at])).out, 80, args.join(" "));
    }
    const starting = `=== Starting operation ${reimage.operationId} (type: REIMAGE) ===`;
    const piped = await runCli(["logs", reimage.operationId, ...at]);
    assert.ok(piped.out.includes(`stdout: ${starting}\n`), piped.out);
    // On a terminal of 60 columns, or with COLUMNS, the same line is wrapped.
    for (const extra of [{ isTerminal: true, columns: () => 60 }, { env: { COLUMNS: "60" } }]) {
      const narrow = await runCli(["logs", reimage.operationId, ...at], extra);
      assert.ok(!narrow.out.includes(starting), narrow.out);
      assertFits(narrow.out, 60, "logs");
    }
    // JSON is never wrapped.
    const json = await runCli(["op", reimage.operationId, "-o", "json", "--width", "20", ...at]);
    assert.equal(JSON.parse(json.out).operationId, reimage.operationId);
  },
);

Deno.test("the tour fits --width 60, 80 and 120, its narration whole", SANITIZE, async () => {
  await using server = await testServer();
  for (const width of WIDTHS) {
    const run = await runCli(["tour", "--server", server.address, "--width", String(width)]);
    assert.equal(run.code, 0, run.err);
    assertFits(run.out + run.err, width, "tour");
    const flowing = words(run.out).join(" ");
    for (
      const sentence of [
        "Reimage requires MAINTENANCE: a safety gate against accidental repaves.",
        "A failed step is retried (repave-image: 2 attempts); when every attempt fails, the " +
        "operation FAILS and the machine gets NeedsIntervention: effective state ATTENTION.",
        "OperationService reads, watches and streams the logs of those operations.",
      ]
    ) {
      assert.ok(flowing.includes(sentence), `at ${width}: ${sentence}`);
    }
    const rules = run.out.split("\n").filter((line) => line.startsWith("═"));
    assert.ok(rules.length > 0);
    for (const rule of rules) assert.equal(rule, "═".repeat(Math.min(width, 80)));
  }
});

/** A ticker the test turns by hand. */
function manualTicker(): Ticker & { now_: number; tick(): void; running: number } {
  const ticks = new Set<() => void>();
  return {
    now_: 0,
    running: 0,
    now() {
      return this.now_;
    },
    every(_ms, tick) {
      ticks.add(tick);
      this.running = ticks.size;
      return {
        [Symbol.dispose]: () => {
          ticks.delete(tick);
          this.running = ticks.size;
        },
      };
    },
    tick() {
      for (const tick of ticks) tick();
    },
  };
}

function printerSession(live: boolean): { session: Session; out: () => string } {
  let out = "";
  const session = {
    io: { out: (t: string) => void (out += t), err: () => {} },
    colors: palette(false),
    width: () => 60,
    live,
  } as unknown as Session;
  return { session, out: () => out };
}

Deno.test("a running step shows a spinner and its elapsed time on a terminal only", () => {
  const ticker = manualTicker();
  const live = printerSession(true);
  {
    using steps = new StepPrinter(live.session, { ticker });
    steps.stepStarted("repave-image");
    assert.equal(live.out(), "→ repave-image...");
    ticker.now_ = 1200;
    ticker.tick();
    assert.equal(live.out(), "→ repave-image...\r→ repave-image... ⠋ 1.2s");
    ticker.now_ = 12_345;
    ticker.tick();
    assert.ok(live.out().endsWith("\r→ repave-image... ⠙ 12.3s"), live.out());
    // A log line: the spinner moves to a status line under it.
    steps.log("[repave] Writing image to disk...", "stdout");
    assert.ok(
      live.out().endsWith("  │ [repave] Writing image to disk...\n\r  ⠹ 12.3s repave-image"),
      JSON.stringify(live.out()),
    );
    ticker.now_ = 14_000;
    steps.stepSucceeded("repave-image");
    // The status line is blanked, then the mark says how long the step took.
    const status = "  ⠹ 12.3s repave-image";
    assert.ok(
      live.out().endsWith(`${status}\r${" ".repeat(status.length)}\r  ✓ repave-image 14.0s\n`),
      JSON.stringify(live.out()),
    );
    assert.equal(ticker.running, 0);
    steps.stepStarted("join-cluster");
    ticker.tick();
    assert.equal(ticker.running, 1);
  }
  // Disposed mid-step: the timer stops and the line ends.
  assert.equal(ticker.running, 0);
  assert.ok(live.out().endsWith("→ join-cluster...\n"), JSON.stringify(live.out()));

  const piped = printerSession(false);
  using steps = new StepPrinter(piped.session, { ticker });
  steps.stepStarted("reboot");
  ticker.tick();
  steps.stepSucceeded("reboot");
  assert.equal(piped.out(), "→ reboot... ✓\n");
  assert.equal(ticker.running, 0);
});

Deno.test("TERM=dumb gets no spinner, though stdout is a terminal", SANITIZE, async () => {
  const repave = holdVerb();
  await using server = await testServer({
    engine: await maintenanceEngine({ hooks: { repave: repave.hook } }),
  });
  importMachines(server.engine, 2);
  await enterMaintenance(server.engine, "machine-2");
  const started = (text: string) => text.includes("→ repave-image...");
  let dumbOut = "";
  const dumbAt = Promise.withResolvers<void>();
  const dumb = main(["reimage", "machine-1", "--server", server.address], {
    out: (t) => {
      dumbOut += t;
      if (started(dumbOut)) dumbAt.resolve();
    },
    err: () => {},
    env: { TERM: "dumb", NO_COLOR: "1" },
    isTerminal: true,
  });
  await dumbAt.promise;
  // As in the pipe test below: the live run's step starts after the dumb one's.
  let liveOut = "";
  const spun = Promise.withResolvers<void>();
  const live = main(["reimage", "machine-2", "--server", server.address], {
    out: (t) => {
      liveOut += t;
      if (longestSpin(liveOut, "repave-image") >= 0.3) spun.resolve();
    },
    err: () => {},
    env: { TERM: "xterm", NO_COLOR: "1" },
    isTerminal: true,
  });
  // A spinner that never comes fails the test rather than hanging it.
  const deadline = setTimeout(() => spun.reject(new Error(`no spinner: ${liveOut}`)), 30_000);
  try {
    await spun.promise;
  } finally {
    clearTimeout(deadline);
    repave.release();
  }
  assert.deepEqual([await dumb, await live], [0, 0]);
  assert.ok(dumbOut.includes("→ repave-image... ✓\n"), dumbOut);
  assert.doesNotMatch(dumbOut, /\r/);
});

/** The longest elapsed time the spinner of a step has shown, in seconds (0: none yet). */
function longestSpin(output: string, step: string): number {
  const spins = output.matchAll(new RegExp(`→ ${step}\\.\\.\\. ${FRAME.source}`, "g"));
  return Math.max(0, ...[...spins].map((m) => Number(m[1])));
}

/** A command running in a pseudo-terminal (or a pipe), its output read as it comes. */
class Running {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;
  #output = "";
  #changed = Promise.withResolvers<void>();

  /**
   * @param shell A shell command line; run in a terminal of `columns` columns, or, without
   *   `columns`, with stdout a pipe.
   */
  constructor(shell: string, columns?: number) {
    // An exported COLUMNS would override the terminal's width.
    const args = columns === undefined
      ? ["-c", `unset COLUMNS; ${shell}`]
      : ["-qefc", `unset COLUMNS; stty cols ${columns} rows 50; ${shell}`, "/dev/null"];
    this.#child = new Deno.Command(columns === undefined ? "bash" : "script", {
      args,
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: columns === undefined ? "piped" : "null",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const stdout = this.#child.stdout;
    const stderr = columns === undefined ? this.#child.stderr : undefined;
    this.#reading = (async () => {
      const drained = stderr?.pipeTo(new WritableStream()) ?? Promise.resolve();
      for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
        this.#output += chunk;
        this.#changed.resolve();
        this.#changed = Promise.withResolvers<void>();
      }
      await drained;
      this.#changed.resolve();
    })();
  }

  get output(): string {
    return this.#output;
  }

  /**
   * Waits until the output satisfies `done`; presses Enter at every tour pause on the way.
   * Fails when the command ends first, or after `deadlineMs` (a spinner that never comes).
   */
  async until(done: (output: string) => boolean, deadlineMs = 60_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"deadline">((resolve) => {
      timer = setTimeout(() => resolve("deadline"), deadlineMs);
    });
    try {
      let pauses = 0;
      for (;;) {
        if (done(this.#output)) return;
        const seen = this.#output.match(/Press Enter to continue/g)?.length ?? 0;
        for (; pauses < seen; pauses++) await this.#writer.write(new TextEncoder().encode("\r"));
        const changed = this.#changed.promise;
        if (done(this.#output)) return;
        const next = await Promise.race([
          changed.then(() => "output"),
          this.#child.status,
          deadline,
        ]);
        if (next === "deadline") {
          this.#child.kill("SIGKILL");
          throw new Error(`not seen within ${deadlineMs} ms:\n${this.#output}`);
        }
        if (next !== "output" && !done(this.#output)) {
          await this.#reading;
          if (!done(this.#output)) throw new Error(`ended first:\n${this.#output}`);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** The exit code, once the output is read. */
  async exit(): Promise<number> {
    const { code } = await this.#child.status;
    await this.#reading;
    await this.#writer.close().catch(() => {});
    return code;
  }
}

Deno.test(
  "in a terminal of 60, 80 and 120 columns every command's lines fit, words whole",
  SANITIZE,
  async () => {
    await using server = await testServer({ engine: await maintenanceEngine() });
    importMachines(server.engine, 3);
    await enterMaintenance(server.engine, "machine-2");
    const reimage = await runOperation(server.engine, {
      machineId: "machine-1",
      type: OperationType.REIMAGE,
    });
    let full = "";
    await main(["--help", "--width", "0"], { out: (t) => void (full += t), err: () => {} });
    const at = `--server ${server.address}`;
    const commands = [
      "--help",
      "list",
      "ops",
      "get machine-1",
      `logs ${reimage.operationId}`,
      "reimage machine-2 -v",
      "reimage machine-3",
    ];
    for (const width of [60, 80, 120]) {
      const script = commands.map((c) => `echo "@@ ${c}"; ${CLI} ${c} ${at}`).join("; ") +
        "; true";
      const run = new Running(script, width);
      assert.equal(await run.exit(), 0, run.output);
      // Deno's own start-up may clear the line: the screen, not the escape codes.
      const sections = screenLines(run.output.replaceAll("\r\n", "\n")).join("\n")
        .split(/^@@ /m).slice(1);
      assert.equal(sections.length, commands.length, run.output);
      for (const section of sections) assertFits(section, width, section.split("\n")[0]);
      const help = sections[0].slice(sections[0].indexOf("\n") + 1);
      assert.deepEqual(words(help), words(full), `--help at ${width}`);
      // The ops table fits by the ids' pasteable prefix, not by wrapping.
      const ops = sections[2].split("\n").slice(1, -1);
      assert.ok(ops.length >= 3, sections[2]);
      assert.match(ops[0], /^OPERATION/);
    }
  },
);

Deno.test(
  "a running step shows a spinner with its elapsed time on a terminal, never in a pipe",
  SANITIZE,
  async () => {
    const repave = holdVerb();
    await using server = await testServer({
      engine: await maintenanceEngine({ hooks: { repave: repave.hook } }),
    });
    importMachines(server.engine, 2);
    await enterMaintenance(server.engine, "machine-2");
    const at = `--server ${server.address}`;
    const piped = new Running(`${CLI} reimage machine-1 ${at}`);
    await piped.until((out) => out.includes("→ repave-image..."));
    // The terminal's step starts after the pipe's: once the terminal has shown 0.3 s of it, the
    // pipe has had that long too, three turns of a spinner it must not draw.
    const terminal = new Running(`${CLI} reimage machine-2 ${at}`, 80);
    await terminal.until((out) => longestSpin(out, "repave-image") >= 0.3);
    repave.release();
    assert.equal(await piped.exit(), 0, piped.output);
    assert.equal(await terminal.exit(), 0, terminal.output);
    assert.ok(piped.output.includes("\n→ repave-image... ✓\n"), piped.output);
    assert.doesNotMatch(piped.output, /\r|[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/);
    assert.match(terminal.output, /\r→ repave-image\.\.\. [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] \d+\.\ds/);
    // The mark ends the redrawn line and says how long the step took.
    assert.match(terminal.output, /\r→ repave-image\.\.\. ✓ \d+\.\ds\r\n/);
  },
);

Deno.test(
  "deno task demo in a terminal of 60 columns: every line fits, narration and rules too",
  SANITIZE,
  async () => {
    const demo = new Running(`"${DENO}" task --quiet demo`, 60);
    await demo.until((out) => out.includes("Demo Complete"));
    assert.equal(await demo.exit(), 0, demo.output);
    assertFits(demo.output, 60, "the tour");
    const flowing = words(screenLines(demo.output).join("\n")).join(" ");
    for (
      const sentence of [
        "Reimage requires MAINTENANCE: a safety gate against accidental repaves.",
        "EFFECTIVE is what the machine is doing now, computed by the server, first match wins:",
        "A failed step is retried (repave-image: 2 attempts); when every attempt fails, the " +
        "operation FAILS and the machine gets NeedsIntervention: effective state ATTENTION.",
      ]
    ) {
      assert.ok(flowing.includes(sentence), sentence);
    }
    assert.ok(flowing.includes("REACH PROV"), "list at 60 columns takes its short headers");
    const rules = screenLines(demo.output).filter((line) => line.startsWith("═"));
    assert.ok(rules.length >= 20);
    for (const rule of rules) assert.equal(rule, "═".repeat(60));
    // Steps ran on a terminal: the spinner turned, with the step's time.
    assert.match(demo.output, FRAME);
  },
);
