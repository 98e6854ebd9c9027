/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core, headless,
 * loopback only) against a real server process started with `--http-port 0`: tiles follow a
 * reimage over gRPC (BUSY with its step, then back), the log pane follows a clicked operation to
 * its end, a cancel shows, and a cut event stream resumes without losing a transition. The
 * browser part runs in `test/browser/dashboard_flow.ts` (a separate process: playwright-core
 * needs `--allow-all`); it reaches the server through a TCP proxy it can cut and hold.
 *
 * Screenshots go to `test-artifacts/` (gitignored); `BMDEMO_UPDATE_SCREENSHOT=1` also copies the
 * 1280x720 one to `docs/dashboard.png`.
 *
 * Needs `/usr/bin/chromium` (`.ci/run` installs Debian's `chromium fonts-dejavu-core`).
 */

import assert from "node:assert/strict";
import { spawnServer } from "../scripts/server_process.ts";
import { SANITIZE } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const ROOT = new URL("..", import.meta.url);
const ARTIFACTS = new URL("test-artifacts/", ROOT);

Deno.test(
  "the dashboard follows machines and operations live in Chromium, and resumes a cut stream",
  SANITIZE,
  async () => {
    await Deno.stat(CHROMIUM).catch(() => {
      throw new Error(
        `${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium ` +
          `fonts-dejavu-core (.ci/run installs them)`,
      );
    });
    // machine-2's repave hangs (until the flow cancels it), so its BUSY tile is deterministic.
    await using server = await spawnServer([
      "--http-port",
      "0",
      "--fault",
      "repave-image:hang@machine-2",
    ]);
    const flow = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("browser/dashboard_flow.ts", import.meta.url).pathname,
        server.dashboard!,
        server.address,
        ARTIFACTS.pathname,
      ],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const decoder = new TextDecoder();
    assert.equal(
      flow.code,
      0,
      `${decoder.decode(flow.stdout)}\n${
        decoder.decode(flow.stderr)
      }\n-- server --\n${server.stderr()}`,
    );
    if (Deno.env.get("BMDEMO_UPDATE_SCREENSHOT") === "1") {
      await Deno.copyFile(new URL("dashboard.png", ARTIFACTS), new URL("docs/dashboard.png", ROOT));
    }
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr());
  },
);
