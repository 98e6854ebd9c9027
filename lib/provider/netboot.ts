/**
 * Repave over the network: a broker between a `repave` step and the machine that network-boots.
 * The step registers an expectation for the machine's MAC addresses with a one-time nonce and
 * waits; the machine's iPXE fetches its script (`GET /boot/ipxe?mac=...`, served only while an
 * expectation exists), boots the image writer, which reports back
 * (`GET` or `POST /boot/report?mac=...&nonce=...&result=ok|failed&detail=...`); the report
 * completes the step. A wrong or stale nonce is refused (403) and changes nothing. The step's
 * signal (its timeout, a cancel) ends the wait, with a log line saying what was last seen.
 *
 * In the lab the "image writer" is the iPXE script itself calling back. The routes have the
 * shape of the HTTP surface's extension point (`HttpRoute`, `lib/http/route.ts`), declared here
 * structurally since the provider layer may not import the HTTP layer.
 *
 * @module
 */

import type { Machine } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { ProviderCall, RepaveOptions } from "./mod.ts";

/**
 * One route of the HTTP surface: the same shape as `HttpRoute` of `lib/http/route.ts` (the web
 * branch's), repeated so the provider layer does not import the HTTP layer.
 */
export interface HttpRoute {
  /** HTTP method. */
  readonly method: "GET" | "POST";
  /** Path, e.g. `/boot/ipxe`. */
  readonly path: string;
  /** `public`: a network-booting machine carries no token (the nonce guards the report). */
  readonly access: "token" | "public";
  /** Answers one request. */
  handle(request: Request): Response | Promise<Response>;
}

/** What the image writer reported. */
export interface NetbootReport {
  /** `ok`, or `failed` (the repave fails with the detail). */
  readonly result: "ok" | "failed";
  /** What the image writer said, for the log. */
  readonly detail: string;
}

/** Options of {@linkcode createNetbootBroker}. */
export interface NetbootOptions {
  /**
   * Base URL the machines reach the HTTP surface at, e.g. `http://10.0.2.100:8080`. Without it
   * (no HTTP surface, no `--http-advertise-url`) a real machine's repave fails saying so.
   */
  baseUrl?: string;
  /** Most repaves awaiting a report at once. @default 10000 */
  maxExpectations?: number;
  /** Makes a nonce. @default 128 random bits in hex */
  nonce?: () => string;
  /** Clock for the "last seen" times. @default () => new Date() */
  now?: () => Date;
}

/** The broker: a repave waits on it, the HTTP surface serves its routes. */
export interface NetbootBroker {
  /** The base URL in scripts, if known. */
  readonly baseUrl: string | undefined;
  /**
   * Sets the base URL once the HTTP surface listens (`--http-port 0` picks its port at start);
   * an explicit `baseUrl` (`--http-advertise-url`) stays.
   */
  advertise(url: string): void;
  /** The routes to mount on the HTTP surface. */
  readonly routes: readonly HttpRoute[];
  /** Repaves awaiting a report now. */
  readonly pending: number;
  /**
   * Registers an expectation for the machine's MACs and waits for its report.
   *
   * @param call The repave step's call; its signal bounds the wait.
   * @param machine The machine (its `spec.mac_addresses`).
   * @param options The image, for the script and the log.
   * @returns The report, when its result is `ok`.
   * @throws {Error} The machine has no MAC, a MAC is awaited by another machine, too many
   * repaves wait, or the image writer reported `failed`; `call.signal.reason` on abort.
   */
  awaitReport(call: ProviderCall, machine: Machine, options: RepaveOptions): Promise<NetbootReport>;
}

/** Longest `detail` of a report kept for the log, in characters. */
export const MAX_REPORT_DETAIL = 4096;
/** Most lines of a report's detail written to the operation log. */
const MAX_DETAIL_LINES = 50;

interface Expectation {
  readonly machineId: string;
  readonly operationId: string;
  readonly nonce: string;
  readonly macs: readonly string[];
  readonly options: RepaveOptions;
  readonly call: ProviderCall;
  fetches: number;
  lastFetch?: Date;
  readonly done: PromiseWithResolvers<NetbootReport>;
}

/**
 * Normalises a MAC address for lookups: lower case, `-` as `:`.
 *
 * @param mac A MAC address as registered or sent by iPXE.
 * @returns The key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(normalizeMac("52-54-00-AB-00-01"), "52:54:00:ab:00:01");
 * ```
 */
export function normalizeMac(mac: string): string {
  return mac.trim().toLowerCase().replaceAll("-", ":");
}

/**
 * The base URL for scripts and callbacks: `--http-advertise-url` when given, else derived from
 * the HTTP surface's host and port (a wildcard host cannot be derived from).
 *
 * @param options The flag and the HTTP surface's bind address.
 * @returns The URL without a trailing `/`.
 * @throws {Error} The flag is not an http(s) URL, or the host is a wildcard and no flag is given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(netbootBaseUrl({ host: "127.0.0.1", port: 8080 }), "http://127.0.0.1:8080");
 * assert.equal(netbootBaseUrl({ advertiseUrl: "http://10.0.2.100:8080/" }), "http://10.0.2.100:8080");
 * ```
 */
