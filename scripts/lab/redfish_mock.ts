/**
 * A Redfish endpoint on loopback for tests and the lab, behaving like the reference emulator
 * (sushy-tools) and real BMCs where drivers trip: power changes land asynchronously after a
 * delay, a `Once` boot override reads back as `Continuous`, `PowerCycle` is not offered, virtual
 * media lives under `Systems/<id>/VirtualMedia` and the BMC downloads the image itself (an
 * unreachable URL gives HTTP 500), sessions and Basic auth (a wrong password gives 401). Faults
 * can be injected (error statuses, hangs, slow power) and every request is recorded (method,
 * path, auth kind, status) for tests to read. Sessions, records and boots are bounded.
 *
 * Run it alone: `deno run --allow-net scripts/lab/redfish_mock.ts --systems 4 --port 8000`.
 *
 * @example
 * ```ts ignore
 * await using mock = startRedfishMock({ systems: 2, powerDelayMs: 200 });
 * mock.inject({ kind: "status", status: 500, method: "POST", path: /Reset$/, times: 1 });
 * console.log(mock.url, mock.records.length);
 * ```
 *
 * @module
 */

/** Options of {@linkcode startRedfishMock}. */
export interface RedfishMockOptions {
  /** Systems served, with ids `1` … `N`. @default 1 */
  systems?: number;
  /** Accepted user. @default "admin" */
  username?: string;
  /** Accepted password. @default "password" */
  password?: string;
  /** Delay before a reset's power change is visible. @default 0 */
  powerDelayMs?: number;
  /** Offer the session service; without it only Basic auth works. @default true */
  sessions?: boolean;
  /** Sessions open at once; one more is refused with 503. @default 16 */
  maxSessions?: number;
  /** Requests kept in {@linkcode RedfishMock.records} (oldest dropped first). @default 10000 */
  maxRecords?: number;
  /** `ResetType@Redfish.AllowableValues` of every system (no `PowerCycle`, as on many BMCs). */
  resetTypes?: readonly string[];
  /** Read a `Once` boot override back as `Continuous`, as some BMCs do. @default true */
  onceAsContinuous?: boolean;
  /** Power state of every system at start. @default "On" */
  initialPower?: "On" | "Off";
  /** Loopback port; 0 picks a free one. @default 0 */
  port?: number;
  /** Serve HTTPS with this PEM certificate chain and key. */
  tls?: { cert: string; key: string };
  /**
   * Called when a system powers on (boots), e.g. to make it network-boot when `boot.source` is
   * `Pxe` (the lab's stand-in, `netboot_stand_in.ts`). With it, a reset's power change lands when
   * due even if nobody reads the system.
   */
  onBoot?: (systemId: string, boot: RedfishBoot) => void;
}

/** An injected fault; it applies to requests matching `method` and `path` (all when omitted). */
export type RedfishFault =
  | {
    /** Answer with an error status and a Redfish error body. */
    kind: "status";
    status: number;
    /** Message in `error.@Message.ExtendedInfo`. */
    message?: string;
    method?: string;
    path?: string | RegExp;
    /** Requests it applies to before it is spent. @default every one */
    times?: number;
  }
  | {
    /** Never answer (until the mock closes). */
    kind: "hang";
    method?: string;
    path?: string | RegExp;
    times?: number;
  }
  | {
    /** Answer only after `delayMs` (a slow BMC). */
    kind: "slow";
    delayMs: number;
    method?: string;
    path?: string | RegExp;
    times?: number;
  }
  | {
    /** Power changes from now on take `delayMs`. */
    kind: "slowPower";
    delayMs: number;
  };

/** How a request authenticated. */
export type RedfishAuthKind = "session" | "basic" | "none";

/** One request the mock received. */
export interface RedfishRecord {
  readonly method: string;
  readonly path: string;
  /** The credential it carried (valid or not). */
  readonly auth: RedfishAuthKind;
  /** Answer status; 0 when the mock never answered (hang). */
  status: number;
}

