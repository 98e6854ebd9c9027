/**
 * `deno task lab`: a hardware lab on loopback. Starts N machines' BMCs (half Redfish systems on
 * one Redfish mock, half `ipmi_sim` BMCs, optionally each with a QEMU VM behind it), writes a
 * credentials file for them (mode 0600), starts a bmdemo server with `--http-port` (or targets
 * one), registers the machines `machine-1..N` (odd: redfish, even: ipmi; MACs and labels set),
 * and prints how to run the tour and the CLI against them. Ctrl+C (or SIGTERM) stops everything
 * it started (exit 130).
 *
 * Without `--vm`, a machine that "network-boots" (a Redfish system reset with a Pxe override, an
 * `ipmi_sim` power-up after `chassis bootdev pxe`) runs the lab's stand-in
 * (`lab/netboot_stand_in.ts`): it fetches the server's iPXE script for its MAC and calls back
 * as the script says. No image is written; the report says it came from the stand-in. With
 * `--vm`, the IPMI machines are QEMU VMs (software emulation) whose real iPXE does it.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  MachineService,
  MachineStatus_Phase as MachinePhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { connectClient } from "../lib/client/mod.ts";
import { bootLoaderScript } from "../lib/provider/netboot.ts";
import { loadCredentials } from "../lib/provider/credentials.ts";
import { freePort, type IpmiSim, startIpmiSim } from "./lab/ipmi_sim.ts";
import { GUEST_HTTP_HOST } from "./lab/qemu.ts";
import { type RedfishMock, startRedfishMock } from "./lab/redfish_mock.ts";
import { netbootStandIn } from "./lab/netboot_stand_in.ts";
import { type ServerProcess, spawnServer } from "./server_process.ts";
import { parseScriptArgs, usageError } from "./cli_args.ts";

/** Most machines one lab runs (each IPMI machine is an `ipmi_sim` process, maybe a VM). */
export const MAX_LAB_MACHINES = 64;

/** Options of {@linkcode startLab}. */
export interface LabOptions {
  /** Machines, `machine-1..N`. @default 4 */
  machines?: number;
  /** Run a QEMU VM behind each IPMI BMC. */
  vm?: boolean;
  /** Target this server (`host:port`) instead of starting one. */
  server?: string;
  /**
   * The server's `--http-port`: required with `server`; without it, the port the lab's server
   * serves HTTP on (default: a free one).
   */
  httpPort?: number;
  /** Where to write the credentials file. @default a file in the lab's temporary directory */
  credentialsFile?: string;
  /** Make non-VM machines network-boot through the stand-in. @default true */
  standIn?: boolean;
  /** More flags for the lab's server, e.g. `["--timing", "zero"]`. */
  serverArgs?: string[];
  /** Where progress lines go. @default console.log */
  log?: (line: string) => void;
}

/** One machine of the lab. */
export interface LabMachine {
  /** `machine-<n>`. */
  readonly machineId: string;
  /** `redfish` or `ipmi`. */
  readonly provider: "redfish" | "ipmi";
  /** `spec.bmc_address`. */
  readonly bmcAddress: string;
  /** Its one MAC. */
  readonly mac: string;
  /** Whether a QEMU VM is behind its BMC. */
  readonly vm: boolean;
}

/** A running lab. */
export interface Lab extends AsyncDisposable {
  /** The server's gRPC address, `host:port`. */
  readonly server: string;
  /** The server's HTTP surface as the lab reaches it. */
  readonly httpUrl: string;
  /** The credentials file the server reads. */
  readonly credentialsFile: string;
  /** The machines, registered. */
  readonly machines: readonly LabMachine[];
  /** The Redfish mock (peak requests in flight, records). */
  readonly redfish: RedfishMock;
  /** The IPMI BMCs, in machine order. */
  readonly ipmi: readonly IpmiSim[];
  /** The lab's server process, when it started one. */
  readonly serverProcess?: ServerProcess;
  /** The server flags the lab's machines need (printed when targeting a server). */
  readonly serverFlags: readonly string[];
  /** Stops everything the lab started and removes its files. */
  stop(): Promise<void>;
}

