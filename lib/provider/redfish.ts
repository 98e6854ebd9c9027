/**
 * The Redfish BMC driver over `fetch()`. Each action opens a session (see `redfish_http.ts`),
 * finds the system (the one named by the address, or the BMC's only one), acts, and deletes the
 * session, also on failure or abort. Power changes are asynchronous on real BMCs, so actions
 * that change power poll `PowerState` until it lands, for as long as the call's signal allows
 * (the step timeout aborts it). Virtual media insert and eject are here for the repave path.
 *
 * @example
 * ```ts ignore
 * const driver = createRedfishDriver({ gate: createBmcGate({ concurrency: 4 }) });
 * await driver.setBootPxe(call, target);
 * await driver.restart(call, target, { force: false });
 * ```
 *
 * @module
 */

import { abortableDelay } from "../model/abort.ts";
import type { BmcDriver, BmcGate, BmcTarget, PowerState } from "./bmc.ts";
import { type ProviderCall, ProviderError } from "./mod.ts";
import {
  linkOf,
  openRedfishSession,
  parseRedfishAddress,
  recordOf,
  RedfishError,
  type RedfishJson,
  type RedfishSession,
} from "./redfish_http.ts";

export { isPermanentStatus, parseRedfishAddress, RedfishError } from "./redfish_http.ts";

/** Options of {@linkcode createRedfishDriver}. */
export interface RedfishDriverOptions {
  /** Bounds the calls in flight per BMC (`--bmc-concurrency`). */
  gate: BmcGate;
  /** Time one request may take once it holds a gate slot. @default 15000 */
  requestTimeoutMs?: number;
  /** Delay between two `PowerState` reads while a power change lands. @default 1000 */
  pollIntervalMs?: number;
}

/** Options of {@linkcode RedfishDriver.insertMedia}. */
export interface InsertMediaOptions {
  /** URL the BMC downloads the image from (it must reach it). */
  image: string;
}

/** The Redfish driver: the BMC actions plus virtual media for the repave path. */
export interface RedfishDriver extends BmcDriver {
  /** Inserts `image` as the system's virtual CD (ejecting what was there). */
  insertMedia(call: ProviderCall, target: BmcTarget, options: InsertMediaOptions): Promise<void>;
  /** Ejects the system's virtual CD. */
  ejectMedia(call: ProviderCall, target: BmcTarget): Promise<void>;
}

/**
 * The gate key of a Redfish BMC: its origin (scheme, host and port), so that the systems one
 * BMC serves share its limit.
 *
 * @param address `spec.bmc_address`.
 * @returns The key.
 * @throws {RangeError} When the address is not a Redfish URL.
 *
 * @example
 * ```ts
 * redfishBmcKey("https://10.0.0.5/redfish/v1/Systems/2"); // "https://10.0.0.5"
 * ```
 */
export function redfishBmcKey(address: string): string {
  return parseRedfishAddress(address).origin;
}

/** What one action sees: the session and the system it acts on. */
interface Context {
  session: RedfishSession;
  systemPath: string;
}

/**
 * Creates the Redfish driver.
 *
 * @param options The gate, the request timeout and the poll interval.
 * @returns The driver.
 * @throws {RangeError} When a duration is negative.
 *
 * @example
 * ```ts
 * import { createBmcGate } from "./bmc_gate.ts";
 * const driver = createRedfishDriver({ gate: createBmcGate() });
 * driver.name; // "redfish"
 * ```
 */
