/**
 * Internal plans: which ordered steps an operation type runs, each with its timeout, retry
 * budget and the provider calls it makes. Plans never appear in the public proto, so they can
 * change without breaking SDK consumers.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import {
  type Machine,
  type Operation,
  Operation_OperationType as OperationType,
  type TargetClusterRef,
  TargetClusterRefSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import type { Provider, ProviderCall } from "../provider/mod.ts";

/** Image a REIMAGE writes when the request names none. */
export const DEFAULT_IMAGE_REF = "ubuntu-2204-lab";
/** Netboot profile REIMAGE points machines at. */
export const NETBOOT_PROFILE = "pxe-ubuntu-22.04";
/** Cloud-init configuration REIMAGE applies. */
export const CLOUD_INIT_REF = "cloud-init/worker-node";
/** Cluster joined when the machine's spec names none. */
export const DEFAULT_CLUSTER_ID = "default-cluster";

/** What a step's `run` gets. */
export interface StepContext {
  /** The provider to act through. */
  provider: Provider;
  /** Operation id, signal and log of this attempt. */
  call: ProviderCall;
  /** The machine as it was when the operation started. */
  machine: Machine;
  /** The operation being run. */
  operation: Operation;
}

/** One step of a plan. */
export interface PlanStep {
  /** Name shown as the operation's `current_stage`, e.g. `repave-image`. */
  name: string;
  /** How long one attempt may take before it is aborted and counted as failed. */
  timeoutMs: number;
  /** Extra attempts after the first (total attempts = 1 + maxRetries). */
  maxRetries: number;
  /** Performs the step; rejects on failure, with `call.signal.reason` once aborted. */
  run(context: StepContext): Promise<void>;
}

/** An ordered list of steps for one operation type. */
export interface Plan {
  /** Stable id, e.g. `plan/repave-join`. */
  id: string;
  /** Human-readable name. */
  displayName: string;
  /** Steps in order; empty for pure phase changes. */
  steps: readonly PlanStep[];
}

/**
 * The target cluster of a machine, or the default cluster when its spec names none.
 *
 * @param machine The machine.
 * @returns The cluster reference.
 */
export function targetCluster(machine: Machine): TargetClusterRef {
  const ref = machine.spec?.targetCluster;
  return ref && ref.clusterId !== ""
    ? ref
    : create(TargetClusterRefSchema, { clusterId: DEFAULT_CLUSTER_ID });
}

const SECOND = 1000;

/** Freezes a plan and each of its steps: the built-ins are shared by every caller. */
function deepFreeze(plan: Plan): Plan {
  for (const step of plan.steps) Object.freeze(step);
  return Object.freeze(plan);
}

const REPAVE_JOIN: Plan = deepFreeze({
  id: "plan/repave-join",
  displayName: "Repave and Join Cluster",
  steps: Object.freeze([
    {
      name: "set-netboot",
      timeoutMs: 60 * SECOND,
      maxRetries: 2,
      run: ({ provider, call, machine }: StepContext) =>
        provider.setNetboot(call, machine, NETBOOT_PROFILE),
    },
    {
      name: "reboot-to-netboot",
      timeoutMs: 300 * SECOND,
      maxRetries: 1,
      run: ({ provider, call, machine }: StepContext) =>
        provider.reboot(call, machine, { force: false }),
    },
    {
      name: "repave-image",
      timeoutMs: 600 * SECOND,
      maxRetries: 1,
      run: ({ provider, call, machine, operation }: StepContext) =>
        provider.repave(call, machine, {
          imageRef: operation.params["image_ref"] || DEFAULT_IMAGE_REF,
          cloudInitRef: CLOUD_INIT_REF,
        }),
    },
    {
      name: "join-cluster",
      timeoutMs: 300 * SECOND,
      maxRetries: 2,
      run: async ({ provider, call, machine }: StepContext) => {
        let material;
        try {
          material = await provider.mintJoinMaterial(call, targetCluster(machine));
        } catch (error) {
          if (call.signal.aborted) throw error;
          throw new Error(`mint join material: ${errorText(error)}`, { cause: error });
        }
        await provider.joinNode(call, machine, material);
      },
    },
    {
      name: "verify-in-cluster",
      timeoutMs: 120 * SECOND,
      maxRetries: 3,
      run: ({ provider, call, machine }: StepContext) =>
        provider.verifyInCluster(call, machine, targetCluster(machine)),
    },
  ]),
});

const REBOOT: Plan = deepFreeze({
  id: "plan/reboot",
  displayName: "Simple Reboot",
  steps: Object.freeze([
    {
      name: "reboot",
      timeoutMs: 300 * SECOND,
      maxRetries: 1,
      run: ({ provider, call, machine, operation }: StepContext) =>
        provider.reboot(call, machine, { force: operation.params["force"] === "true" }),
    },
  ]),
});

const ENTER_MAINTENANCE: Plan = deepFreeze({
  id: "plan/enter-maintenance",
  displayName: "Enter Maintenance",
  steps: Object.freeze([]),
});

const EXIT_MAINTENANCE: Plan = deepFreeze({
  id: "plan/exit-maintenance",
  displayName: "Exit Maintenance",
  steps: Object.freeze([]),
});

/** The built-in plan of every operation type. */
export const BUILTIN_PLANS: ReadonlyMap<OperationType, Plan> = new Map([
  [OperationType.REIMAGE, REPAVE_JOIN],
  [OperationType.REBOOT, REBOOT],
  [OperationType.ENTER_MAINTENANCE, ENTER_MAINTENANCE],
  [OperationType.EXIT_MAINTENANCE, EXIT_MAINTENANCE],
]);

/** Thrown when no plan exists for an operation type: the executor never guesses one. */
export class UnknownPlanError extends Error {
  /** The type that has no plan. */
  readonly type: OperationType;

  /**
   * @param type The operation type.
   */
  constructor(type: OperationType) {
    super(`no plan for operation type ${OperationType[type] ?? type}`);
    this.name = "UnknownPlanError";
    this.type = type;
  }
}

/**
 * Returns the plan for an operation type.
 *
 * @param type Operation type.
 * @param plans Registry to look in; the built-in plans by default.
 * @returns The plan.
 * @throws {UnknownPlanError} When the type has no plan (UNSPECIFIED or unknown).
 *
 * @example
 * ```ts
 * import { Operation_OperationType } from "../gen/baremetal/v1/baremetal_pb.ts";
 * planFor(Operation_OperationType.REIMAGE).steps.map((s) => s.name);
 * // ["set-netboot", "reboot-to-netboot", "repave-image", "join-cluster", "verify-in-cluster"]
 * ```
 */
export function planFor(
  type: OperationType,
  plans: ReadonlyMap<OperationType, Plan> = BUILTIN_PLANS,
): Plan {
  const plan = plans.get(type);
  if (!plan) throw new UnknownPlanError(type);
  return plan;
}

/**
 * The message of any thrown value.
 *
 * @param error A thrown value.
 * @returns Its message, or its string form.
 */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
