import assert from "node:assert/strict";
import { SANITIZE } from "./helpers.ts";

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
        "Step 8: Operation History and Audit Trail",
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
  },
);