export function createRedfishDriver(options: RedfishDriverOptions): RedfishDriver {
  const { gate, requestTimeoutMs = 15_000, pollIntervalMs = 1_000 } = options;
  for (
    const [name, value] of [["requestTimeoutMs", requestTimeoutMs], [
      "pollIntervalMs",
      pollIntervalMs,
    ]] as const
  ) {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(
        `Cannot create the Redfish driver as ${name} must be a non-negative number: current value is ${value}`,
      );
    }
  }

  async function withSystem<T>(
    call: ProviderCall,
    target: BmcTarget,
    action: (context: Context) => Promise<T>,
  ): Promise<T> {
    call.signal.throwIfAborted();
    const session = await openRedfishSession(call, target, { gate, requestTimeoutMs });
    try {
      const named = parseRedfishAddress(target.address).systemPath;
      const systemPath = named ?? await onlySystem(session, target);
      return await action({ session, systemPath });
    } finally {
      await session.close();
    }
  }

  async function onlySystem(session: RedfishSession, target: BmcTarget): Promise<string> {
    const systemsPath = linkOf(session.root.Systems) ?? "/redfish/v1/Systems";
    const members = (await session.request("GET", systemsPath)).Members;
    const paths = Array.isArray(members)
      ? members.map(linkOf).filter((path) => path !== undefined)
      : [];
    if (paths.length === 1) return paths[0];
    const found = paths.length === 0
      ? "no system"
      : `${paths.length} systems (${paths.join(", ")})`;
    throw new ProviderError(
      `Cannot choose a Redfish system as BMC ${target.key} serves ${found}: register machine ` +
        `${target.machineId} with a bmc_address ending in /redfish/v1/Systems/<id>`,
      { permanent: true },
    );
  }

  /** Reads `PowerState` until it is `want`; transient read failures are logged and retried. */
  async function waitForPower(call: ProviderCall, context: Context, want: string): Promise<void> {
    let last = "";
    let failures = 0;
    for (;;) {
      let state: string;
      try {
        state = powerStateOf(
          await context.session.request("GET", context.systemPath, { quiet: true }),
        );
        failures = 0;
      } catch (error) {
        if (call.signal.aborted || !(error instanceof RedfishError) || error.permanent) throw error;
        // A BMC busy applying a reset may drop a read or two.
        if (++failures >= 3) throw error;
        call.log(`Redfish: PowerState read failed, polling on: ${error.message}`, "stderr");
        state = last;
      }
      if (state !== last) call.log(`Redfish: PowerState ${state}`);
      last = state;
      if (state === want) return;
      await abortableDelay(pollIntervalMs, call.signal);
    }
  }

  async function reset(context: Context, type: string): Promise<void> {
    const action = await resetAction(context);
    await context.session.request("POST", action.target, { body: { ResetType: type } });
  }

  async function resetAction(
    context: Context,
  ): Promise<{ target: string; allowed?: readonly string[] }> {
    const system = await context.session.request("GET", context.systemPath);
    const action = recordOf(recordOf(system.Actions)["#ComputerSystem.Reset"]);
    const target = typeof action.target === "string" ? action.target : undefined;
    if (target === undefined) {
      throw new ProviderError(
        `Cannot reset Redfish system ${context.systemPath}: it offers no #ComputerSystem.Reset action`,
        { permanent: true },
      );
    }
    let allowed = stringsOf(action["ResetType@Redfish.AllowableValues"]);
    const info = action["@Redfish.ActionInfo"];
    if (allowed === undefined && typeof info === "string") {
      const parameters = (await context.session.request("GET", info)).Parameters;
      const resetType = Array.isArray(parameters)
        ? parameters.map(recordOf).find((p) => p.Name === "ResetType")
        : undefined;
      allowed = stringsOf(resetType?.AllowableValues);
    }
    return { target, allowed };
  }

  async function setPower(
    call: ProviderCall,
    target: BmcTarget,
    want: "On" | "Off",
  ): Promise<void> {
    await withSystem(call, target, async (context) => {
      const state = powerStateOf(await context.session.request("GET", context.systemPath));
      if (state === want) {
        call.log(`Redfish: ${context.systemPath} is already ${want}`);
        return;
      }
      await reset(context, want === "On" ? "On" : "ForceOff");
      await waitForPower(call, context, want);
    });
  }

  return {
    name: "redfish",

    setBootPxe(call, target) {
      return withSystem(call, target, async ({ session, systemPath }) => {
        await session.request("PATCH", systemPath, {
          body: { Boot: { BootSourceOverrideTarget: "Pxe", BootSourceOverrideEnabled: "Once" } },
        });
        const boot = recordOf((await session.request("GET", systemPath)).Boot);
        const readBack = `${boot.BootSourceOverrideTarget}/${boot.BootSourceOverrideEnabled}`;
        if (readBack === "Pxe/Continuous") {
          // Several BMCs (and sushy-tools) report a Once override as Continuous; the next boot
          // consumes it all the same.
          call.log("Redfish: the BMC reads the Once override back as Continuous (tolerated)");
        } else if (readBack !== "Pxe/Once") {
          throw new ProviderError(
            `Redfish PATCH ${systemPath} did not take: the boot override reads ${readBack}, ` +
              "expected Pxe/Once",
          );
        }
      });
    },

    restart(call, target, { force }) {
      return withSystem(call, target, async (context) => {
        const system = await context.session.request("GET", context.systemPath);
        if (powerStateOf(system) === "Off") {
          call.log("Redfish: the machine is off; powering it on instead of restarting");
          await reset(context, "On");
          return await waitForPower(call, context, "On");
        }
        const { allowed } = await resetAction(context);
        const offered = (type: string) => allowed === undefined || allowed.includes(type);
        const preferred = force
          ? ["ForceRestart", "PowerCycle"]
          : ["GracefulRestart", "ForceRestart", "PowerCycle"];
        const type = preferred.find(offered);
        if (type !== undefined) {
          if (type !== preferred[0]) {
            call.log(
              `Redfish: ${preferred[0]} is not offered (${allowed?.join(", ")}); using ${type}`,
            );
          }
          await reset(context, type);
          return await waitForPower(call, context, "On");
        }
        if (!offered("ForceOff") || !offered("On")) {
          throw new ProviderError(
            `Cannot restart Redfish system ${context.systemPath}: it offers none of ` +
              `${[...preferred, "ForceOff+On"].join(", ")} (allowed: ${allowed?.join(", ")})`,
            { permanent: true },
          );
        }
        call.log(
          `Redfish: no restart type is offered (${allowed?.join(", ")}); using ForceOff then On`,
        );
        await reset(context, "ForceOff");
        await waitForPower(call, context, "Off");
        await reset(context, "On");
        await waitForPower(call, context, "On");
      });
    },

    powerOn: (call, target) => setPower(call, target, "On"),
    powerOff: (call, target) => setPower(call, target, "Off"),

    powerState(call, target) {
      return withSystem(call, target, async ({ session, systemPath }): Promise<PowerState> => {
        const state = powerStateOf(await session.request("GET", systemPath));
        // Power is on while it is going off, and not yet on while it is coming on.
        return state === "On" || state === "PoweringOff" ? "on" : "off";
      });
    },

    insertMedia(call, target, { image }) {
      return withSystem(call, target, async (context) => {
        const media = await virtualCd(context);
        if (media.json.Inserted === true) {
          call.log(`Redfish: ejecting ${media.json.Image} first`);
          await context.session.request("POST", media.eject, { body: {} });
        }
        await context.session.request("POST", media.insert, {
          body: { Image: image, Inserted: true, WriteProtected: true },
        });
      });
    },

    ejectMedia(call, target) {
      return withSystem(call, target, async (context) => {
        const media = await virtualCd(context);
        if (media.json.Inserted !== true) {
          call.log(`Redfish: no media inserted in ${media.path}`);
          return;
        }
        await context.session.request("POST", media.eject, { body: {} });
      });
    },
  };
}

