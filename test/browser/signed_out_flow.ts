/**
 * The browser half of the "signed out" test of `test/dashboard_browser_test.ts`, run as
 * `deno run -A test/browser/signed_out_flow.ts <dashboard-a> <token-a> <dashboard-b> <token-b>`
 * against two server processes with different tokens. The page signs in to A through a proxy;
 * the proxy then sends the page's connections to B (A restarted with another token, as the
 * browser sees it), and the page must say it is signed out, not offline, and go live again once
 * the user opens B's sign-in link. Exits 0 when every check passed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { tcpProxy } from "./tcp_proxy.ts";

const CHROMIUM = "/usr/bin/chromium";
/** Generous safety net for each wait on the page (the page is event-driven; no sleeps). */
const WAIT_MS = 30_000;

const [dashboardA, tokenA, dashboardB, tokenB] = Deno.args;
const proxy = tcpProxy(Number(new URL(dashboardA).port));
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(`${proxy.url}?token=${encodeURIComponent(tokenA)}`);
  assert.equal(page.url(), proxy.url, "the sign-in link redirects to the clean URL");
  await page.waitForSelector('#connection[data-state="live"]');

  // "Restart" the server with another token: the stream's reconnect gets 401.
  proxy.retarget(Number(new URL(dashboardB).port));
  proxy.cut();
  await page.waitForSelector('#connection[data-state="signed-out"]');
  assert.equal(
    await page.textContent("#connection"),
    "signed out: open the sign-in link printed by the server",
  );

  // Opening the new server's sign-in link brings the page back.
  await page.goto(`${proxy.url}?token=${encodeURIComponent(tokenB)}`);
  await page.waitForSelector('#connection[data-state="live"]');

  // A server that is down is not "signed out": the page reconnects.
  proxy.retarget(1); // nothing listens on port 1: every connection fails
  proxy.cut();
  await page.waitForSelector('#connection[data-state="reconnecting"]');
} finally {
  await browser.close();
  await proxy.close();
}
