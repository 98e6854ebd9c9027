/**
 * Simulated hardware: a {@linkcode Provider} that logs what real hardware would do, waits as long
 * as it would take, and fails or hangs on demand. It reproduces the original bmdemo's fake
 * provider line for line (reference §5) and adds what tests need: a zero-delay profile, faults
 * that fail a verb N times then succeed, hangs that only end when the call's signal aborts, and
 * hooks that hold a verb open. It owns no state beyond per-verb attempt counters and knows
 * nothing of operations, the store or gRPC.
 *
 * @example Reboot a machine with no delays
 * ```ts
 * import assert from "node:assert/strict";
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * import { createFakeProvider } from "./fake.ts";
 *
 * const provider = createFakeProvider({ timing: "zero" });
 * const lines: string[] = [];
 * const call = {
 *   operationId: "op-1",
 *   signal: new AbortController().signal,
 *   log: (line: string) => lines.push(line),
 * };
 * await provider.reboot(call, create(MachineSchema, { machineId: "m-1" }), { force: false });
 * assert.equal(lines[0], "[reboot] Initiating graceful reboot");
 * ```
 *
 * @module
 */

import type { TargetClusterRef } from "../gen/baremetal/v1/baremetal_pb.ts";
import { createVerbCalls, type FaultOptions } from "./fake_faults.ts";
import { resolveTimings, type TimingProfile, type Timings } from "./fake_timing.ts";
import type { JoinMaterial, Provider, ProviderVerb } from "./mod.ts";

/** Options of {@linkcode createFakeProvider}. */
export interface FakeProviderOptions extends FaultOptions {
  /**
   * How long each verb takes: a profile name or explicit durations.
   *
   * @default {"normal"}
   */
  timing?: TimingProfile | Timings;
  /**
   * Clock for the join material's expiry.
   *
   * @default {() => new Date()}
   */
  now?: () => Date;
}

/** A {@linkcode Provider} over simulated hardware that counts the calls of each verb. */
export interface FakeProvider extends Provider {
  /**
   * How many times `verb` has been called, failed and aborted calls included.
   *
   * @param verb The verb to count.
   * @returns The number of calls so far.
   */
  attempts(verb: ProviderVerb): number;
}

/** Lifetime of a bootstrap token, as with `kubeadm token create`. */
const JOIN_TOKEN_TTL_MS = 24 * 60 * 60 * 1000;
const API_ENDPOINT = "https://k8s-api.example.com:6443";
/** Cluster the plans target when a machine names none (reference §4.2). */
const DEFAULT_CLUSTER_ID = "default-cluster";

/**
 * Creates a provider that simulates hardware: it logs the reference's lines through `call.log`,
 * waits per its timing profile and fails or hangs where `options.faults` says.
 *
 * @param options Timing profile, faults, hooks, delay and clock.
 * @returns A fresh provider whose attempt counters start at zero.
 * @throws {RangeError} When a timing is negative or not finite, the profile is unknown, or a
 * fault's `times` is not a non-negative integer.
 *
 * @example Fail the first repave, then succeed
 * ```ts
 * import assert from "node:assert/strict";
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * import { createFakeProvider } from "./fake.ts";
 *
 * const provider = createFakeProvider({
 *   timing: "zero",
 *   faults: { repave: { kind: "fail", times: 1 } },
 * });
 * const call = { operationId: "op-1", signal: new AbortController().signal, log() {} };
 * const machine = create(MachineSchema, { machineId: "m-1" });
 * const options = { imageRef: "ubuntu-2204-lab", cloudInitRef: "cloud-init/worker-node" };
 * await assert.rejects(provider.repave(call, machine, options), /simulated repave failure/);
 * await provider.repave(call, machine, options);
 * assert.equal(provider.attempts("repave"), 2);
 * ```
 */