export function netbootBaseUrl(
  options: { advertiseUrl?: string; host?: string; port?: number },
): string {
  const { advertiseUrl, host, port } = options;
  if (advertiseUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(advertiseUrl);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.search !== "") {
      throw new Error(
        `--http-advertise-url must be an http(s) URL the machines reach this server at, e.g. http://10.0.2.100:8080: got "${advertiseUrl}"`,
      );
    }
    return url.href.replace(/\/+$/, "");
  }
  if (host === undefined || port === undefined) {
    throw new Error("--http-advertise-url is required: the HTTP surface's address is unknown");
  }
  if (host === "0.0.0.0" || host === "::" || host === "[::]") {
    throw new Error(
      `--http-advertise-url is required with --host ${host}: machines cannot reach a wildcard address; pass the URL they reach this server at`,
    );
  }
  const name = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return `http://${name}:${port}`;
}

/**
 * The first-stage iPXE script a DHCP/TFTP server hands every machine: it asks this server for
 * the machine's script and, while no repave awaits the machine (404), retries every 5 s.
 *
 * @param baseUrl The server's base URL as the machines reach it.
 * @returns The script.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const script = bootLoaderScript("http://10.0.2.100:8080");
 * assert.match(script, /chain --autofree http:\/\/10\.0\.2\.100:8080\/boot\/ipxe\?mac=\$\{net0\/mac\}/);
 * ```
 */
export function bootLoaderScript(baseUrl: string): string {
  return [
    "#!ipxe",
    ":fetch",
    `chain --autofree ${baseUrl}/boot/ipxe?mac=\${net0/mac} || goto wait`,
    "exit",
    ":wait",
    "echo bmdemo: no repave awaits ${net0/mac} yet; retrying in 5 s",
    "sleep 5",
    "goto fetch",
    "",
  ].join("\n");
}

function randomNonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Constant time over the expected length, so a guess learns nothing from the answer's timing.
function sameNonce(expected: string, given: string): boolean {
  let diff = expected.length ^ given.length;
  for (let i = 0; i < expected.length; i++) {
    diff |= expected.charCodeAt(i) ^ (given.charCodeAt(i) || 0);
  }
  return diff === 0;
}