/** One boot of a system: where it booted from and the virtual media then inserted. */
export interface RedfishBoot {
  readonly source: string;
  readonly image: string | null;
}

/** State of one mocked system, for tests to inspect. */
export interface RedfishSystemState {
  readonly id: string;
  /** Power as settled now (pending changes applied once due). */
  readonly power: "On" | "Off";
  /** The override as stored (`Once` even when it reads back as `Continuous`). */
  readonly bootTarget: string;
  readonly bootEnabled: string;
  /** Inserted virtual-media image, or null. */
  readonly image: string | null;
  /** Boots so far (the last 100). */
  readonly boots: readonly RedfishBoot[];
  /** `ResetType`s received so far (the last 100). */
  readonly resets: readonly string[];
}

/** The running mock. */
export interface RedfishMock extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  /** Every request so far (bounded by `maxRecords`). */
  readonly records: readonly RedfishRecord[];
  /** Sessions open now. */
  readonly openSessions: number;
  /** Most requests that were in the mock at once. */
  readonly peakInFlight: number;
  /** A system's state (throws for an unknown id). */
  system(id: string): RedfishSystemState;
  /** Adds a fault. */
  inject(fault: RedfishFault): void;
  /** Removes every fault. */
  clearFaults(): void;
  /** Stops the server, ending hung requests. */
  close(): Promise<void>;
}

const ROOT = "/redfish/v1";
const ALL_RESET_TYPES = [
  "On",
  "ForceOff",
  "GracefulShutdown",
  "GracefulRestart",
  "ForceRestart",
  "Nmi",
];
const BOOT_TARGETS = ["None", "Pxe", "Hdd", "Cd", "UefiHttp"];
const BOOT_ENABLED = ["Disabled", "Once", "Continuous"];
const MAX_BOOTS = 100;
const IMAGE_TIMEOUT_MS = 5_000;

interface SystemState {
  id: string;
  power: "On" | "Off";
  pending?: { kind: "on" | "off" | "restart"; at: number };
  bootTarget: string;
  bootEnabled: string;
  image: string | null;
  writeProtected: boolean;
  boots: RedfishBoot[];
  resets: string[];
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly messageId = "GeneralError") {
    super(message);
  }
}

/**
 * Starts the mock on 127.0.0.1.
 *
 * @param options Systems, credentials, timing, quirks and TLS.
 * @returns The running mock; close it (or `await using`) to stop it.
 */
