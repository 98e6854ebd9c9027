/**
 * The browser half of `test/dashboard_browser_test.ts`, run by it as
 * `deno run -A test/browser/dashboard_flow.ts <dashboard-url> <grpc-address> <artifacts-dir>`
 * against the server process it started (with `--fault repave-image:hang@machine-2`). A separate
 * process because playwright-core probes `/proc/sys/fs/binfmt_misc` at import, which Deno allows
 * only with `--allow-all`. Exits 0 when every check passed; an assertion error otherwise.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { connectClient } from "../../lib/client/mod.ts";
import { MachineService, OperationService } from "../../lib/gen/baremetal/v1/baremetal_pb.ts";
import { maintenanceOverGrpc } from "../helpers.ts";
import { tcpProxy } from "./tcp_proxy.ts";

/** Debian's Chromium (`.ci/run` installs it). */
const CHROMIUM = "/usr/bin/chromium";
/** Generous safety net for each wait on the page (the page is event-driven; no sleeps). */
const WAIT_MS = 30_000;

const [dashboardUrl, grpcAddress, artifactsDir] = Deno.args;
const ARTIFACTS = new URL(`file://${artifactsDir.replace(/\/?$/, "/")}`);
const dashboard = new URL(dashboardUrl);
await Deno.mkdir(ARTIFACTS, { recursive: true });
const proxy = tcpProxy(Number(dashboard.port));
using machines = connectClient(MachineService, grpcAddress);
using operations = connectClient(OperationService, grpcAddress);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(proxy.url);
  await page.waitForSelector('#connection[data-state="live"]');
  const tile = (id: string, state?: string) =>
    `[data-machine-id="${id}"]${state ? `[data-effective-state="${state}"]` : ""}`;

  // Machines registered over gRPC appear live.
  for (const id of ["machine-1", "machine-2", "machine-3"]) {
    await maintenanceOverGrpc(machines, operations, id);
  }
  // A fuller grid for the screenshot: machine-4 to machine-12 stay NEW.
  for (let i = 4; i <= 12; i++) {
    await machines.registerMachine({ machine: { machineId: `machine-${i}` } });
  }
  await page.waitForSelector(tile("machine-12", "NEW"));
  await page.waitForSelector(tile("machine-3", "MAINTENANCE"));

  // A reimage: BUSY with its step, back to MAINTENANCE, Provisioned; its log to the end.
  const reimage = await machines.reimageMachine({ machineId: "machine-1", requestId: "r1" });
  await page.waitForSelector(tile("machine-1", "BUSY"));
  // The step appears once the executor is on one (before that the tile says "reimage").
  const busyStep = page.locator(`${tile("machine-1", "BUSY")} .step`, {
    hasText: /^[1-5]\/5 [a-z-]+ · \d+ s$/,
  });
  await busyStep.waitFor();
  await page.click(`#operations [data-operation-id="${reimage.operationId}"]`);
  await page.waitForSelector(tile("machine-1", "MAINTENANCE"));
  assert.match(await page.textContent(`${tile("machine-1")} .flags`) ?? "", /✓ Provisioned/);
  await page.waitForSelector('#log[data-state="ended"][data-phase="SUCCEEDED"]');
  const log = await page.textContent("#log") ?? "";
  assert.match(log, /\[repave\] Writing image to disk/);
  assert.match(log, /— SUCCEEDED —\n$/);
  await page.screenshot({ path: new URL("dashboard-reimaged.png", ARTIFACTS).pathname });

  // A hanging reimage shows its step; following it, then canceling it, shows the cancel.
  const hung = await machines.reimageMachine({ machineId: "machine-2", requestId: "r2" });
  await page.locator(`${tile("machine-2", "BUSY")} .step`, {
    hasText: /^3\/5 repave-image · \d+ s$/,
  }).waitFor();
  await page.click(tile("machine-2"));
  await page.waitForSelector(`#log[data-operation-id="${hung.operationId}"]`);
  await page.locator("#log", { hasText: "hanging until the step times out" }).waitFor();
  const shot = new URL("dashboard.png", ARTIFACTS).pathname;
  await page.screenshot({ path: shot });
  await machines.cancelOperation({ operationId: hung.operationId });
  await page.waitForSelector(
    `#operations [data-operation-id="${hung.operationId}"][data-phase="CANCELED"]`,
  );
  await page.waitForSelector(tile("machine-2", "MAINTENANCE"));
  await page.waitForSelector('#log[data-state="ended"][data-phase="CANCELED"]');

  // Cut the event stream; while the page is away, an operation runs from start to end.
  assert.equal(await page.getAttribute("#connection", "data-snapshots"), "1");
  proxy.hold();
  proxy.cut();
  await page.waitForSelector('#connection[data-state="reconnecting"]');
  const reboot = await machines.rebootMachine({ machineId: "machine-3", requestId: "r3" });
  for await (const _ of operations.streamOperationLogs({ operationId: reboot.operationId })) {
    // Ends with the operation.
  }
  proxy.release();
  const row = `#operations [data-operation-id="${reboot.operationId}"]`;
  await page.waitForSelector(`${row}[data-phase="SUCCEEDED"]`);
  await page.waitForSelector('#connection[data-state="live"]');
  // Every transition arrived (a snapshot would carry only the final state), in order.
  const history = (await page.getAttribute(row, "data-history"))!.split("|");
  assert.deepEqual(history.filter((m) => m.startsWith("Operation")), [
    "Operation created",
    "Operation started",
    "Operation succeeded",
  ]);
  assert.ok(history.some((m) => m.startsWith("Step ")), history.join(", "));
  assert.equal(await page.getAttribute("#connection", "data-snapshots"), "1");
  assert.equal(
    await page.getAttribute(tile("machine-3"), "data-effective-state"),
    "MAINTENANCE",
  );
  await page.screenshot({ path: new URL("dashboard-resumed.png", ARTIFACTS).pathname });

  // A laptop screen in dark mode with reduced motion: the media queries apply.
  const light = await page.evaluate("getComputedStyle(document.body).backgroundColor");
  await page.setViewportSize({ width: 1920, height: 1080 });
  await page.emulateMedia({ colorScheme: "dark", reducedMotion: "reduce" });
  assert.notEqual(await page.evaluate("getComputedStyle(document.body).backgroundColor"), light);
  assert.equal(
    await page.evaluate(
      `getComputedStyle(document.querySelector('[data-machine-id="machine-1"]')).transitionDuration`,
    ),
    "0s",
  );
  await page.screenshot({ path: new URL("dashboard-1920-dark.png", ARTIFACTS).pathname });
} finally {
  await browser.close();
  await proxy.close();
}
