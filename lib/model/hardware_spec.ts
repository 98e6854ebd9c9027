/**
 * The rules of a machine's hardware fields, in one place for both sides that need them: the
 * store refuses a registration that breaks them (through `lib/store/limits.ts`), and the routing
 * provider (`lib/provider/hardware.ts`) parses the same fields into a BMC target. `spec.provider`
 * names the driver (`fake`, also when empty; `redfish`; `ipmi`), `spec.bmc_address` is where the
 * driver's BMC answers, `spec.ssh_endpoint` is where the machine answers SSH.
 *
 * @module
 */

import { InvalidArgumentError } from "./errors.ts";
import type { MachineSpec } from "../gen/baremetal/v1/baremetal_pb.ts";

/** The drivers `spec.provider` may name; an empty provider is `fake`. */
export const PROVIDER_NAMES: readonly DriverName[] = Object.freeze(["fake", "redfish", "ipmi"]);

/**
 * Provider names the original demo's clients send (its proto's examples): still accepted, and
 * simulated like `fake`, so scripts written for the original register unchanged.
 */
export const SIMULATED_PROVIDER_NAMES: readonly string[] = Object.freeze([
  "boulder",
  "nebius",
  "tensorwave",
]);

/** A driver name: `fake` is the simulated provider, the others drive a BMC. */
export type DriverName = "fake" | "redfish" | "ipmi";

/** A driver that talks to a real BMC. */
export type BmcDriverName = Exclude<DriverName, "fake">;

/** IPMI's port when `spec.bmc_address` names none (RMCP+). */
export const IPMI_DEFAULT_PORT = 623;

/** A parsed `spec.bmc_address`. */
export interface BmcEndpoint {
  /** Host name or address (an IPv6 address in brackets), lower case. */
  readonly host: string;
  /** TCP (Redfish) or UDP (IPMI) port. */
  readonly port: number;
  /** Identity of the BMC, `host:port`: machines whose addresses share it share one BMC. */
  readonly key: string;
  /** Redfish: the service root URL, e.g. `https://10.0.0.5/redfish/v1`. */
  readonly serviceRoot?: string;
  /** Redfish: the system's id when the address ends in `/redfish/v1/Systems/<id>`. */
  readonly systemId?: string;
}

/** A parsed `host:port`. */
export interface HostPort {
  /** Host name or address (an IPv6 address in brackets). */
  readonly host: string;
  /** Port, 1 to 65535. */
  readonly port: number;
}

