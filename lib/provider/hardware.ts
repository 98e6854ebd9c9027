/**
 * The provider the server runs: it routes each machine's verbs by `spec.provider`. A `fake`
 * machine (also an empty provider) gets the simulated provider, as before. A `redfish` or `ipmi`
 * machine gets the BMC driver of that name: `setNetboot` sets the next boot to PXE, `reboot`
 * restarts it, `repave` waits for its network boot to report (`netboot.ts`); cluster join,
 * verification and RMA stay simulated and say so in the operation log, and `executeSshCommand`
 * runs over SSH when the machine has an `ssh_endpoint` and the server an SSH runner (else it is
 * simulated, and says so).
 *
 * @module
 */

import type { Machine } from "../gen/baremetal/v1/baremetal_pb.ts";
import {
  type BmcDriverName,
  driverOf,
  parseBmcAddress,
  parseSshEndpoint,
} from "../model/hardware_spec.ts";
import type { BmcCredential, BmcDriver, BmcTarget } from "./bmc.ts";
import type { CredentialBook } from "./credentials.ts";
import { type Provider, type ProviderCall, ProviderError } from "./mod.ts";
import type { NetbootBroker } from "./netboot.ts";
import type { SshRunner } from "./ssh.ts";

/** How long the power-off after a canceled repave may take. */
export const CANCEL_POWER_OFF_MS = 60_000;

/** Whether `signal` was aborted by a user's cancel (the executor's `cancelCause`). */
function canceledByUser(signal: AbortSignal): boolean {
  const reason: unknown = signal.reason;
  return signal.aborted && typeof reason === "object" && reason !== null &&
    (reason as { cancelCause?: unknown }).cancelCause === "user";
}

/** Options of {@linkcode createHardwareProvider}. */
export interface HardwareProviderOptions {
  /** The provider of `fake` machines, and of the verbs that stay simulated. */
  simulated: Provider;
  /** The BMC drivers, by their `name` (`redfish`, `ipmi`). */
  drivers?: readonly BmcDriver[];
  /** The `--bmc-credentials` file; without it a real machine's step fails naming the flag. */
  credentials?: CredentialBook;
  /** The netboot broker a real machine's repave waits on. */
  netboot: NetbootBroker;
  /** Runs `executeSshCommand` on real machines with an `ssh_endpoint`. */
  ssh?: SshRunner;
}

/**
 * Creates the routing provider.
 *
 * @param options The simulated provider, the drivers, credentials, netboot broker and SSH runner.
 * @returns A provider whose verbs follow each machine's `spec.provider`.
 * @throws {Error} Two drivers have the same name, or a driver's name is not a BMC driver name.
 *
 * @example A redfish machine needs a redfish driver; a fake one is simulated
 * ```ts
 * import assert from "node:assert/strict";
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * import { createFakeProvider } from "./fake.ts";
 * import { createNetbootBroker } from "./netboot.ts";
 *
 * const provider = createHardwareProvider({
 *   simulated: createFakeProvider({ timing: "zero" }),
 *   netboot: createNetbootBroker({ baseUrl: "http://10.0.2.100:8080" }),
 * });
 * const call = { operationId: "op-1", signal: new AbortController().signal, log() {} };
 * const real = create(MachineSchema, {
 *   machineId: "m-1",
 *   spec: { provider: "redfish", bmcAddress: "https://10.0.0.5" },
 * });
 * await assert.rejects(provider.reboot(call, real, { force: false }), /no redfish driver/);
 * await provider.reboot(call, create(MachineSchema, { machineId: "m-2" }), { force: false });
 * ```
 */
