/**
 * The HTTP side of the Redfish driver: BMC addresses, TLS clients (a CA file, or any certificate
 * for lab BMCs), one session per driver action (`X-Auth-Token`, deleted at its end, Basic auth
 * when the BMC offers no sessions), every request through the BMC gate with its own timeout, and
 * failures as {@linkcode RedfishError}s carrying the method, path, status and the BMC's message,
 * never a credential.
 *
 * @module
 */

import { request as httpsRequest } from "node:https";
import type { BmcGate, BmcTarget } from "./bmc.ts";
import { type ProviderCall, ProviderError } from "./mod.ts";

/** A Redfish BMC address split into the service's origin and the system, when it names one. */
export interface RedfishAddress {
  /** `scheme://host:port`, also the gate's key for this BMC. */
  readonly origin: string;
  /** `/redfish/v1/Systems/<id>`, or undefined when the BMC's only system is to be used. */
  readonly systemPath?: string;
}

/**
 * Parses `spec.bmc_address` for Redfish: `https://host[:port]` or `http://…`, optionally ending
 * in `/redfish/v1/Systems/<id>`.
 *
 * @param address The address as registered.
 * @returns Its origin and system path.
 * @throws {RangeError} When the address is not such a URL (the message names the fix).
 *
 * @example
 * ```ts
 * parseRedfishAddress("https://10.0.0.5/redfish/v1/Systems/1");
 * // { origin: "https://10.0.0.5", systemPath: "/redfish/v1/Systems/1" }
 * ```
 */