export function startRedfishMock(options: RedfishMockOptions = {}): RedfishMock {
  const {
    systems: count = 1,
    username = "admin",
    password = "password",
    sessions: sessionsOn = true,
    maxSessions = 16,
    maxRecords = 10_000,
    resetTypes = ALL_RESET_TYPES,
    onceAsContinuous = true,
    initialPower = "On",
  } = options;
  let powerDelayMs = options.powerDelayMs ?? 0;
  const systems = new Map<string, SystemState>();
  for (let i = 1; i <= count; i++) {
    systems.set(String(i), {
      id: String(i),
      power: initialPower,
      bootTarget: "None",
      bootEnabled: "Disabled",
      image: null,
      writeProtected: true,
      boots: [],
      resets: [],
    });
  }
  const sessions = new Map<string, string>(); // token -> session id
  let nextSession = 1;
  const records: RedfishRecord[] = [];
  let faults: (RedfishFault & { used: number })[] = [];
  const closing = new AbortController();
  let inFlight = 0;
  let peakInFlight = 0;
  const timers = new Set<ReturnType<typeof setTimeout>>();

  function settle(system: SystemState): void {
    const pending = system.pending;
    if (pending === undefined || Date.now() < pending.at) return;
    system.pending = undefined;
    if (pending.kind === "off") {
      system.power = "Off";
      return;
    }
    system.power = "On";
    const overridden = system.bootEnabled !== "Disabled";
    const boot = { source: overridden ? system.bootTarget : "Hdd", image: system.image };
    system.boots.push(boot);
    if (system.boots.length > MAX_BOOTS) system.boots.shift();
    // After the state change, so the hook sees the system on.
    if (options.onBoot) queueMicrotask(() => options.onBoot?.(system.id, boot));
    if (system.bootEnabled === "Once") {
      system.bootEnabled = "Disabled";
      system.bootTarget = "None";
    }
  }

  function reportedPower(system: SystemState): string {
    settle(system);
    // A restart drops the host at once and brings it back after the delay; On and Off read
    // stale until they land, as sushy-tools and real BMCs do.
    return system.pending?.kind === "restart" ? "PoweringOn" : system.power;
  }

  function systemJson(system: SystemState): unknown {
    const path = `${ROOT}/Systems/${system.id}`;
    return {
      "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
      "@odata.id": path,
      Id: system.id,
      Name: `bmdemo-lab-${system.id}`,
      UUID: `00000000-0000-4000-8000-${system.id.padStart(12, "0")}`,
      SystemType: "Physical",
      PowerState: reportedPower(system),
      Boot: {
        BootSourceOverrideTarget: system.bootTarget,
        BootSourceOverrideEnabled: system.bootEnabled === "Once" && onceAsContinuous
          ? "Continuous"
          : system.bootEnabled,
        BootSourceOverrideMode: "UEFI",
        "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
      },
      Actions: {
        "#ComputerSystem.Reset": {
          target: `${path}/Actions/ComputerSystem.Reset`,
          "ResetType@Redfish.AllowableValues": resetTypes,
        },
      },
      VirtualMedia: { "@odata.id": `${path}/VirtualMedia` },
      Links: { ManagedBy: [{ "@odata.id": `${ROOT}/Managers/${system.id}` }] },
    };
  }

  function mediaJson(system: SystemState): unknown {
    const path = `${ROOT}/Systems/${system.id}/VirtualMedia/Cd`;
    return {
      "@odata.type": "#VirtualMedia.v1_3_0.VirtualMedia",
      "@odata.id": path,
      Id: "Cd",
      Name: "Virtual CD",
      MediaTypes: ["CD", "DVD"],
      Image: system.image,
      ImageName: system.image?.split("/").at(-1) ?? null,
      Inserted: system.image !== null,
      WriteProtected: system.writeProtected,
      ConnectedVia: system.image === null ? "NotConnected" : "URI",
      Actions: {
        "#VirtualMedia.InsertMedia": { target: `${path}/Actions/VirtualMedia.InsertMedia` },
        "#VirtualMedia.EjectMedia": { target: `${path}/Actions/VirtualMedia.EjectMedia` },
      },
    };
  }

  function collection(path: string, ids: Iterable<string>): unknown {
    const members = [...ids].map((id) => ({ "@odata.id": `${path}/${id}` }));
    return { "@odata.id": path, Members: members, "Members@odata.count": members.length };
  }

  function serviceRoot(): unknown {
    return {
      "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
      "@odata.id": ROOT,
      Id: "RootService",
      Name: "bmdemo Redfish mock",
      RedfishVersion: "1.11.0",
      UUID: "00000000-0000-4000-8000-000000000000",
      Systems: { "@odata.id": `${ROOT}/Systems` },
      Managers: { "@odata.id": `${ROOT}/Managers` },
      ...(sessionsOn
        ? {
          SessionService: { "@odata.id": `${ROOT}/SessionService` },
          Links: { Sessions: { "@odata.id": `${ROOT}/SessionService/Sessions` } },
        }
        : {}),
    };
  }

  function authOf(request: Request): { kind: RedfishAuthKind; valid: boolean } {
    const token = request.headers.get("x-auth-token");
    if (token !== null) return { kind: "session", valid: sessions.has(token) };
    const header = request.headers.get("authorization") ?? "";
    if (header.startsWith("Basic ")) {
      let decoded = "";
      try {
        decoded = atob(header.slice(6));
      } catch { /* an undecodable header is a wrong credential */ }
      return { kind: "basic", valid: decoded === `${username}:${password}` };
    }
    return { kind: "none", valid: false };
  }

  async function body(request: Request): Promise<Record<string, unknown>> {
    const text = await request.text();
    if (text.trim() === "") return {};
    try {
      const value = JSON.parse(text);
      if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
    } catch { /* reported below */ }
    throw new HttpError(400, "The request body is not a JSON object.", "MalformedJSON");
  }

  function systemAt(id: string): SystemState {
    const system = systems.get(id);
    if (system === undefined) throw new HttpError(404, `No system ${id}.`, "ResourceMissingAtURI");
    return system;
  }

  function reset(system: SystemState, type: unknown): void {
    if (typeof type !== "string" || !resetTypes.includes(type)) {
      throw new HttpError(
        400,
        `The value ${JSON.stringify(type)} for the parameter ResetType is not supported: ` +
          `allowed values are ${resetTypes.join(", ")}.`,
        "ActionParameterNotSupported",
      );
    }
    system.resets.push(type);
    if (system.resets.length > MAX_BOOTS) system.resets.shift();
    settle(system);
    const at = Date.now() + powerDelayMs;
    const on = system.power === "On";
    if (type === "On" && !on) system.pending = { kind: "on", at };
    else if ((type === "ForceOff" || type === "GracefulShutdown") && on) {
      system.pending = { kind: "off", at };
    } else if (type.endsWith("Restart") || type === "PowerCycle") {
      system.pending = { kind: on ? "restart" : "on", at };
    }
    settle(system);
    if (options.onBoot && system.pending) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        settle(system);
      }, powerDelayMs);
      timers.add(timer);
    }
  }

  async function insertMedia(system: SystemState, input: Record<string, unknown>): Promise<void> {
    const image = input.Image;
    if (typeof image !== "string" || !/^https?:\/\//.test(image)) {
      throw new HttpError(400, "Image must be an http(s) URL.", "PropertyValueFormatError");
    }
    if (system.image !== null) {
      throw new HttpError(409, `Media ${system.image} is inserted: eject it first.`);
    }
    // The BMC fetches the image itself: a URL it cannot reach fails the action.
    try {
      const response = await fetch(image, {
        signal: AbortSignal.any([closing.signal, AbortSignal.timeout(IMAGE_TIMEOUT_MS)]),
      });
      await response.body?.cancel();
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
    } catch (error) {
      throw new HttpError(500, `Unable to download the image from ${image}: ${String(error)}`);
    }
    system.image = image;
    system.writeProtected = input.WriteProtected !== false;
  }

  function patchSystem(system: SystemState, input: Record<string, unknown>): void {
    for (const key of Object.keys(input)) {
      if (key !== "Boot") {
        throw new HttpError(
          400,
          `The property ${key} is not known or is read-only.`,
          "PropertyUnknown",
        );
      }
    }
    const boot = (input.Boot ?? {}) as Record<string, unknown>;
    const target = boot.BootSourceOverrideTarget ?? system.bootTarget;
    const enabled = boot.BootSourceOverrideEnabled ?? system.bootEnabled;
    if (typeof target !== "string" || !BOOT_TARGETS.includes(target)) {
      throw new HttpError(
        400,
        `BootSourceOverrideTarget ${JSON.stringify(target)} is not allowed.`,
        "PropertyValueNotInList",
      );
    }
    if (typeof enabled !== "string" || !BOOT_ENABLED.includes(enabled)) {
      throw new HttpError(
        400,
        `BootSourceOverrideEnabled ${JSON.stringify(enabled)} is not allowed.`,
        "PropertyValueNotInList",
      );
    }
    system.bootTarget = target;
    system.bootEnabled = enabled;
  }

  function json(status: number, value: unknown, headers: HeadersInit = {}): Response {
    return new Response(JSON.stringify(value), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });
  }

  function errorResponse(error: HttpError): Response {
    return json(error.status, {
      error: {
        code: "Base.1.8.GeneralError",
        message: "A general error has occurred. See ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [{
          "@odata.type": "#Message.v1_1_1.Message",
          MessageId: `Base.1.8.${error.messageId}`,
          Message: error.message,
          Severity: "Critical",
          Resolution: "None.",
        }],
      },
    }, error.status === 401 ? { "www-authenticate": 'Basic realm="bmdemo"' } : {});
  }

  async function route(request: Request, method: string, path: string): Promise<Response> {
    if (method === "GET" && path === ROOT) return json(200, serviceRoot());
    if (method === "GET" && path === "/redfish") return json(200, { v1: `${ROOT}/` });
    const sessionsPath = `${ROOT}/SessionService/Sessions`;
    if (sessionsOn && method === "POST" && path === sessionsPath) {
      const input = await body(request);
      if (input.UserName !== username || input.Password !== password) {
        throw new HttpError(401, "The user name or password is not valid.", "NoValidSession");
      }
      if (sessions.size >= maxSessions) {
        throw new HttpError(
          503,
          `The maximum of ${maxSessions} sessions is reached.`,
          "SessionLimitExceeded",
        );
      }
      const id = String(nextSession++);
      const token = crypto.randomUUID();
      sessions.set(token, id);
      return json(201, { "@odata.id": `${sessionsPath}/${id}`, Id: id, UserName: username }, {
        "x-auth-token": token,
        location: `${sessionsPath}/${id}`,
      });
    }
    const auth = authOf(request);
    if (!auth.valid) {
      throw new HttpError(401, "The credential is missing or not valid.", "NoValidSession");
    }
    const parts = path.slice(ROOT.length + 1).split("/");
    if (sessionsOn && path.startsWith(`${sessionsPath}/`) && parts.length === 3) {
      const entry = [...sessions].find(([, id]) => id === parts[2]);
      if (entry === undefined) {
        throw new HttpError(404, `No session ${parts[2]}.`, "ResourceMissingAtURI");
      }
      if (method === "DELETE") {
        sessions.delete(entry[0]);
        return new Response(null, { status: 204 });
      }
      if (method === "GET") {
        return json(200, { "@odata.id": path, Id: parts[2], UserName: username });
      }
    }
    if (sessionsOn && method === "GET" && path === sessionsPath) {
      return json(200, collection(sessionsPath, sessions.values()));
    }
    if (sessionsOn && method === "GET" && path === `${ROOT}/SessionService`) {
      return json(200, {
        "@odata.id": path,
        ServiceEnabled: true,
        Sessions: { "@odata.id": sessionsPath },
      });
    }
    if (method === "GET" && path === `${ROOT}/Systems`) {
      return json(200, collection(path, systems.keys()));
    }
    if (method === "GET" && path === `${ROOT}/Managers`) {
      return json(200, collection(path, systems.keys()));
    }
    if (parts[0] === "Managers" && parts.length === 2 && method === "GET") {
      const system = systemAt(parts[1]);
      return json(200, {
        "@odata.id": path,
        Id: system.id,
        ManagerType: "BMC",
        VirtualMedia: { "@odata.id": `${ROOT}/Systems/${system.id}/VirtualMedia` },
        Links: { ManagerForServers: [{ "@odata.id": `${ROOT}/Systems/${system.id}` }] },
      });
    }
    if (parts[0] !== "Systems" || parts.length < 2) {
      throw new HttpError(404, `No resource at ${path}.`, "ResourceMissingAtURI");
    }
    const system = systemAt(parts[1]);
    const rest = parts.slice(2).join("/");
    if (rest === "" && method === "GET") return json(200, systemJson(system));
    if (rest === "" && method === "PATCH") {
      patchSystem(system, await body(request));
      return new Response(null, { status: 204 });
    }
    if (rest === "Actions/ComputerSystem.Reset" && method === "POST") {
      reset(system, (await body(request)).ResetType);
      return new Response(null, { status: 204 });
    }
    if (rest === "VirtualMedia" && method === "GET") return json(200, collection(path, ["Cd"]));
    if (rest === "VirtualMedia/Cd" && method === "GET") return json(200, mediaJson(system));
    if (rest === "VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia" && method === "POST") {
      await insertMedia(system, await body(request));
      return new Response(null, { status: 204 });
    }
    if (rest === "VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia" && method === "POST") {
      await request.body?.cancel();
      system.image = null;
      return new Response(null, { status: 204 });
    }
    throw new HttpError(404, `No resource at ${path} for ${method}.`, "ResourceMissingAtURI");
  }

  function matchingFault(method: string, path: string): RedfishFault | undefined {
    for (const fault of faults) {
      if (fault.kind === "slowPower") continue;
      if (fault.method !== undefined && fault.method !== method) continue;
      const where = fault.path;
      if (where !== undefined && !(typeof where === "string" ? path === where : where.test(path))) {
        continue;
      }
      if (fault.times !== undefined && fault.used >= fault.times) continue;
      fault.used++;
      return fault;
    }
    return undefined;
  }

  async function handle(request: Request): Promise<Response> {
    inFlight++;
    peakInFlight = Math.max(peakInFlight, inFlight);
    try {
      return await answer(request);
    } finally {
      inFlight--;
    }
  }

  async function answer(request: Request): Promise<Response> {
    const method = request.method;
    const path = new URL(request.url).pathname.replace(/\/+$/, "") || "/";
    const record: RedfishRecord = { method, path, auth: authOf(request).kind, status: 0 };
    records.push(record);
    if (records.length > maxRecords) records.shift();
    const fault = matchingFault(method, path);
    // Only the mock's close ends a hang: reading request.signal would switch Deno.serve's
    // legacy abort warning on, and the client's own timeout is what a test exercises.
    const stop = closing.signal;
    if (fault?.kind === "hang") {
      await new Promise((resolve) => stop.addEventListener("abort", resolve, { once: true }));
      await request.body?.cancel();
      return new Response(null, { status: 503 });
    }
    if (fault?.kind === "slow") {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, fault.delayMs);
        function done(): void {
          clearTimeout(timer);
          stop.removeEventListener("abort", done);
          resolve();
        }
        stop.addEventListener("abort", done, { once: true });
      });
    }
    let response: Response;
    try {
      if (fault?.kind === "status") {
        throw new HttpError(fault.status, fault.message ?? `Injected fault: HTTP ${fault.status}.`);
      }
      response = await route(request, method, path);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      if (!request.bodyUsed) await request.body?.cancel();
      response = errorResponse(error);
    }
    record.status = response.status;
    return response;
  }

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: options.port ?? 0,
    onListen: () => {},
    ...(options.tls ?? {}),
  }, handle);
  const scheme = options.tls === undefined ? "http" : "https";
  const url = `${scheme}://127.0.0.1:${server.addr.port}`;

  async function close(): Promise<void> {
    closing.abort();
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    await server.shutdown();
  }

  return {
    url,
    records,
    get openSessions() {
      return sessions.size;
    },
    get peakInFlight() {
      return peakInFlight;
    },
    system(id) {
      const system = systemAt(id);
      settle(system);
      return {
        id,
        power: system.power,
        bootTarget: system.bootTarget,
        bootEnabled: system.bootEnabled,
        image: system.image,
        boots: [...system.boots],
        resets: [...system.resets],
      };
    },
    inject(fault) {
      if (fault.kind === "slowPower") powerDelayMs = fault.delayMs;
      else faults.push({ ...fault, used: 0 });
    },
    clearFaults() {
      faults = [];
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

if (import.meta.main) {
  const args = Deno.args;
  const flag = (name: string, fallback: number): number => {
    const index = args.indexOf(`--${name}`);
    const value = index < 0 ? fallback : Number(args[index + 1]);
    if (!Number.isSafeInteger(value) || value < 0) {
      console.error(
        `--${name} must be a non-negative integer: current value is ${args[index + 1]}`,
      );
      Deno.exit(2);
    }
    return value;
  };
  const mock = startRedfishMock({
    systems: flag("systems", 1),
    port: flag("port", 0),
    powerDelayMs: flag("power-delay-ms", 2000),
  });
  console.log(`Redfish mock on ${mock.url}/redfish/v1 (user admin, password password)`);
  Deno.addSignalListener("SIGINT", () => mock.close().then(() => Deno.exit(0)));
}