function text(status: number, body: string): Response {
  return new Response(body.endsWith("\n") ? body : `${body}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

/**
 * Creates a netboot broker.
 *
 * @param options Base URL, bound, nonce source and clock.
 * @returns The broker.
 *
 * @example A repave completed by its report
 * ```ts
 * import assert from "node:assert/strict";
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 *
 * const broker = createNetbootBroker({ baseUrl: "http://10.0.2.100:8080", nonce: () => "n1" });
 * const machine = create(MachineSchema, { machineId: "m-1", spec: { macAddresses: ["52:54:00:00:00:01"] } });
 * const call = { operationId: "op-1", signal: new AbortController().signal, log() {} };
 * const done = broker.awaitReport(call, machine, { imageRef: "img", cloudInitRef: "ci" });
 * const report = broker.routes.find((r) => r.path === "/boot/report" && r.method === "GET")!;
 * const answer = await report.handle(
 *   new Request("http://x/boot/report?mac=52:54:00:00:00:01&nonce=n1&result=ok&detail=written"),
 * );
 * assert.equal(answer.status, 200);
 * await answer.body?.cancel();
 * assert.equal((await done).detail, "written");
 * ```
 */
export function createNetbootBroker(options: NetbootOptions): NetbootBroker {
  let baseUrl = options.baseUrl?.replace(/\/+$/, "");
  const maxExpectations = options.maxExpectations ?? 10_000;
  const makeNonce = options.nonce ?? randomNonce;
  const now = options.now ?? (() => new Date());
  const byMac = new Map<string, Expectation>();
  const active = new Set<Expectation>();

  function script(expectation: Expectation, mac: string): string {
    const report = `${baseUrl}/boot/report?mac=${
      encodeURIComponent(mac)
    }&nonce=${expectation.nonce}`;
    return [
      "#!ipxe",
      `echo bmdemo: repave of ${expectation.machineId} with ${expectation.options.imageRef} (${expectation.operationId})`,
      // A real site boots its image writer here with the report URL on the kernel command line;
      // in the lab this script is the image writer and reports itself.
      `chain --autofree ${report}&result=ok&detail=iPXE+\${version}+on+\${net0/mac} || exit 1`,
      "",
    ].join("\n");
  }

  async function handleScript(request: Request): Promise<Response> {
    await request.body?.cancel();
    const mac = new URL(request.url).searchParams.get("mac");
    if (!mac) return text(400, "missing ?mac=<the booting interface's MAC address>");
    const key = normalizeMac(mac);
    const expectation = byMac.get(key);
    if (!expectation) return text(404, `no repave awaits MAC ${key}`);
    expectation.fetches++;
    expectation.lastFetch = now();
    expectation.call.log(`[repave] ${key} fetched its iPXE script`);
    return text(200, script(expectation, key));
  }

  async function handleReport(request: Request): Promise<Response> {
    const params = new URL(request.url).searchParams;
    let body = "";
    if (request.method === "POST") {
      body = (await request.text()).slice(0, MAX_REPORT_DETAIL);
    } else {
      await request.body?.cancel();
    }
    const mac = params.get("mac");
    const nonce = params.get("nonce");
    if (!mac || !nonce) return text(400, "missing ?mac=<MAC>&nonce=<the nonce of its script>");
    const key = normalizeMac(mac);
    const expectation = byMac.get(key);
    if (!expectation) {
      return text(403, `no repave awaits a report from MAC ${key} (stale or unknown nonce)`);
    }
    if (!sameNonce(expectation.nonce, nonce)) {
      return text(403, `the nonce does not match the repave awaiting MAC ${key}`);
    }
    const result = params.get("result") ?? "ok";
    if (result !== "ok" && result !== "failed") {
      return text(400, `result must be ok or failed: got "${result}"`);
    }
    const detail = (params.get("detail") ?? body).slice(0, MAX_REPORT_DETAIL);
    release(expectation);
    expectation.done.resolve({ result, detail });
    return text(200, "#!ipxe\necho bmdemo: report received\nexit");
  }

  function release(expectation: Expectation): void {
    if (!active.delete(expectation)) return;
    for (const mac of expectation.macs) {
      if (byMac.get(mac) === expectation) byMac.delete(mac);
    }
  }

  async function awaitReport(
    call: ProviderCall,
    machine: Machine,
    repave: RepaveOptions,
  ): Promise<NetbootReport> {
    call.signal.throwIfAborted();
    if (baseUrl === undefined) {
      throw new Error(
        "a network repave needs the URL machines reach this server's HTTP surface at: start the server with --http-port (and --http-advertise-url when machines reach it by another address)",
      );
    }
    const macs = [...new Set((machine.spec?.macAddresses ?? []).map(normalizeMac))].filter(
      Boolean,
    );
    if (macs.length === 0) {
      throw new Error(
        `machine ${machine.machineId} has no spec.mac_addresses: a network repave finds the machine by its MAC; register them`,
      );
    }
    for (const mac of macs) {
      const other = byMac.get(mac);
      if (other) {
        throw new Error(
          `MAC ${mac} is awaited by the repave of ${other.machineId} (${other.operationId}): two machines registered with the same MAC`,
        );
      }
    }
    if (active.size >= maxExpectations) {
      throw new Error(
        `${active.size} repaves already await a netboot report; the limit is ${maxExpectations}`,
      );
    }
    const expectation: Expectation = {
      machineId: machine.machineId,
      operationId: call.operationId,
      nonce: makeNonce(),
      macs,
      options: repave,
      call,
      fetches: 0,
      done: Promise.withResolvers<NetbootReport>(),
    };
    active.add(expectation);
    for (const mac of macs) byMac.set(mac, expectation);
    call.log(
      `[repave] Waiting for ${
        macs.join(", ")
      } to network-boot: iPXE script at ${baseUrl}/boot/ipxe?mac=<MAC>`,
    );
    const onAbort = () => {
      call.log(
        expectation.fetches === 0
          ? `[repave] No report: the machine never fetched its iPXE script (did it network-boot? check the set-netboot and reboot steps, DHCP/TFTP and that it reaches ${baseUrl})`
          : `[repave] No report: the machine fetched its iPXE script ${expectation.fetches} time(s), last at ${expectation.lastFetch?.toISOString()}, but the image writer never called back`,
        "stderr",
      );
      release(expectation);
      expectation.done.reject(call.signal.reason);
    };
    call.signal.addEventListener("abort", onAbort, { once: true });
    try {
      const report = await expectation.done.promise;
      const lines = report.detail.split(/\r?\n/).filter((line) => line !== "");
      for (const line of lines.slice(0, MAX_DETAIL_LINES)) {
        call.log(`[repave] image writer: ${line}`);
      }
      if (lines.length > MAX_DETAIL_LINES) {
        call.log(`[repave] image writer: (${lines.length - MAX_DETAIL_LINES} more lines not kept)`);
      }
      if (report.result === "failed") {
        throw new Error(`the image writer reported a failure: ${lines[0] ?? "(no detail)"}`);
      }
      call.log("[repave] Image writer reported success");
      return report;
    } finally {
      call.signal.removeEventListener("abort", onAbort);
      release(expectation);
    }
  }

  return {
    get baseUrl() {
      return baseUrl;
    },
    advertise(url: string) {
      baseUrl ??= url.replace(/\/+$/, "");
    },
    get pending() {
      return active.size;
    },
    awaitReport,
    routes: Object.freeze(
      [
        { method: "GET", path: "/boot/ipxe", access: "public", handle: handleScript },
        { method: "GET", path: "/boot/report", access: "public", handle: handleReport },
        { method: "POST", path: "/boot/report", access: "public", handle: handleReport },
      ] satisfies HttpRoute[],
    ),
  };
}
