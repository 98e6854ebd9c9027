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

import { abortableDelay, untilAborted } from "../model/abort.ts";
import type { TargetClusterRef } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { JoinMaterial, LogStream, Provider, ProviderCall, ProviderVerb } from "./mod.ts";

/** Durations of the simulated verbs, in milliseconds. Each verb's total is split as in reference §5.3. */
export interface Timings {
  /** Total of `setNetboot`, split in halves. */
  netbootMs: number;
  /** Total of `reboot`, split in thirds. */
  rebootMs: number;
  /** Total of `repave`, split in six sub-steps. */
  repaveMs: number;
  /** Total of `mintJoinMaterial`, one wait. */
  mintJoinMs: number;
  /** Total of `joinNode`, split in five sub-steps. */
  joinNodeMs: number;
  /** Total of `verifyInCluster`, split in thirds. */
  verifyMs: number;
  /** Total of `rma`, split in halves. */
  rmaMs: number;
  /** Total of `executeSshCommand`, split 20/30/20/30 % (200+300+200+300 ms in the original). */
  sshMs: number;
}

/** Named timing profiles: `normal` (the original's default), `slow` (its `--slow`), `zero` (tests). */
export type TimingProfile = "normal" | "slow" | "zero";

/**
 * Durations of each {@linkcode TimingProfile}, as in reference §5.1. The original's SSH command is
 * a fixed second in both of its profiles.
 *
 * @example Total simulated time of a reimage
 * ```ts
 * import assert from "node:assert/strict";
 * import { TIMINGS } from "./fake.ts";
 *
 * const { netbootMs, rebootMs, repaveMs, mintJoinMs, joinNodeMs, verifyMs } = TIMINGS.normal;
 * assert.equal(netbootMs + rebootMs + repaveMs + mintJoinMs + joinNodeMs + verifyMs, 3350);
 * ```
 */
export const TIMINGS: Readonly<Record<TimingProfile, Readonly<Timings>>> = Object.freeze({
  normal: Object.freeze({
    netbootMs: 250,
    rebootMs: 500,
    repaveMs: 1000,
    mintJoinMs: 100,
    joinNodeMs: 1000,
    verifyMs: 500,
    rmaMs: 250,
    sshMs: 1000,
  }),
  slow: Object.freeze({
    netbootMs: 2000,
    rebootMs: 5000,
    repaveMs: 10000,
    mintJoinMs: 500,
    joinNodeMs: 8000,
    verifyMs: 3000,
    rmaMs: 2000,
    sshMs: 1000,
  }),
  zero: Object.freeze({
    netbootMs: 0,
    rebootMs: 0,
    repaveMs: 0,
    mintJoinMs: 0,
    joinNodeMs: 0,
    verifyMs: 0,
    rmaMs: 0,
    sshMs: 0,
  }),
});

/**
 * A simulated fault of one verb.
 *
 * - `fail`: the verb logs its `ERROR` line on stderr and rejects with an `Error`, at the point the
 *   reference fails it; every attempt when `times` is unset, else only the first `times` calls.
 * - `hang`: the verb logs its first lines, then waits until `call.signal` aborts (a stuck BMC),
 *   which is how step timeouts are tested.
 */
export type Fault =
  | {
    kind: "fail";
    /** How many calls fail before the verb succeeds; every call fails when unset. */
    times?: number;
    /** Error message instead of the reference's, e.g. `simulated repave failure`. */
    message?: string;
  }
  | { kind: "hang" };