/** Finds the virtual CD: under the system, else under the manager that manages it. */
async function virtualCd(
  context: Context,
): Promise<{ path: string; json: RedfishJson; insert: string; eject: string }> {
  const { session, systemPath } = context;
  const system = await session.request("GET", systemPath);
  let collection = linkOf(system.VirtualMedia);
  if (collection === undefined) {
    const managers = recordOf(system.Links).ManagedBy;
    const manager = Array.isArray(managers) ? linkOf(managers[0]) : undefined;
    if (manager !== undefined) {
      collection = linkOf((await session.request("GET", manager)).VirtualMedia);
    }
  }
  if (collection === undefined) {
    throw new ProviderError(
      `Cannot find virtual media for Redfish system ${systemPath}: neither it nor its manager ` +
        "links a VirtualMedia collection",
      { permanent: true },
    );
  }
  const members = (await session.request("GET", collection)).Members;
  const paths = Array.isArray(members) ? members.map(linkOf).filter((p) => p !== undefined) : [];
  for (const path of paths) {
    const json = await session.request("GET", path);
    const types = stringsOf(json.MediaTypes) ?? [];
    if (!types.includes("CD") && !types.includes("DVD")) continue;
    const actions = recordOf(json.Actions);
    const insert = recordOf(actions["#VirtualMedia.InsertMedia"]).target;
    const eject = recordOf(actions["#VirtualMedia.EjectMedia"]).target;
    if (typeof insert === "string" && typeof eject === "string") {
      return { path, json, insert, eject };
    }
  }
  throw new ProviderError(
    `Cannot find a virtual CD with insert and eject actions in ${collection} (members: ` +
      `${paths.join(", ") || "none"})`,
    { permanent: true },
  );
}

function powerStateOf(system: RedfishJson): string {
  const state = system.PowerState;
  if (typeof state !== "string") {
    throw new ProviderError(`Redfish system ${String(system["@odata.id"])} reports no PowerState`);
  }
  return state;
}

function stringsOf(value: unknown): readonly string[] | undefined {
  return Array.isArray(value) ? value.filter((v) => typeof v === "string") : undefined;
}
