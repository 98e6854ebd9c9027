/**
 * The lab's stand-in for a network-booting machine without a VM: what a Redfish mock system or a
 * chassis-mode `ipmi_sim` BMC does when it "boots" from the network. It asks the server's HTTP
 * surface for the machine's iPXE script (`GET /boot/ipxe?mac=<MAC>`), retrying while no repave
 * awaits the machine (404), as the first-stage script `bootLoaderScript` does, then follows the
 * script's `chain` to the report URL, as iPXE and an image writer would. No image is written: the
 * report's detail says it came from this stand-in, so the operation log never claims otherwise.
 *
 * URLs in the script are resolved against the server the lab reaches (`server`): the advertised
 * base URL may be one only VMs reach (`http://10.0.2.100:PORT` behind QEMU's guestfwd).
 *
 * @example
 * ```ts ignore
 * const ended = await netbootStandIn({
 *   server: "http://127.0.0.1:8080",
 *   mac: "52:54:00:00:00:01",
 *   signal: AbortSignal.timeout(60_000),
 *   log: console.log,
 *   detail: "bmdemo lab stand-in (Redfish system 1): no image written",
 * });
 * ```
 *
 * @module
 */

/** Options of {@linkcode netbootStandIn}. */
export interface NetbootStandInOptions {
  /** Base URL the lab reaches the server's HTTP surface at, e.g. `http://127.0.0.1:8080`. */
  server: string;
  /** The booting interface's MAC. */
  mac: string;
  /** Ends the boot (the machine powered off again, the lab stops). */
  signal: AbortSignal;
  /** Where each step goes (the lab's log). */
  log: (line: string) => void;
  /** What the report's `detail` says. */
  detail: string;
  /** Delay between script requests while the server answers 404. @default 1_000 */
  retryMs?: number;
  /** Most script requests before giving up (a machine stuck in its boot loop). @default 600 */
  maxAttempts?: number;
}

/** How a stand-in boot ended. */
export type NetbootStandInResult = "reported" | "gave-up" | "aborted";

/** Longest script read, in bytes: a script is a few lines. */
const MAX_SCRIPT_BYTES = 64 * 1024;

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * The report URL a bmdemo iPXE script chains to, resolved against `server`, with `detail`
 * replacing the iPXE settings only a real iPXE expands.
 *
 * @param script The iPXE script `GET /boot/ipxe` answered.
 * @param options The server the lab reaches, the MAC, the detail.
 * @returns The URL, or undefined when the script chains nowhere.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const script = "#!ipxe\nchain --autofree http://10.0.2.100:8080/boot/report?mac=m&nonce=n&result=ok&detail=iPXE+${version} || exit 1\n";
 * assert.equal(
 *   reportUrl(script, { server: "http://127.0.0.1:8080", mac: "m", detail: "stand-in" }),
 *   "http://127.0.0.1:8080/boot/report?mac=m&nonce=n&result=ok&detail=stand-in",
 * );
 * ```
 */
export function reportUrl(
  script: string,
  options: { server: string; mac: string; detail: string },
): string | undefined {
  const line = script.split("\n").find((l) => /^\s*chain\s/.test(l));
  const target = line?.split(/\s+/).find((word) => /^https?:\/\//.test(word));
  if (target === undefined) return undefined;
  const url = new URL(target.replaceAll("${net0/mac}", options.mac));
  const resolved = new URL(url.pathname + url.search, options.server);
  if (resolved.searchParams.has("detail")) resolved.searchParams.set("detail", options.detail);
  return resolved.href;
}

/**
 * Boots like a network-booting machine: fetches the machine's script (retrying on 404) and
 * follows its chain to the report.
 *
 * @param options The server, MAC, detail, signal, log and retry bounds.
 * @returns `reported` once the report was sent, `gave-up` after `maxAttempts` or an unusable
 * answer, `aborted` when the signal ended it.
 */
export async function netbootStandIn(
  options: NetbootStandInOptions,
): Promise<NetbootStandInResult> {
  const { server, mac, signal, log, retryMs = 1_000, maxAttempts = 600 } = options;
  const scriptUrl = new URL(`/boot/ipxe?mac=${encodeURIComponent(mac)}`, server).href;
  log(`${mac}: network boot (lab stand-in, no VM): GET ${scriptUrl}`);
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    if (signal.aborted) return "aborted";
    let status: number;
    let script = "";
    try {
      const response = await fetch(scriptUrl, { signal });
      status = response.status;
      script = (await response.text()).slice(0, MAX_SCRIPT_BYTES);
    } catch (error) {
      if (signal.aborted) return "aborted";
      log(`${mac}: cannot reach ${scriptUrl}: ${error instanceof Error ? error.message : error}`);
      status = 0;
    }
    if (status === 200) {
      const report = reportUrl(script, { server, mac, detail: options.detail });
      if (report === undefined) {
        log(`${mac}: the script chains nowhere; giving up: ${script.trim()}`);
        return "gave-up";
      }
      log(`${mac}: fetched its iPXE script; calling back ${new URL(report).pathname}`);
      try {
        const answer = await fetch(report, { signal });
        await answer.body?.cancel();
        log(`${mac}: report answered HTTP ${answer.status}`);
        return answer.ok ? "reported" : "gave-up";
      } catch (error) {
        if (signal.aborted) return "aborted";
        log(`${mac}: report failed: ${error instanceof Error ? error.message : error}`);
        return "gave-up";
      }
    }
    // 404: no repave awaits this machine yet (the repave step starts after the reboot step).
    await abortableDelay(retryMs, signal);
  }
  log(`${mac}: no repave awaited it after ${maxAttempts} attempts; boot loop ends`);
  return "gave-up";
}
