/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core, headless,
 * loopback only) against a real server process started with `--http-port 0`: tiles follow a
 * reimage over gRPC (BUSY with its step, then back), the log pane follows a clicked operation to
 * its end, a cancel shows, and a cut event stream resumes without losing a transition. The
 * browser part runs in `test/browser/dashboard_flow.ts` (a separate process: playwright-core
 * needs `--allow-all`); it reaches the server through a TCP proxy it can cut and hold. A second
 * flow (`test/browser/signed_out_flow.ts`) moves a signed-in page to a server with another token.
 *
 * Screenshots go to `test-artifacts/` (gitignored); `BMDEMO_UPDATE_SCREENSHOT=1` also copies the
 * 1280x720 one to `docs/dashboard.png`.
 *
 * Needs `/usr/bin/chromium` (`.ci/run` installs Debian's `chromium fonts-dejavu-core`).
 */

import assert from "node:assert/strict";
import { type ServerProcess, spawnServer } from "../scripts/server_process.ts";
import { SANITIZE } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const ROOT = new URL("..", import.meta.url);
const ARTIFACTS = new URL("test-artifacts/", ROOT);

/** Fails with the reason when Chromium is not installed. */
async function needChromium(): Promise<void> {
  await Deno.stat(CHROMIUM).catch(() => {
    throw new Error(
      `${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium ` +
        `fonts-dejavu-core (.ci/run installs them)`,
    );
  });
}

/**
 * Runs a browser flow of `test/browser/` to its end; fails with its output and the servers'
 * logs unless it exits 0.
 */
async function runFlow(
  script: string,
  args: string[],
  servers: Record<string, ServerProcess>,
): Promise<void> {
  const flow = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`browser/${script}`, import.meta.url).pathname, ...args],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  const logs = Object.entries(servers).map(([name, server]) => `-- ${name} --\n${server.stderr()}`);
  assert.equal(
    flow.code,
    0,
    [decoder.decode(flow.stdout), decoder.decode(flow.stderr), ...logs].join("\n"),
  );
}

Deno.test(
  "the dashboard follows machines and operations live in Chromium, and resumes a cut stream",
  SANITIZE,
  async () => {
    await needChromium();
    // machine-2's repave hangs (until the flow cancels it), so its BUSY tile is deterministic.
    await using server = await spawnServer([
      "--http-port",
      "0",
      "--fault",
      "repave-image:hang@machine-2",
    ]);
    await runFlow("dashboard_flow.ts", [server.dashboard!, server.address, ARTIFACTS.pathname], {
      server,
    });
    if (Deno.env.get("BMDEMO_UPDATE_SCREENSHOT") === "1") {
      await Deno.copyFile(new URL("dashboard.png", ARTIFACTS), new URL("docs/dashboard.png", ROOT));
    }
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr());
  },
);

Deno.test(
  "the dashboard says 'signed out' when the server restarted with another token; the new link cures it",
  SANITIZE,
  async () => {
    await needChromium();
    await using a = await spawnServer(["--http-port", "0"], {
      env: { BMDEMO_AUTH_TOKEN: "token-a" },
    });
    await using b = await spawnServer(["--http-port", "0"], {
      env: { BMDEMO_AUTH_TOKEN: "token-b" },
    });
    await runFlow("signed_out_flow.ts", [a.dashboard!, "token-a", b.dashboard!, "token-b"], {
      a,
      b,
    });
  },
);