// A DNS name or IPv4 address, or an IPv6 address in brackets, then an optional port.
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?$/;
const SYSTEM_PATH = /^\/redfish\/v1\/Systems\/([^/?#]+)\/?$/;

/**
 * The driver a spec names: `fake` when `spec.provider` is empty, one of the original demo's
 * names ({@linkcode SIMULATED_PROVIDER_NAMES}) or the spec is missing.
 *
 * @param spec The machine's spec.
 * @returns The driver name (checked by {@linkcode checkHardwareSpec} at registration).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSpecSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * assert.equal(driverOf(undefined), "fake");
 * assert.equal(driverOf(create(MachineSpecSchema, { provider: "boulder" })), "fake");
 * ```
 */
export function driverOf(spec: MachineSpec | undefined): string {
  const name = spec?.provider || "fake";
  return SIMULATED_PROVIDER_NAMES.includes(name) ? "fake" : name;
}

function invalid(
  field: string,
  message: string,
  { allowed, metadata }: { allowed: string; metadata: Record<string, string> },
): InvalidArgumentError {
  return new InvalidArgumentError(message, {
    reason: "INVALID_FORMAT",
    metadata: { ...metadata, field, allowed },
  });
}

function parseHostPort(text: string): { host: string; port: number | undefined } | undefined {
  const match = HOST_PORT.exec(text);
  if (!match) return undefined;
  const port = match[2] === undefined ? undefined : Number(match[2]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  return { host: match[1].toLowerCase(), port };
}

/**
 * Parses `spec.bmc_address` for a driver: Redfish takes an `http(s)://` URL, optionally ending in
 * `/redfish/v1/Systems/<id>`; IPMI takes `host[:port]` (port 623 when absent).
 *
 * @param driver The machine's driver.
 * @param address The address as registered.
 * @param metadata Ids for the error (e.g. the machine).
 * @returns The endpoint.
 * @throws {InvalidArgumentError} `INVALID_FORMAT` (field `spec.bmc_address`) naming the form
 * the driver takes, or `MISSING_FIELD` when the address is empty.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const bmc = parseBmcAddress("redfish", "https://10.0.0.5/redfish/v1/Systems/1");
 * assert.equal(bmc.key, "10.0.0.5:443");
 * assert.equal(bmc.systemId, "1");
 * assert.equal(parseBmcAddress("ipmi", "10.0.0.6").key, "10.0.0.6:623");
 * ```
 */
export function parseBmcAddress(
  driver: BmcDriverName,
  address: string,
  metadata: Record<string, string> = {},
): BmcEndpoint {
  const field = "spec.bmc_address";
  if (address === "") {
    throw new InvalidArgumentError(
      `spec.bmc_address is required for provider ${driver}: send where the machine's BMC answers (${
        driver === "redfish" ? "https://host[:port][/redfish/v1/Systems/<id>]" : "host[:port]"
      })`,
      { reason: "MISSING_FIELD", metadata: { ...metadata, field } },
    );
  }
  if (driver === "ipmi") {
    const parsed = parseHostPort(address);
    if (!parsed) {
      throw invalid(
        field,
        `spec.bmc_address ${
          JSON.stringify(address)
        } is not an IPMI address: send host[:port], e.g. 10.0.0.5 or bmc-7.lab:623 (port 1-65535, default ${IPMI_DEFAULT_PORT})`,
        { allowed: "host[:port]", metadata },
      );
    }
    const port = parsed.port ?? IPMI_DEFAULT_PORT;
    return { host: parsed.host, port, key: `${parsed.host}:${port}` };
  }
  const form = "http(s)://host[:port], optionally ending in /redfish/v1/Systems/<id>";
  let url: URL | undefined;
  try {
    url = new URL(address);
  } catch {
    url = undefined;
  }
  const path = url?.pathname ?? "";
  const system = SYSTEM_PATH.exec(path);
  if (
    !url || (url.protocol !== "https:" && url.protocol !== "http:") || url.hostname === "" ||
    url.search !== "" || url.hash !== "" || (path !== "/" && path !== "" && !system)
  ) {
    throw invalid(
      field,
      `spec.bmc_address ${
        JSON.stringify(address)
      } is not a Redfish address: send ${form}, e.g. https://10.0.0.5 or https://bmc-7.lab/redfish/v1/Systems/1`,
      { allowed: form, metadata },
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw invalid(
      field,
      `spec.bmc_address must not carry a user or password: put them in the --bmc-credentials file and send ${form}`,
      { allowed: form, metadata },
    );
  }
  const port = url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port);
  return {
    host: url.hostname,
    port,
    key: `${url.hostname}:${port}`,
    serviceRoot: `${url.origin}/redfish/v1`,
    systemId: system ? decodeURIComponent(system[1]) : undefined,
  };
}

/**
 * Parses `spec.ssh_endpoint`: `host[:port]`, port 22 when absent (as `ssh` does).
 *
 * @param endpoint The endpoint as registered.
 * @param metadata Ids for the error.
 * @returns Host and port.
 * @throws {InvalidArgumentError} `INVALID_FORMAT` with field `spec.ssh_endpoint`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseSshEndpoint("10.0.0.11:22"), { host: "10.0.0.11", port: 22 });
 * ```
 */
export function parseSshEndpoint(
  endpoint: string,
  metadata: Record<string, string> = {},
): HostPort {
  const parsed = parseHostPort(endpoint);
  if (!parsed) {
    throw invalid(
      "spec.ssh_endpoint",
      `spec.ssh_endpoint ${
        JSON.stringify(endpoint)
      } is not host[:port]: send where the machine answers SSH, e.g. 10.0.0.11:22`,
      { allowed: "host[:port]", metadata },
    );
  }
  return { host: parsed.host, port: parsed.port ?? 22 };
}

/**
 * Checks a spec's hardware fields: `provider` names a known driver, `bmc_address` has the form
 * that driver takes (a `fake` machine's is free text: nothing reads it), `ssh_endpoint` (when
 * set) is `host:port`.
 *
 * @param spec The spec sent.
 * @param metadata Ids for the error (e.g. the machine).
 * @throws {InvalidArgumentError} `INVALID_FORMAT` or `MISSING_FIELD` naming the field.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSpecSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * checkHardwareSpec(create(MachineSpecSchema, { provider: "ipmi", bmcAddress: "10.0.0.5" }));
 * ```
 */
export function checkHardwareSpec(spec: MachineSpec, metadata: Record<string, string> = {}): void {
  const driver = driverOf(spec);
  if (!(PROVIDER_NAMES as readonly string[]).includes(driver)) {
    throw invalid(
      "spec.provider",
      `spec.provider ${JSON.stringify(driver)} is not a driver: use ${
        PROVIDER_NAMES.join(", ")
      } (fake, also when empty, is the simulated hardware; the original demo's ${
        SIMULATED_PROVIDER_NAMES.join(", ")
      } are simulated too)`,
      { allowed: PROVIDER_NAMES.join("|"), metadata },
    );
  }
  if (driver !== "fake") parseBmcAddress(driver as BmcDriverName, spec.bmcAddress, metadata);
  if (spec.sshEndpoint !== "") parseSshEndpoint(spec.sshEndpoint, metadata);
}
