/**
 * The hardware provider interface: the eight verbs of the seed's Provider, which the plans call
 * to act on real (or simulated) machines. A provider knows nothing of operations' phases,
 * the store or gRPC; it does one hardware action, logs what it does, and stops promptly when the
 * call's `signal` aborts (user cancel, step timeout or shutdown), rejecting with the signal's
 * reason.
 *
 * The folder owns the Provider contract (this module), the fake provider (`fake.ts`: the verbs'
 * scripts; `fake_timing.ts`: its timing profiles; `fake_faults.ts`: fault injection and hooks),
 * the server's `--fault` flag (`fault_flag.ts`: wraps any provider so a plan step fails on stage),
 * and real hardware: the routing provider (`hardware.ts`: each machine's verbs by
 * `spec.provider`), the BMC driver contract (`bmc.ts`), the `--bmc-credentials` file
 * (`credentials.ts`), the netboot broker a real repave waits on (`netboot.ts`), and the drivers
 * (Redfish, IPMI, SSH). May import: `lib/model/`, `lib/gen/`, npm
 * packages. Never `lib/store/` or `lib/engine/` (checked by `test/architecture_test.ts`).
 *
 * @module
 */

import type { Machine, TargetClusterRef } from "../gen/baremetal/v1/baremetal_pb.ts";

/** Which output stream a log line belongs to. */
export type LogStream = "stdout" | "stderr";

/** Context of one provider call. */
export interface ProviderCall {
  /** Operation on whose behalf the call runs; used to tag log lines. */
  readonly operationId: string;
  /** Fires on user cancel, step timeout or shutdown; the call must then reject with its reason. */
  readonly signal: AbortSignal;
  /** Appends one line (without trailing newline) to the operation's log. */
  log(line: string, stream?: LogStream): void;
}

/** Credentials for a node to join a Kubernetes cluster. */
export interface JoinMaterial {
  /** API server URL. */
  endpoint: string;
  /** Bootstrap token, `<id>.<secret>`. */
  token: string;
  /** Hash of the cluster CA, `sha256:<hex>`. */
  caHash: string;
  /** When the token expires. */
  expiresAt: Date;
  /** Cluster the material is for. */
  clusterId: string;
  /** PEM certificate, when the provider issues one. */
  certificate: string;
}

/** Options of {@linkcode Provider.reboot}. */
export interface RebootOptions {
  /** Hard power-cycle instead of a graceful reboot. */
  force: boolean;
}

/** Options of {@linkcode Provider.repave}. */
export interface RepaveOptions {
  /** Image to write, e.g. `ubuntu-2204-lab`. */
  imageRef: string;
  /** Cloud-init configuration reference, e.g. `cloud-init/worker-node`. */
  cloudInitRef: string;
}

/** Options of {@linkcode Provider.executeSshCommand}. */
export interface SshCommandOptions {
  /** Script to run, e.g. `drain_node.sh`. */
  scriptRef: string;
  /** Arguments passed to the script. */
  args?: Record<string, string>;
}

/** The hardware verbs a plan step can call. Every method rejects with `call.signal.reason` once it aborts. */
export interface Provider {
  /** Points the machine's next boot at a netboot profile. */
  setNetboot(call: ProviderCall, machine: Machine, profile: string): Promise<void>;
  /** Reboots the machine (gracefully unless `options.force`). */
  reboot(call: ProviderCall, machine: Machine, options: RebootOptions): Promise<void>;
  /** Writes an image to the machine's disk. */
  repave(call: ProviderCall, machine: Machine, options: RepaveOptions): Promise<void>;
  /** Issues join credentials for a cluster. */
  mintJoinMaterial(call: ProviderCall, cluster: TargetClusterRef): Promise<JoinMaterial>;
  /** Joins the machine to the cluster the material is for. */
  joinNode(call: ProviderCall, machine: Machine, material: JoinMaterial): Promise<void>;
  /** Checks the machine is a Ready node of the cluster. */
  verifyInCluster(call: ProviderCall, machine: Machine, cluster: TargetClusterRef): Promise<void>;
  /** Starts a return-merchandise process for the machine. */
  rma(call: ProviderCall, machine: Machine, reason: string): Promise<void>;
  /** Runs a script on the machine over SSH. */
  executeSshCommand(
    call: ProviderCall,
    machine: Machine,
    options: SshCommandOptions,
  ): Promise<void>;
}

/** Names of the provider's verbs, e.g. for fault injection. */
export type ProviderVerb = keyof Provider;

/** Options of {@linkcode ProviderError}. */
export interface ProviderErrorOptions extends ErrorOptions {
  /**
   * Retrying cannot help (refused credential, unknown system, rejected request): the step fails
   * at once instead of spending its retries. Transient failures (5xx, timeouts, refused
   * connections) leave it false.
   * @default false
   */
  permanent?: boolean;
}

/**
 * A hardware failure a provider reports, saying whether the step may retry it.
 *
 * @example
 * ```ts
 * const error = new ProviderError("BMC refused the credential", { permanent: true });
 * error.permanent; // true
 * ```
 */
export class ProviderError extends Error {
  /** Retrying cannot help: the step fails without its remaining attempts. */
  readonly permanent: boolean;

  /**
   * @param message What failed, with the device's answer (never a secret).
   * @param options Whether retrying cannot help, and the cause.
   */
  constructor(message: string, options: ProviderErrorOptions = {}) {
    super(message, options);
    this.name = new.target.name;
    this.permanent = options.permanent ?? false;
  }
}