/**
 * The `ipmi_sim` BMC of an IPMI machine of the lab (to inject a fault:
 * {@linkcode IpmiSim.failPowerChanges}).
 *
 * @param lab The running lab.
 * @param machineId One of its IPMI machines, e.g. `machine-4`.
 * @returns Its BMC.
 * @throws {RangeError} The lab has no IPMI machine of that id.
 */
export function labIpmiBmc(lab: Lab, machineId: string): IpmiSim {
  const index = lab.machines.filter((m) => m.provider === "ipmi")
    .findIndex((m) => m.machineId === machineId);
  if (index === -1) {
    throw new RangeError(`The lab has no IPMI machine "${machineId}" (even numbers are IPMI)`);
  }
  return lab.ipmi[index];
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/**
 * MAC of the lab's n-th machine (1-based), in QEMU's locally administered prefix.
 *
 * @param n Machine number.
 * @returns The MAC.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(labMac(3), "52:54:00:1a:00:03");
 * ```
 */
export function labMac(n: number): string {
  return `52:54:00:1a:${hex2(n >> 8)}:${hex2(n & 255)}`;
}

/**
 * The credentials file of a lab: one entry for the VMs' BMCs, which refuse `chassis bootdev`
 * (`allow_bootdev_refused`), one for every other lab BMC, matched by the machines' labels.
 *
 * @param password The BMCs' password.
 * @returns The YAML text.
 */
export function labCredentials(password: string): string {
  return [
    "# Written by deno task lab: the lab's loopback BMCs.",
    "credentials:",
    "  - selector: { lab-bmc: ipmi-vm }",
    "    username: admin",
    `    password: ${password}`,
    "    allow_bootdev_refused: true",
    "  - selector: { lab: bmdemo }",
    "    username: admin",
    `    password: ${password}`,
    "",
  ].join("\n");
}

/** The password of a credentials file an earlier lab wrote, if `file` is one. */
async function previousPassword(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  try {
    const book = await loadCredentials(file);
    return book.find({ address: "", host: "", labels: { lab: "bmdemo" } })?.password;
  } catch {
    return undefined; // Missing or not a credentials file: the lab writes a new one.
  }
}

/**
 * Starts a lab.
 *
 * @param options Machines, VMs, the server to target.
 * @returns The running lab; stop it (or `await using`) so nothing is left running.
 * @throws {Error} A BMC, VM or the server cannot start (what started is stopped first).
 */
export async function startLab(options: LabOptions = {}): Promise<Lab> {
  const count = options.machines ?? 4;
  const log = options.log ?? ((line: string) => console.log(line));
  if (!Number.isInteger(count) || count < 1 || count > MAX_LAB_MACHINES) {
    throw new RangeError(`--machines must be 1-${MAX_LAB_MACHINES}: got ${count}`);
  }
  if (options.server !== undefined && options.httpPort === undefined) {
    throw new RangeError("--server needs --http-port: the HTTP port that server serves on");
  }
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-lab-" });
  const stopping = new AbortController();
  const cleanups: (() => Promise<unknown>)[] = [];
  const stop = async (): Promise<void> => {
    stopping.abort();
    // Newest first: the server before the BMCs it drives.
    for (const cleanup of cleanups.splice(0).reverse()) {
      await cleanup().catch((error) => log(`lab: cleanup failed: ${error}`));
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const httpPort = options.httpPort ?? freePort();
    const serverHost = options.server?.replace(/:\d+$/, "") ?? "127.0.0.1";
    const httpUrl = `http://${serverHost}:${httpPort}`;
    // A server started earlier read this file: keep its password, so the BMCs accept it.
    const password = (await previousPassword(options.credentialsFile)) ??
      Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => hex2(b)).join("");
    const standIn = options.standIn ?? true;
    const boots = new Map<string, AbortController>();
    const boot = (mac: string, detail: string): void => {
      if (!standIn) return;
      boots.get(mac)?.abort();
      const controller = new AbortController();
      boots.set(mac, controller);
      netbootStandIn({
        server: httpUrl,
        mac,
        detail,
        log: (line) => log(`lab: ${line}`),
        signal: AbortSignal.any([controller.signal, stopping.signal]),
      }).finally(() => {
        if (boots.get(mac) === controller) boots.delete(mac);
      });
    };

    const numbers = Array.from({ length: count }, (_, i) => i + 1);
    const redfishNumbers = numbers.filter((n) => n % 2 === 1);
    const systemMac = new Map(redfishNumbers.map((n, i) => [String(i + 1), labMac(n)]));
    const redfish = startRedfishMock({
      systems: redfishNumbers.length,
      password,
      powerDelayMs: 1_000,
      onBoot: (id, { source }) => {
        if (source !== "Pxe") return;
        boot(systemMac.get(id)!, `bmdemo lab stand-in for Redfish system ${id}: no image written`);
      },
    });
    cleanups.push(() => redfish.close());

    const machines: LabMachine[] = [];
    const ipmi: IpmiSim[] = [];
    for (const n of numbers) {
      const mac = labMac(n);
      if (n % 2 === 1) {
        const system = redfishNumbers.indexOf(n) + 1;
        machines.push({
          machineId: `machine-${n}`,
          provider: "redfish",
          bmcAddress: `${redfish.url}/redfish/v1/Systems/${system}`,
          mac,
          vm: false,
        });
        continue;
      }
      const bmc = await startIpmiSim({
        password,
        ...(options.vm
          ? {
            vm: {
              httpPort,
              bootPath: "/boot/ipxe?mac=${net0/mac}",
              mac,
              script: bootLoaderScript(`http://${GUEST_HTTP_HOST}:${httpPort}`),
            },
          }
          : {
            onBoot: (device: string) => {
              if (device === "pxe") {
                boot(mac, `bmdemo lab stand-in for IPMI BMC machine-${n}: no image written`);
              }
            },
          }),
      });
      cleanups.push(() => bmc.stop());
      ipmi.push(bmc);
      machines.push({
        machineId: `machine-${n}`,
        provider: "ipmi",
        bmcAddress: bmc.address,
        mac,
        vm: options.vm === true,
      });
    }
    cleanups.push(() => {
      for (const controller of boots.values()) controller.abort();
      return Promise.resolve();
    });

    const credentialsFile = options.credentialsFile ?? `${dir}/bmc-credentials.yaml`;
    await Deno.writeTextFile(credentialsFile, labCredentials(password), { mode: 0o600 });
    await Deno.chmod(credentialsFile, 0o600); // an existing file keeps its mode otherwise
    const serverFlags = [
      "--bmc-credentials",
      credentialsFile,
      "--http-port",
      String(httpPort),
      ...(options.vm ? ["--http-advertise-url", `http://${GUEST_HTTP_HOST}:${httpPort}`] : []),
    ];

    let serverProcess: ServerProcess | undefined;
    let server = options.server;
    if (server === undefined) {
      serverProcess = await spawnServer([...serverFlags, ...(options.serverArgs ?? [])], {
        denoFlags: ["--allow-run=ssh,ipmitool"],
      });
      cleanups.push(() => serverProcess!.stop("SIGTERM"));
      server = serverProcess.address;
    } else {
      log(`The server at ${server} must run with: ${serverFlags.join(" ")}`);
    }

    using client = connectClient(MachineService, server);
    for (const machine of machines) {
      const vm = machine.vm;
      await client.registerMachine({
        machine: create(MachineSchema, {
          machineId: machine.machineId,
          spec: {
            provider: machine.provider,
            bmcAddress: machine.bmcAddress,
            macAddresses: [machine.mac],
          },
          status: { phase: MachinePhase.FACTORY_READY },
          labels: {
            role: "worker",
            lab: "bmdemo",
            "lab-bmc": vm ? "ipmi-vm" : machine.provider,
          },
        }),
      }, { timeoutMs: 10_000 });
    }
    const lab: Lab = {
      server,
      httpUrl,
      credentialsFile,
      machines,
      redfish,
      ipmi,
      serverProcess,
      serverFlags,
      stop,
      [Symbol.asyncDispose]: stop,
    };
    return lab;
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * What the lab prints once it is ready: the machines, then how to run the tour and the CLI.
 *
 * @param lab The running lab.
 * @returns Lines of text.
 */
export function labSummary(lab: Lab): string {
  const rows = lab.machines.map((m) =>
    `  ${m.machineId.padEnd(11)} ${m.provider.padEnd(8)} ${m.bmcAddress.padEnd(50)} ${m.mac}${
      m.vm ? "  (QEMU VM)" : ""
    }`
  );
  return [
    `bmdemo lab: ${lab.machines.length} machines on loopback`,
    ...rows,
    `Server: ${lab.server} (HTTP ${lab.httpUrl}); credentials: ${lab.credentialsFile}`,
    lab.machines.some((m) => !m.vm)
      ? "Machines without a VM network-boot through the lab's stand-in: it fetches the iPXE script and reports back; no image is written."
      : "",
    "Try:",
    `  deno task cli --server ${lab.server} list`,
    `  deno task cli --server ${lab.server} enter-maintenance machine-1`,
    `  deno task cli --server ${lab.server} reimage machine-1 -v`,
    `  deno task cli --server ${lab.server} tour`,
    `  dashboard: ${lab.httpUrl}`,
    "Ctrl+C stops the lab.",
    "Lab ready",
  ].filter((line) => line !== "").join("\n");
}

const HELP = `usage: deno task lab [flags]

A hardware lab on loopback: N machines, odd ones Redfish systems on a Redfish mock, even ones
ipmi_sim BMCs (with --vm: each with a QEMU VM that network-boots), a credentials file, and a
bmdemo server with --http-port driving them with the real drivers. Prints how to run the tour
and the CLI against it; Ctrl+C stops everything it started (exit 130).

  --machines <n>        machines, machine-1..N (default 4; at most ${MAX_LAB_MACHINES})
  --vm                  a QEMU VM (software emulation) behind each IPMI BMC
  --server <host:port>  target this server instead of starting one; it must run with the
                        flags the lab prints (--bmc-credentials, --http-port...)
  --http-port <n>       the server's HTTP port (required with --server; else a free one)
  --credentials <file>  where to write the credentials file (default: the lab's temp dir);
                        an existing lab file keeps its password, so a server started with it
                        (--server) accepts the next lab's BMCs
  -h, --help            this help`;

async function main(): Promise<number> {
  const program = "deno task lab";
  const { values } = parseScriptArgs({
    options: {
      machines: { type: "string", default: "4" },
      vm: { type: "boolean", default: false },
      server: { type: "string" },
      "http-port": { type: "string" },
      credentials: { type: "string" },
    },
  }, { program, help: HELP });
  const machines = Number(values.machines);
  if (!/^\d+$/.test(values.machines) || machines < 1 || machines > MAX_LAB_MACHINES) {
    usageError(program, `--machines must be 1-${MAX_LAB_MACHINES}: got "${values.machines}"`);
  }
  const httpPortText = values["http-port"];
  const httpPort = httpPortText === undefined ? undefined : Number(httpPortText);
  if (httpPortText !== undefined && (!/^\d+$/.test(httpPortText) || httpPort! > 65535)) {
    usageError(program, `--http-port must be a port number: got "${httpPortText}"`);
  }
  if (values.server !== undefined && httpPort === undefined) {
    usageError(program, "--server needs --http-port (the HTTP port that server serves on)");
  }
  const interrupted = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => interrupted.resolve());
  }
  const starting = startLab({
    machines,
    vm: values.vm,
    server: values.server,
    httpPort,
    credentialsFile: values.credentials,
  });
  const first = await Promise.race([
    starting.then((lab) => ({ lab })),
    interrupted.promise.then(() => undefined),
  ]);
  if (first === undefined) {
    // Interrupted while starting: stop what started once it has.
    await starting.then((lab) => lab.stop(), () => {});
    return 130;
  }
  const { lab } = first;
  console.log(labSummary(lab));
  await interrupted.promise;
  console.log("Stopping the lab...");
  await lab.stop();
  return 130;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`deno task lab: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