export function createHardwareProvider(options: HardwareProviderOptions): Provider {
  const { simulated, credentials, netboot, ssh } = options;
  const drivers = new Map<string, BmcDriver>();
  for (const driver of options.drivers ?? []) {
    if (driver.name !== "redfish" && driver.name !== "ipmi") {
      throw new Error(`driver "${driver.name}" is not a BMC driver name (redfish, ipmi)`);
    }
    if (drivers.has(driver.name)) throw new Error(`two drivers are named "${driver.name}"`);
    drivers.set(driver.name, driver);
  }

  function real(machine: Machine): BmcDriverName | undefined {
    const name = driverOf(machine.spec);
    return name === "fake" ? undefined : name as BmcDriverName;
  }

  function credentialOf(
    machine: Machine,
    { address, host }: { address: string; host: string },
  ): BmcCredential {
    if (!credentials) {
      throw new ProviderError(
        `machine ${machine.machineId} is driven by ${
          driverOf(machine.spec)
        } but the server was started without --bmc-credentials: start it with a credentials file that has an entry for BMC ${address}`,
        // Retrying cannot help: the server needs another configuration.
        { permanent: true },
      );
    }
    const found = credentials.find({ address, host, labels: machine.labels });
    if (!found) {
      throw new ProviderError(
        `no credential for machine ${machine.machineId} (BMC ${address}) in --bmc-credentials ${credentials.file}: add an entry whose bmc is "${address}" or "${host}", or whose selector matches the machine's labels`,
        // Retrying cannot help: the server needs another configuration.
        { permanent: true },
      );
    }
    return found;
  }

  /** The driver and target of a real machine; throws a clear step error when one is missing. */
  function bmcOf(machine: Machine, name: BmcDriverName): { driver: BmcDriver; target: BmcTarget } {
    const driver = drivers.get(name);
    if (!driver) {
      throw new ProviderError(
        `machine ${machine.machineId} has provider ${name}, but this server has no ${name} driver`,
        // Retrying cannot help: the server needs another configuration.
        { permanent: true },
      );
    }
    const address = machine.spec?.bmcAddress ?? "";
    const endpoint = parseBmcAddress(name, address, { machineId: machine.machineId });
    return {
      driver,
      target: {
        machineId: machine.machineId,
        address,
        key: endpoint.key,
        credential: credentialOf(machine, { address, host: endpoint.host }),
      },
    };
  }

  /**
   * A reimage canceled while the machine network-boots leaves it powered off (as Ironic does
   * when a deploy is aborted), not half-way into an installer; in the background, since the step
   * ends at once, bounded by {@linkcode CANCEL_POWER_OFF_MS}. The operation's log has ended by
   * then, so its lines are kept only if it has not (the repave said beforehand what a cancel
   * does).
   */
  function powerOffAfterCancel(call: ProviderCall, machine: Machine, name: BmcDriverName): void {
    const bound = new AbortController();
    const timer = setTimeout(
      () => bound.abort(new Error(`the power-off took longer than ${CANCEL_POWER_OFF_MS} ms`)),
      CANCEL_POWER_OFF_MS,
    );
    const offCall: ProviderCall = { ...call, signal: bound.signal };
    (async () => {
      const { driver, target } = bmcOf(machine, name);
      await driver.powerOff(offCall, target);
      call.log("[repave] Machine is powered off");
    })().catch((error) => {
      call.log(
        `[repave] Could not power the machine off after the cancel: ${
          error instanceof Error ? error.message : String(error)
        }`,
        "stderr",
      );
    }).finally(() => clearTimeout(timer));
  }

  function simulatedNote(call: ProviderCall, name: BmcDriverName, what: string): void {
    call.log(`[simulated] ${what} is simulated: no real action for this ${name} machine`);
  }

  return {
    async setNetboot(call, machine, profile) {
      const name = real(machine);
      if (!name) return await simulated.setNetboot(call, machine, profile);
      const { driver, target } = bmcOf(machine, name);
      call.log(
        `[netboot] ${name}: setting the next boot to PXE through ${target.address} (profile ${profile}: this server's iPXE script)`,
      );
      await driver.setBootPxe(call, target);
      call.log("[netboot] Next boot set to PXE");
    },

    async reboot(call, machine, rebootOptions) {
      const name = real(machine);
      if (!name) return await simulated.reboot(call, machine, rebootOptions);
      const { driver, target } = bmcOf(machine, name);
      const kind = rebootOptions.force ? "forced" : "graceful";
      call.log(`[reboot] ${name}: ${kind} restart through ${target.address}`);
      await driver.restart(call, target, { force: rebootOptions.force });
      call.log("[reboot] Machine is powered on");
    },

    async repave(call, machine, repaveOptions) {
      const name = real(machine);
      if (!name) return await simulated.repave(call, machine, repaveOptions);
      call.log(
        `[repave] Image ${repaveOptions.imageRef}, cloud-init ${repaveOptions.cloudInitRef}`,
      );
      // Said now: a cancel ends the operation's log before the power-off runs.
      call.log("[repave] A cancel while the machine network-boots powers it off");
      const onAbort = (): void => {
        if (canceledByUser(call.signal)) powerOffAfterCancel(call, machine, name);
      };
      call.signal.addEventListener("abort", onAbort, { once: true });
      try {
        await netboot.awaitReport(call, machine, repaveOptions);
      } finally {
        call.signal.removeEventListener("abort", onAbort);
      }
    },

    // The cluster is not machine-specific: the join below says whether it is simulated.
    mintJoinMaterial: (call, cluster) => simulated.mintJoinMaterial(call, cluster),

    async joinNode(call, machine, material) {
      const name = real(machine);
      if (name) simulatedNote(call, name, "Cluster join (join material and kubeadm join)");
      await simulated.joinNode(call, machine, material);
    },

    async verifyInCluster(call, machine, cluster) {
      const name = real(machine);
      if (name) simulatedNote(call, name, "Cluster verification");
      await simulated.verifyInCluster(call, machine, cluster);
    },

    async rma(call, machine, reason) {
      const name = real(machine);
      if (name) simulatedNote(call, name, "The RMA");
      await simulated.rma(call, machine, reason);
    },

    async executeSshCommand(call, machine, sshOptions) {
      const name = real(machine);
      const endpoint = machine.spec?.sshEndpoint ?? "";
      if (name && endpoint !== "" && ssh) {
        const { host, port } = parseSshEndpoint(endpoint, { machineId: machine.machineId });
        const address = machine.spec?.bmcAddress ?? "";
        const bmcHost = address === "" ? "" : parseBmcAddress(name, address).host;
        const credential = credentialOf(machine, { address, host: bmcHost });
        if (credential.sshUser === undefined || credential.sshKeyFile === undefined) {
          throw new ProviderError(
            `machine ${machine.machineId} has an ssh_endpoint, but its entry in --bmc-credentials ${
              credentials?.file ?? ""
            } has no ${
              credential.sshUser === undefined ? "ssh_user" : "ssh_key_file"
            }: add ssh_user and ssh_key_file to it`,
            { permanent: true },
          );
        }
        return await ssh.run(call, {
          machineId: machine.machineId,
          endpoint: `${host}:${port}`,
          user: credential.sshUser,
          keyFile: credential.sshKeyFile,
        }, sshOptions);
      }
      if (name) {
        simulatedNote(
          call,
          name,
          endpoint === ""
            ? "The SSH command (the machine has no spec.ssh_endpoint)"
            : "The SSH command (this server has no SSH runner)",
        );
      }
      await simulated.executeSshCommand(call, machine, sshOptions);
    },
  };
}