/** Options of {@linkcode createFakeProvider}. */
export interface FakeProviderOptions {
  /**
   * How long each verb takes: a profile name or explicit durations.
   *
   * @default {"normal"}
   */
  timing?: TimingProfile | Timings;
  /**
   * Faults to inject, per verb.
   *
   * @default {{}}
   */
  faults?: Partial<Record<ProviderVerb, Fault>>;
  /**
   * Awaited at the start of a verb, before its first log line, so a test can hold the verb open
   * (e.g. with `Promise.withResolvers`). The verb rejects with the signal's reason if the signal
   * aborts first.
   *
   * @default {{}}
   */
  hooks?: Partial<Record<ProviderVerb, (call: ProviderCall) => Promise<void>>>;
  /**
   * Waits `ms` (always > 0) milliseconds; tests pass a recorder to check how a verb splits its
   * time without waiting for it. It is raced against `signal`, so it need not watch it.
   *
   * @default {an abortable `setTimeout`}
   */
  delay?: (ms: number, signal: AbortSignal) => Promise<void>;
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

/** Default error message of each verb's `fail` fault; the reference has none for mint-join and ssh. */
const FAILURE_MESSAGES: Readonly<Record<ProviderVerb, string>> = {
  setNetboot: "simulated netboot failure",
  reboot: "simulated reboot failure",
  repave: "simulated repave failure",
  mintJoinMaterial: "simulated mint-join failure",
  joinNode: "simulated join failure",
  verifyInCluster: "simulated verify failure: node not in cluster",
  rma: "simulated RMA failure",
  executeSshCommand: "simulated ssh failure",
};

const VERBS: readonly ProviderVerb[] = Object.keys(FAILURE_MESSAGES) as ProviderVerb[];

/** One verb's call in progress: logging, abortable waits and its fault. */
interface Session {
  /** Logs a line on stdout. */
  out(line: string): void;
  /** Waits `ms`, or forever when the verb hangs; rejects with the signal's reason on abort. */
  wait(ms: number): Promise<void>;
  /** When this attempt must fail: logs `line` on stderr and throws the fault's error. */
  failHere(line: string): void;
}

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
  const faults = options.faults ?? {};
  validateFaults(faults);
  const hooks = options.hooks ?? {};
  const customDelay = options.delay;
  const delay = customDelay === undefined
    ? abortableDelay
    : (ms: number, signal: AbortSignal) => untilAborted(customDelay(ms, signal), signal);
  const now = options.now ?? (() => new Date());
  const counts = new Map<ProviderVerb, number>(VERBS.map((verb) => [verb, 0]));

  /** Counts the call, runs its hook, and returns the helpers the verb's script uses. */
  async function begin(verb: ProviderVerb, call: ProviderCall): Promise<Session> {
    const attempt = (counts.get(verb) ?? 0) + 1;
    counts.set(verb, attempt);
    const { signal } = call;
    signal.throwIfAborted();
    const hook = hooks[verb];
    if (hook !== undefined) await untilAborted(hook(call), signal);
    signal.throwIfAborted();

    const fault = faults[verb];
    const hangs = fault?.kind === "hang";
    const fails = fault?.kind === "fail" && (fault.times === undefined || attempt <= fault.times);
    const log = (line: string, stream: LogStream): void => call.log(line, stream);
    return {
      out: (line) => log(line, "stdout"),
      async wait(ms) {
        signal.throwIfAborted();
        if (hangs) return await waitForAbort(signal);
        // No timer for a zero wait, so the zero profile leaves nothing for test sanitizers to find.
        if (ms > 0) await delay(ms, signal);
      },
      failHere(line) {
        if (!fails) return;
        log(line, "stderr");
        throw new Error(
          fault?.kind === "fail" && fault.message !== undefined
            ? fault.message
            : FAILURE_MESSAGES[verb],
        );
      },
    };
  }

  return {
    attempts(verb) {
      return counts.get(verb) ?? 0;
    },

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

/** Resolves a profile name to its durations and checks explicit ones. */
function resolveTimings(timing: TimingProfile | Timings): Readonly<Timings> {
  if (typeof timing === "string") {
    if (!Object.hasOwn(TIMINGS, timing)) {
      throw new RangeError(
        `Cannot create fake provider as "timing" is not a profile (normal, slow, zero): current value is "${timing}"`,
      );
    }
    return TIMINGS[timing];
  }
  // Every field is checked, so a missing one fails here instead of becoming a zero-length wait.
  for (const name of Object.keys(TIMINGS.normal) as (keyof Timings)[]) {
    const ms: unknown = timing[name];
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
      throw new RangeError(
        `Cannot create fake provider as "timing.${name}" must be a non-negative number of milliseconds: current value is ${ms}`,
      );
    }
  }
  return { ...timing };
}

function validateFaults(faults: Partial<Record<ProviderVerb, Fault>>): void {
  for (const [verb, fault] of Object.entries(faults)) {
    if (fault?.kind !== "fail" || fault.times === undefined) continue;
    if (!Number.isSafeInteger(fault.times) || fault.times < 0) {
      throw new RangeError(
        `Cannot create fake provider as "faults.${verb}.times" must be a non-negative integer: current value is ${fault.times}`,
      );
    }
  }
}

function clusterIdOf(cluster: TargetClusterRef): string {
  return cluster.clusterId || DEFAULT_CLUSTER_ID;
}

/** Rejects with `signal.reason` once it aborts; never resolves. */
function waitForAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
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