export function createFakeProvider(options: FakeProviderOptions = {}): FakeProvider {
  const timings = resolveTimings(options.timing ?? "normal");
  const { begin, attempts } = createVerbCalls(options);
  const now = options.now ?? (() => new Date());
  return {
    attempts,

    async setNetboot(call, machine, profile) {
      const run = await begin("setNetboot", call);
      const half = timings.netbootMs / 2;
      run.out(`[netboot] Setting netboot profile: ${profile}`);
      run.out(`[netboot] Machine: ${machine.machineId}`);
      await run.wait(half);
      run.failHere("[netboot] ERROR: Failed to set netboot profile");
      run.out("[netboot] IPXE configuration updated");
      await run.wait(half);
      run.out("[netboot] Netboot profile set successfully");
    },

    async reboot(call, machine, { force }) {
      const run = await begin("reboot", call);
      const third = timings.rebootMs / 3;
      run.out(`[reboot] Initiating ${force ? "forced" : "graceful"} reboot`);
      run.out(`[reboot] Machine: ${machine.machineId}`);
      await run.wait(third);
      run.failHere("[reboot] ERROR: Failed to reboot machine");
      run.out("[reboot] Sending reboot command via BMC...");
      await run.wait(third);
      run.out("[reboot] Machine is rebooting...");
      await run.wait(third);
      run.out("[reboot] Reboot completed, machine coming back online");
    },

    async repave(call, machine, { imageRef, cloudInitRef }) {
      const run = await begin("repave", call);
      run.out("[repave] Starting repave operation");
      run.out(`[repave] Machine: ${machine.machineId}`);
      run.out(`[repave] Image: ${imageRef}`);
      run.out(`[repave] Cloud-init: ${cloudInitRef}`);
      for (const step of REPAVE_STEPS) {
        run.out(`[repave] ${step}`);
        await run.wait(timings.repaveMs / REPAVE_STEPS.length);
      }
      // The original fails only after the full duration, as a disk write would.
      run.failHere("[repave] ERROR: Repave failed during finalization");
      run.out("[repave] Repave completed successfully");
    },

    async mintJoinMaterial(call, cluster) {
      const run = await begin("mintJoinMaterial", call);
      const clusterId = clusterIdOf(cluster);
      run.out(`[join-material] Generating join material for cluster: ${clusterId}`);
      await run.wait(timings.mintJoinMs);
      run.failHere("[join-material] ERROR: Failed to generate join material");
      const expiresAt = new Date(now().getTime() + JOIN_TOKEN_TTL_MS);
      const material: JoinMaterial = {
        endpoint: API_ENDPOINT,
        token: `abcdef.${randomDigits(6)}`,
        caHash: `sha256:${await fakeCaHash(clusterId)}`,
        expiresAt,
        clusterId,
        certificate: "",
      };
      run.out(`[join-material] Join token generated (expires: ${formatRfc3339(expiresAt)})`);
      return material;
    },

    async joinNode(call, machine, material) {
      const run = await begin("joinNode", call);
      run.out(`[join] Joining node to cluster: ${material.clusterId}`);
      run.out(`[join] Machine: ${machine.machineId}`);
      run.out(`[join] API endpoint: ${material.endpoint}`);
      for (const step of JOIN_STEPS) {
        run.out(`[join] ${step}`);
        await run.wait(timings.joinNodeMs / JOIN_STEPS.length);
      }
      run.failHere("[join] ERROR: Failed to join cluster - connection refused");
      run.out("[join] Node successfully joined cluster");
    },

    async verifyInCluster(call, machine, cluster) {
      const run = await begin("verifyInCluster", call);
      const third = timings.verifyMs / 3;
      run.out(`[verify] Verifying node membership in cluster: ${clusterIdOf(cluster)}`);
      run.out(`[verify] Machine: ${machine.machineId}`);
      await run.wait(third);
      run.out("[verify] Checking node registration...");
      await run.wait(third);
      run.failHere("[verify] ERROR: Node not found in cluster");
      run.out("[verify] Node status: Ready");
      run.out("[verify] Kubelet version: v1.33.0");
      run.out("[verify] Pod CIDR assigned: 10.244.1.0/24");
      await run.wait(third);
      run.out("[verify] Verification passed - node is healthy");
    },

    async rma(call, machine, reason) {
      const run = await begin("rma", call);
      const half = timings.rmaMs / 2;
      run.out("[rma] Initiating RMA process");
      run.out(`[rma] Machine: ${machine.machineId}`);
      run.out(`[rma] Reason: ${reason}`);
      await run.wait(half);
      run.failHere("[rma] ERROR: Failed to initiate RMA");
      run.out("[rma] Machine marked for RMA");
      // Random rather than clock-derived: two tickets created in the same instant must differ.
      run.out(`[rma] Ticket created: RMA-${randomDigits(5)}`);
      await run.wait(half);
      run.out("[rma] RMA process initiated successfully");
    },

    async executeSshCommand(call, machine, { scriptRef, args = {} }) {
      const run = await begin("executeSshCommand", call);
      const endpoint = machine.spec?.sshEndpoint ?? "";
      const [connectMs, runMs, updateMs, installMs] = SSH_SPLIT.map((share) =>
        timings.sshMs * share
      );
      run.out(`[ssh] Executing script: ${scriptRef}`);
      run.out(`[ssh] Machine: ${machine.machineId} (endpoint: ${endpoint})`);
      // Sorted, unlike the original's map order, so the log is the same on every run.
      const keys = Object.keys(args).sort();
      if (keys.length > 0) {
        run.out("[ssh] Arguments:");
        for (const key of keys) run.out(`[ssh]   ${key}=${args[key]}`);
      }
      await run.wait(connectMs);
      run.out(`[ssh] Connecting to ${endpoint}...`);
      await run.wait(runMs);
      run.out(`[ssh] Running ${scriptRef}...`);
      run.out("[ssh] + apt-get update");
      await run.wait(updateMs);
      run.out("[ssh] + apt-get install -y containerd");
      await run.wait(installMs);
      // The original never fails; a failing script reports its exit code, as ssh would.
      run.failHere("[ssh] ERROR: Script failed with exit code 1");
      run.out("[ssh] Script completed with exit code 0");
    },
  };
}

const REPAVE_STEPS: readonly string[] = [
  "Downloading image...",
  "Verifying image checksum...",
  "Preparing cloud-init configuration...",
  "Writing image to disk...",
  "Configuring bootloader...",
  "Finalizing installation...",
];

const JOIN_STEPS: readonly string[] = [
  "Configuring kubelet...",
  "Downloading cluster CA...",
  "Initializing node registration...",
  "Waiting for kubelet to start...",
  "Node registered with control plane...",
];

/** Shares of `sshMs` for connect, run, `apt-get update` and `apt-get install` (200/300/200/300 ms). */
const SSH_SPLIT: readonly number[] = [0.2, 0.3, 0.2, 0.3];

function clusterIdOf(cluster: TargetClusterRef): string {
  return cluster.clusterId || DEFAULT_CLUSTER_ID;
}

/** `count` uniformly random decimal digits. */
function randomDigits(count: number): string {
  const [value] = crypto.getRandomValues(new Uint32Array(1));
  return String(value % 10 ** count).padStart(count, "0");
}

/** A stable 64-hex-digit stand-in for the CA hash: a real cluster's CA does not change per token. */
async function fakeCaHash(clusterId: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`bmdemo-fake-ca:${clusterId}`),
  );
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** RFC 3339 in UTC without fractional seconds, as Go's `time.RFC3339` prints it. */
function formatRfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}