export function parseRedfishAddress(address: string): RedfishAddress {
  const expected = "expected https://host[:port] or http://host[:port], " +
    "optionally ending in /redfish/v1/Systems/<id>";
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new RangeError(`Invalid Redfish bmc_address "${address}": ${expected}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new RangeError(`Invalid Redfish bmc_address "${address}": ${expected}`);
  }
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    throw new RangeError(
      `Invalid Redfish bmc_address "${url.origin}": it must carry no credential, query or ` +
        `fragment (credentials come from --bmc-credentials); ${expected}`,
    );
  }
  const path = url.pathname.replace(/\/+$/, "");
  if (path === "" || path === "/redfish/v1") return { origin: url.origin };
  if (/^\/redfish\/v1\/Systems\/[^/]+$/.test(path)) return { origin: url.origin, systemPath: path };
  throw new RangeError(`Invalid Redfish bmc_address "${address}": ${expected}`);
}

/** Options of {@linkcode RedfishError}. */
export interface RedfishErrorOptions extends ErrorOptions {
  /** HTTP method of the failed request. */
  method: string;
  /** Path of the failed request. */
  path: string;
  /** HTTP status; 0 when the BMC did not answer. @default 0 */
  status?: number;
  /** What the BMC said (its `@Message.ExtendedInfo` messages). @default "" */
  bmcMessage?: string;
  /** Retrying cannot help. @default false */
  permanent?: boolean;
}

/** A Redfish request that failed: what was asked, what the BMC answered, whether to retry. */
export class RedfishError extends ProviderError {
  /** HTTP method. */
  readonly method: string;
  /** Request path. */
  readonly path: string;
  /** HTTP status; 0 when the BMC did not answer (timeout, refused connection). */
  readonly status: number;
  /** The BMC's message, or "". */
  readonly bmcMessage: string;

  /**
   * @param message What failed.
   * @param options The request, the BMC's answer and whether retrying can help.
   */
  constructor(message: string, options: RedfishErrorOptions) {
    super(`Redfish ${options.method} ${options.path} failed: ${message}`, options);
    this.method = options.method;
    this.path = options.path;
    this.status = options.status ?? 0;
    this.bmcMessage = options.bmcMessage ?? "";
  }
}

/**
 * Whether retrying a request the BMC answered with `status` cannot help: the client errors
 * (bad request, refused credential, unknown resource, unsupported) and 501/505. Timeouts (408),
 * conflicts (409, 412: another action in progress, a stale ETag), throttling (429) and the other
 * 5xx are transient.
 *
 * @param status HTTP status.
 * @returns True when the failure is permanent.
 *
 * @example
 * ```ts
 * isPermanentStatus(401); // true
 * isPermanentStatus(503); // false
 * ```
 */
export function isPermanentStatus(status: number): boolean {
  if (status === 501 || status === 505) return true;
  return status >= 400 && status < 500 && ![408, 409, 412, 429].includes(status);
}

/** A JSON object as a BMC sends it. */
export type RedfishJson = Record<string, unknown>;

/** Options of {@linkcode openRedfishSession}. */
export interface RedfishSessionOptions {
  /** Bounds the calls in flight to the BMC. */
  gate: BmcGate;
  /** Time one request may take once it holds a gate slot. */
  requestTimeoutMs: number;
}

/** Options of one {@linkcode RedfishSession.request}. */
export interface RedfishRequestOptions {
  /** JSON body. */
  body?: unknown;
  /** Do not log the request (polls log state changes instead). */
  quiet?: boolean;
  /** The body carries a secret: never log it. */
  secret?: boolean;
}

/** One authenticated conversation with a BMC, for one driver action. */
export interface RedfishSession {
  /** The BMC's origin. */
  readonly origin: string;
  /** The service root, as read when the session opened. */
  readonly root: RedfishJson;
  /** Sends a request; resolves with the JSON answer (an empty object for an empty one). */
  request(method: string, path: string, options?: RedfishRequestOptions): Promise<RedfishJson>;
  /** Deletes the session (even after an abort) and frees the TLS client; never throws. */
  close(): Promise<void>;
}

type Fetcher = (url: string, init: RequestInit) => Promise<Response>;

/**
 * Opens a session: reads the service root, then logs in with a Redfish session, or Basic auth
 * when the BMC offers no session service.
 *
 * @param call The provider call (signal and log).
 * @param target The BMC and its credential.
 * @param options The gate and the request timeout.
 * @returns The open session; close it in a `finally`.
 * @throws {RedfishError} When the BMC cannot be reached or refuses the credential.
 */
export async function openRedfishSession(
  call: ProviderCall,
  target: BmcTarget,
  options: RedfishSessionOptions,
): Promise<RedfishSession> {
  const { origin } = parseAddressForCall(target.address);
  const { credential } = target;
  const transport = await openTransport(target);
  let authorization: Record<string, string> = {};
  let sessionPath: string | undefined;

  const redact = (text: string): string =>
    credential.password === "" ? text : text.replaceAll(credential.password, "***");

  async function send(
    method: string,
    path: string,
    signal: AbortSignal,
    request: RedfishRequestOptions,
  ): Promise<{ json: RedfishJson; headers: Headers; status: number }> {
    const headers: Record<string, string> = {
      accept: "application/json",
      "odata-version": "4.0",
      ...authorization,
    };
    if (request.body !== undefined) headers["content-type"] = "application/json";
    const body = request.body === undefined ? undefined : JSON.stringify(request.body);
    const fail = (message: string, extra: Partial<RedfishErrorOptions> = {}) =>
      new RedfishError(redact(message), { method, path, ...extra });
    return await options.gate.run(target.key, signal, async () => {
      const timeout = new AbortController();
      const timer = setTimeout(
        () => timeout.abort(fail(`no answer within ${options.requestTimeoutMs}ms`)),
        options.requestTimeoutMs,
      );
      try {
        const response = await transport.fetch(new URL(path, origin).href, {
          method,
          headers,
          body,
          signal: AbortSignal.any([signal, timeout.signal]),
        });
        const text = await response.text();
        if (!request.quiet) {
          const shown = request.body === undefined || request.secret ? "" : ` ${body}`;
          call.log(`Redfish ${method} ${path}${shown} -> ${response.status}`);
        }
        if (!response.ok) {
          const bmcMessage = redact(bmcMessageOf(text));
          throw fail(
            `HTTP ${response.status} ${response.statusText}`.trimEnd() +
              (bmcMessage === "" ? "" : `: ${bmcMessage}`),
            { status: response.status, bmcMessage, permanent: isPermanentStatus(response.status) },
          );
        }
        return { json: parseJson(text, fail), headers: response.headers, status: response.status };
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (timeout.signal.aborted) throw timeout.signal.reason;
        if (error instanceof RedfishError) throw error;
        const reason = describeNetworkError(error);
        // An untrusted certificate stays untrusted: fix caFile or insecure instead of retrying.
        const permanent = /certificate/i.test(reason);
        throw fail(`no answer from ${origin}: ${reason}`, { cause: error, permanent });
      } finally {
        clearTimeout(timer);
      }
    });
  }

  async function request(
    method: string,
    path: string,
    request: RedfishRequestOptions = {},
  ): Promise<RedfishJson> {
    return (await send(method, path, call.signal, request)).json;
  }

  async function close(): Promise<void> {
    try {
      if (sessionPath === undefined) return;
      // The session is deleted even when the action was aborted: a BMC holds few sessions.
      const signal = AbortSignal.timeout(options.requestTimeoutMs);
      try {
        await send("DELETE", sessionPath, signal, {});
      } catch (error) {
        call.log(
          `Redfish session ${sessionPath} not deleted (it expires on the BMC): ${errorText(error)}`,
          "stderr",
        );
      }
    } finally {
      transport.close();
    }
  }

  try {
    const root = await request("GET", "/redfish/v1");
    const sessions = linkOf(recordOf(root.Links).Sessions);
    if (sessions === undefined) {
      call.log("Redfish: the BMC offers no session service; using Basic auth");
    } else {
      try {
        const answer = await send("POST", sessions, call.signal, {
          body: { UserName: credential.username, Password: credential.password },
          secret: true,
        });
        const token = answer.headers.get("x-auth-token");
        const location = answer.headers.get("location");
        if (token !== null) {
          authorization = { "x-auth-token": token };
          if (location === null) {
            call.log("Redfish: the BMC gave no session Location; the session expires on its own");
          } else sessionPath = new URL(location, origin).pathname;
        } else call.log("Redfish: the BMC gave no X-Auth-Token; using Basic auth");
      } catch (error) {
        if (!(error instanceof RedfishError) || ![404, 405, 501, 503].includes(error.status)) {
          throw error;
        }
        // 503: the BMC's session table is full (many operations at once); sushy's
        // SessionOrBasicAuth falls back to Basic auth the same way.
        call.log(
          error.status === 503
            ? "Redfish: the BMC refused a session (HTTP 503, its session limit?); using Basic auth"
            : `Redfish: sessions are not supported (HTTP ${error.status}); using Basic auth`,
        );
      }
    }
    if (sessionPath === undefined && authorization["x-auth-token"] === undefined) {
      const basic = btoa(`${credential.username}:${credential.password}`);
      authorization = { authorization: `Basic ${basic}` };
    }
    return { origin, root, request, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** `parseRedfishAddress` for a call: a bad address is a permanent step failure. */
function parseAddressForCall(address: string): RedfishAddress {
  try {
    return parseRedfishAddress(address);
  } catch (error) {
    throw new ProviderError(errorText(error), { permanent: true });
  }
}

/**
 * Reads the `@odata.id` of a link object.
 *
 * @param value A link, e.g. `root.Systems`.
 * @returns The path, or undefined.
 */
export function linkOf(value: unknown): string | undefined {
  const id = recordOf(value)["@odata.id"];
  return typeof id === "string" && id !== "" ? id : undefined;
}

/**
 * The value as a JSON object, or an empty one.
 *
 * @param value Anything from a BMC's answer.
 * @returns The object.
 */
export function recordOf(value: unknown): RedfishJson {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as RedfishJson
    : {};
}

/** The message of an error value. */
function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function parseJson(text: string, fail: (message: string) => RedfishError): RedfishJson {
  if (text.trim() === "") return {};
  try {
    return recordOf(JSON.parse(text));
  } catch {
    throw fail(`the answer is not JSON: ${JSON.stringify(text.slice(0, 120))}`);
  }
}

/** The BMC's own words from a Redfish error body: `@Message.ExtendedInfo`, else `message`. */
function bmcMessageOf(text: string): string {
  let body: RedfishJson;
  try {
    body = recordOf(JSON.parse(text));
  } catch {
    return text.trim().slice(0, 200);
  }
  const error = recordOf(body.error);
  const info = error["@Message.ExtendedInfo"];
  const messages = Array.isArray(info)
    ? info.map((entry) => recordOf(entry).Message).filter((m) => typeof m === "string")
    : [];
  if (messages.length > 0) return messages.join("; ");
  return typeof error.message === "string" ? error.message : "";
}

function describeNetworkError(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error; e instanceof Error && parts.length < 4; e = e.cause) {
    parts.push(e.message);
  }
  return parts.length > 0 ? parts.join(": ") : String(error);
}

/** How requests reach one BMC: Deno's fetch with the right TLS trust, and how to free it. */
interface Transport {
  fetch: Fetcher;
  close(): void;
}

async function openTransport(target: BmcTarget): Promise<Transport> {
  const { caFile, insecure } = target.credential;
  if (insecure === true) {
    // Deno.createHttpClient cannot turn certificate checks off (only the process-wide
    // --unsafely-ignore-certificate-errors can), so lab BMCs go through node:https.
    return { fetch: insecureFetch, close: () => {} };
  }
  if (caFile === undefined) return { fetch: (url, init) => fetch(url, init), close: () => {} };
  let pem: string;
  try {
    pem = await Deno.readTextFile(caFile);
  } catch (error) {
    throw new ProviderError(
      `Cannot read the CA file "${caFile}" for BMC ${target.key}: ${errorText(error)}`,
      { permanent: true },
    );
  }
  const client = Deno.createHttpClient({ caCerts: [pem] });
  return { fetch: (url, init) => fetch(url, { ...init, client }), close: () => client.close() };
}

/** A fetch that accepts any TLS certificate (`insecure: true`), over node:https. */
function insecureFetch(url: string, init: RequestInit): Promise<Response> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(url, {
      method: init.method,
      headers: init.headers as Record<string, string>,
      rejectUnauthorized: false,
      agent: false,
      signal: init.signal ?? undefined,
    }, (response) => {
      const chunks: Uint8Array<ArrayBuffer>[] = [];
      response.on("data", (chunk: Uint8Array) => chunks.push(new Uint8Array(chunk)));
      response.on("error", reject);
      response.on("end", () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined) {
            headers.set(name, Array.isArray(value) ? value.join(", ") : value);
          }
        }
        const status = response.statusCode ?? 0;
        const body = chunks.length === 0 || status === 204 ? null : new Blob(chunks);
        resolve(new Response(body, { status, statusText: response.statusMessage, headers }));
      });
    });
    request.on("error", reject);
    request.end(typeof init.body === "string" ? init.body : undefined);
  });
}
