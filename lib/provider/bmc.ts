/**
 * The contract between real hardware drivers (Redfish, IPMI) and the provider that routes a
 * machine's verbs to them: what a driver is given (the BMC's address and credential, a gate that
 * bounds calls in flight per BMC) and the power and boot actions it performs. A driver knows
 * nothing of plans or operations; the routing provider (`hardware.ts`) maps the plan's verbs
 * (`setNetboot`, `reboot`, `repave`) onto these actions.
 *
 * @module
 */

import type { ProviderCall } from "./mod.ts";

/** What `--bmc-credentials` gives a driver for one BMC. Never logged, stored or sent over the API. */
export interface BmcCredential {
  /** BMC user name. */
  readonly username: string;
  /** BMC password. */
  readonly password: string;
  /** PEM CA file that signs the Redfish BMC's certificate. */
  readonly caFile?: string;
  /** Accept any Redfish TLS certificate (lab BMCs with self-signed certificates). */
  readonly insecure?: boolean;
  /** User for the machine's SSH endpoint. */
  readonly sshUser?: string;
  /** Private key file for the machine's SSH endpoint. */
  readonly sshKeyFile?: string;
  /**
   * IPMI: this BMC refuses `chassis bootdev pxe` and its machine network-boots by itself
   * (`allow_bootdev_refused: true`; `ipmi_sim` driving a QEMU VM started with `-boot n`).
   */
  readonly allowBootDeviceRefused?: boolean;
}

/**
 * Bounds the calls in flight to one BMC (`--bmc-concurrency`). A driver runs every request or
 * `ipmitool` process through it, keyed by {@linkcode BmcTarget.key}; waiting for a slot ends
 * with `signal`'s reason when the signal aborts.
 */
export interface BmcGate {
  /** Runs `action` once fewer than the limit of calls to `key` are in flight. */
  run<T>(key: string, signal: AbortSignal, action: () => Promise<T>): Promise<T>;
}

/** The BMC one machine's verbs are sent to. */
export interface BmcTarget {
  /** Machine the BMC controls, for log lines. */
  readonly machineId: string;
  /** `spec.bmc_address` as registered (Redfish: a URL; IPMI: `host[:port]`). */
  readonly address: string;
  /** Identity of the BMC for the gate: one BMC may serve several machines (Redfish systems). */
  readonly key: string;
  /** Credential matched from `--bmc-credentials`. */
  readonly credential: BmcCredential;
}

/** Power state as the BMC reports it. */
export type PowerState = "on" | "off";

/** Options of {@linkcode BmcDriver.restart}. */
export interface RestartOptions {
  /** Hard power cycle instead of a graceful restart. */
  readonly force: boolean;
}

/**
 * The actions of one BMC protocol. Every method logs what it sends and what the BMC answered
 * (never a secret) through `call.log`, rejects with `call.signal.reason` once the signal aborts,
 * and rejects with an `Error` whose message carries the BMC's answer on failure.
 */
export interface BmcDriver {
  /** Protocol name as in `spec.provider`, e.g. `redfish`. */
  readonly name: string;
  /** Sets the next boot (once) to the network (PXE). */
  setBootPxe(call: ProviderCall, target: BmcTarget): Promise<void>;
  /** Restarts the machine and resolves once the BMC reports power on. */
  restart(call: ProviderCall, target: BmcTarget, options: RestartOptions): Promise<void>;
  /** Powers the machine on and resolves once the BMC reports it on. */
  powerOn(call: ProviderCall, target: BmcTarget): Promise<void>;
  /** Powers the machine off (hard) and resolves once the BMC reports it off. */
  powerOff(call: ProviderCall, target: BmcTarget): Promise<void>;
  /** Reads the power state. */
  powerState(call: ProviderCall, target: BmcTarget): Promise<PowerState>;
}
