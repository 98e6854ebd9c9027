/**
 * The CLI and the tour in a real pseudo-terminal (`script` from util-linux) of 60, 80 and 120
 * columns set by `stty`: no screen line wider than the terminal, no word split, and the spinner
 * drawn on the terminal but never into a pipe.
 */
import assert from "node:assert/strict";
import stringWidth from "string-width";
import { Operation_OperationType as OperationType } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { main } from "../lib/cli/main.ts";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  maintenanceEngine,
  runOperation,
  SANITIZE,
  testServer,
} from "./helpers.ts";

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

/** The longest elapsed time the spinner of a step has shown, in seconds (0: none yet). */
function longestSpin(output: string, step: string): number {
  const spins = output.matchAll(new RegExp(`→ ${step}\\.\\.\\. ${FRAME.source}`, "g"));
  return Math.max(0, ...[...spins].map((m) => Number(m[1])));
}

function words(text: string): string[] {
  return text.split(/\s+/).filter((w) => w !== "");
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
