/**
 * Size and format limits of everything a client sends, in one object that docs/server.md
 * ("Limits"), the CLI and every Store implementation quote. The checks here are pure and throw
 * {@linkcode InvalidArgumentError}s with reason `MISSING_FIELD` (metadata `field`),
 * `LIMIT_EXCEEDED` (metadata `field`, `limit`, `actual`) or `INVALID_FORMAT` (metadata `field`,
 * `allowed`), whose messages state the limit, the value sent and how to fix it. Lengths count
 * Unicode code points.
 *
 * This module knows nothing of gRPC.
 *
 * @module
 */

import { InvalidArgumentError } from "../model/errors.ts";
import { checkHardwareSpec } from "../model/hardware_spec.ts";
import { toBinary } from "@bufbuild/protobuf";
import { type Machine, MachineSchema, type MachineSpec } from "../gen/baremetal/v1/baremetal_pb.ts";

/** Every limit a request is checked against. */
export const LIMITS = Object.freeze({
  /** Longest `request_id` (idempotency key), in characters. */
  requestIdLength: 128,
  /** Longest `machine_id`, in characters (ids also match {@linkcode MACHINE_ID_PATTERN}). */
  machineIdLength: 128,
  /** Most labels on one machine. */
  labelsPerMachine: 64,
  /** Longest label key, in characters (keys also match {@linkcode LABEL_KEY_PATTERN}). */
  labelKeyLength: 63,
  /** Longest label value, in characters. */
  labelValueLength: 256,
  /** Longest `image_ref` of a REIMAGE, in characters. */
  imageRefLength: 256,
  /** Longest filter text of ListMachines, ListOperations and WatchOperations, in characters. */
  filterLength: 1024,
  /** Largest page a list returns; a larger `page_size` is capped to it (not refused). */
  maxPageSize: 1000,
  /** Longest `operation_id` sent, in characters (the server issues `op-<uuid>`, 39). */
  operationIdLength: 128,
  /**
   * Longest `page_token`, in characters: twice the longest token the server issues (base64 of
   * a cursor holding a canonical filter of at most 1,024 characters, ~8,300).
   */
  pageTokenLength: 16384,
  /** Longest `spec.provider`, in characters (it also names a driver: `fake`, `redfish`, `ipmi`). */
  providerLength: 64,
  /** Most `spec.mac_addresses` of one machine (one per network port; 8-16 on big servers). */
  macAddressesPerMachine: 64,
  /** Longest MAC address, in characters (an InfiniBand 20-byte address is 59 with colons). */
  macAddressLength: 64,
  /** Longest `spec.serial`, in characters (SMBIOS serials are usually under 32). */
  serialLength: 256,
  /** Longest `spec.ssh_endpoint`, in characters (a DNS name is at most 253, plus `:port`). */
  sshEndpointLength: 512,
  /** Longest `spec.bmc_address`, in characters (a host:port or a Redfish URL). */
  bmcAddressLength: 512,
  /** Longest `spec.rack`, in characters. */
  rackLength: 128,
  /** Longest `spec.target_cluster.cluster_id`, in characters. */
  clusterIdLength: 128,
  /** Longest `spec.target_cluster.kubeconfig_secret_ref`, in characters (namespace/name is ≤ 317). */
  kubeconfigSecretRefLength: 512,
  /**
   * Largest machine a client may store, in encoded bytes of its id, spec and labels (the
   * server-owned status is not counted). The per-field limits keep an ASCII machine under
   * ~27 KiB; this bounds multi-byte text too.
   */
  machineBytes: 65536,
  /**
   * Byte budget of one list reply (ListMachines, ListOperations): a page ends early, with a
   * `next_page_token`, before its items exceed it. Well under the 4 MiB a gRPC client accepts
   * by default; a page always holds at least one item.
   */
  maxPageBytes: 1048576,
});

/** The characters a `machine_id` may contain: letters, digits, `.`, `_`, `:` and `-`. */
export const MACHINE_ID_PATTERN: RegExp = /^[A-Za-z0-9._:-]+$/;

/** The characters a label key may contain: letters, digits, `.`, `_`, `/` and `-`. */
export const LABEL_KEY_PATTERN: RegExp = /^[A-Za-z0-9._/-]+$/;

/**
 * Counts the Unicode code points of `text`.
 *
 * @param text The text.
 * @returns The code point count.
 */
function length(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/**
 * Refuses `text` when it is longer than `limit` characters.
 *
 * @param field The request field, e.g. `request_id`.
 * @param text The value sent.
 * @param limit The limit.
 * @param fix What to do about it (one clause).
 * @param metadata Extra ids for the error (e.g. the machine).
 * @param subject How the message names the value. @default field
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` with metadata `field`, `limit`, `actual`.
 *
 * @example
 * ```ts
 * checkLength("request_id", crypto.randomUUID(), LIMITS.requestIdLength, "send a UUID");
 * ```
 */
export function checkLength(
  field: string,
  text: string,
  limit: number,
  fix: string,
  metadata: Record<string, string> = {},
  subject: string = field,
): void {
  // UTF-16 length bounds the code point count from above: most values need no counting.
  if (text.length <= limit) return;
  const actual = length(text);
  if (actual <= limit) return;
  throw new InvalidArgumentError(
    `${subject} is ${actual} characters long; the limit is ${limit}: ${fix}`,
    {
      reason: "LIMIT_EXCEEDED",
      metadata: { ...metadata, field, limit: String(limit), actual: String(actual) },
    },
  );
}

/**
 * Refuses a count above `limit`.
 *
 * @param field The request field, e.g. `labels`.
 * @param actual The count sent.
 * @param limit The limit.
 * @param message The message; it must state `actual`, `limit` and the fix.
 * @param metadata Extra ids for the error.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` with metadata `field`, `limit`, `actual`.
 */
export function checkCount(
  field: string,
  actual: number,
  limit: number,
  message: string,
  metadata: Record<string, string> = {},
): void {
  if (actual <= limit) return;
  throw new InvalidArgumentError(message, {
    reason: "LIMIT_EXCEEDED",
    metadata: { ...metadata, field, limit: String(limit), actual: String(actual) },
  });
}

/**
 * Checks a machine id: at most {@linkcode LIMITS.machineIdLength} characters from
 * {@linkcode MACHINE_ID_PATTERN}. Ids such as `machine-1`, `demo-1`, `m-<uuid>`,
 * `rack1.node-2` and `10.0.0.5` pass; ids with spaces, `=` or quotes (which would not survive
 * the filter grammar) do not.
 *
 * @param machineId The id (non-empty; emptiness is the caller's `MISSING_FIELD`).
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` or `INVALID_FORMAT`.
 */
export function checkMachineId(machineId: string): void {
  checkLength(
    "machine_id",
    machineId,
    LIMITS.machineIdLength,
    "use a shorter machine id",
  );
  if (!MACHINE_ID_PATTERN.test(machineId)) {
    throw new InvalidArgumentError(
      `machine_id ${
        JSON.stringify(machineId)
      } contains characters that are not allowed: use only letters, digits, '.', '_', ':' and '-'`,
      {
        reason: "INVALID_FORMAT",
        metadata: { field: "machine_id", allowed: MACHINE_ID_PATTERN.source },
      },
    );
  }
}

/**
 * Checks a machine's labels: at most {@linkcode LIMITS.labelsPerMachine}, keys of at most
 * {@linkcode LIMITS.labelKeyLength} characters from {@linkcode LABEL_KEY_PATTERN}, values of at
 * most {@linkcode LIMITS.labelValueLength} characters.
 *
 * @param labels The labels sent.
 * @param machineId The machine they belong to (for the error metadata), if known.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` or `INVALID_FORMAT`.
 */
export function checkLabels(labels: Record<string, string>, machineId = ""): void {
  const ids: Record<string, string> = machineId === "" ? {} : { machineId };
  const keys = Object.keys(labels);
  checkCount(
    "labels",
    keys.length,
    LIMITS.labelsPerMachine,
    `${
      machineId === "" ? "the machine" : `machine "${machineId}"`
    } has ${keys.length} labels; the limit is ${LIMITS.labelsPerMachine}: remove labels or keep such data elsewhere`,
    ids,
  );
  for (const key of keys) {
    checkLength(
      "label_key",
      key,
      LIMITS.labelKeyLength,
      "use a shorter label key",
      ids,
    );
    if (!LABEL_KEY_PATTERN.test(key)) {
      throw new InvalidArgumentError(
        `label key ${
          JSON.stringify(key)
        } is not allowed: a key is 1 to ${LIMITS.labelKeyLength} letters, digits, '.', '_', '/' or '-'`,
        {
          reason: "INVALID_FORMAT",
          metadata: { ...ids, field: "label_key", allowed: LABEL_KEY_PATTERN.source },
        },
      );
    }
    checkLength(
      "label_value",
      labels[key],
      LIMITS.labelValueLength,
      "use a shorter label value",
      { ...ids, labelKey: key },
      `label_value of "${key}"`,
    );
  }
}

/**
 * Checks an `operation_id` a client sends: at most {@linkcode LIMITS.operationIdLength}
 * characters (an id this server never issues would only be NOT_FOUND; a huge one must not be
 * echoed back in the error).
 *
 * @param operationId The id (non-empty; emptiness is the caller's `MISSING_FIELD`).
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED`.
 */
export function checkOperationId(operationId: string): void {
  checkLength(
    "operation_id",
    operationId,
    LIMITS.operationIdLength,
    "pass an operation id this server returned (op-<uuid>)",
  );
}

/** One string of a machine's spec and its limit. */
interface SpecString {
  /** The request field, as its proto path. */
  field: string;
  limit: number;
  value(spec: MachineSpec): string;
  fix: string;
}

const SPEC_STRINGS: readonly SpecString[] = [
  {
    field: "spec.provider",
    limit: LIMITS.providerLength,
    value: (spec) => spec.provider,
    fix: "use the provider's short name",
  },
  {
    field: "spec.serial",
    limit: LIMITS.serialLength,
    value: (spec) => spec.serial,
    fix: "send the hardware serial number only",
  },
  {
    field: "spec.ssh_endpoint",
    limit: LIMITS.sshEndpointLength,
    value: (spec) => spec.sshEndpoint,
    fix: "send host:port",
  },
  {
    field: "spec.bmc_address",
    limit: LIMITS.bmcAddressLength,
    value: (spec) => spec.bmcAddress,
    fix: "send the BMC's host:port or URL",
  },
  {
    field: "spec.rack",
    limit: LIMITS.rackLength,
    value: (spec) => spec.rack,
    fix: "use a shorter rack name",
  },
  {
    field: "spec.target_cluster.cluster_id",
    limit: LIMITS.clusterIdLength,
    value: (spec) => spec.targetCluster?.clusterId ?? "",
    fix: "use a shorter cluster id",
  },
  {
    field: "spec.target_cluster.kubeconfig_secret_ref",
    limit: LIMITS.kubeconfigSecretRefLength,
    value: (spec) => spec.targetCluster?.kubeconfigSecretRef ?? "",
    fix: "reference the secret by a shorter name",
  },
];

/**
 * Checks a machine's spec: every string against its limit in {@linkcode LIMITS} (`provider`,
 * `serial`, `ssh_endpoint`, `bmc_address`, `rack`, `target_cluster.*`), at most
 * {@linkcode LIMITS.macAddressesPerMachine} MAC addresses of at most
 * {@linkcode LIMITS.macAddressLength} characters each, then the hardware fields' forms
 * (`checkHardwareSpec` of `lib/model/hardware_spec.ts`: a known driver, its BMC address, a
 * `host:port` SSH endpoint). Error fields are proto paths such as `spec.serial`; a MAC address
 * that is too long is `spec.mac_address` with metadata `index`.
 *
 * @param spec The spec sent; `undefined` (no spec) passes.
 * @param machineId The machine it belongs to (for the error metadata), if known.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED`, `INVALID_FORMAT` or `MISSING_FIELD`.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSpecSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * checkSpec(create(MachineSpecSchema, { provider: "fake", serial: "SN-1" }), "machine-1");
 * ```
 */
export function checkSpec(spec: MachineSpec | undefined, machineId = ""): void {
  if (spec === undefined) return;
  const ids: Record<string, string> = machineId === "" ? {} : { machineId };
  for (const { field, limit, value, fix } of SPEC_STRINGS) {
    checkLength(field, value(spec), limit, fix, ids);
  }
  const macs = spec.macAddresses;
  checkCount(
    "spec.mac_addresses",
    macs.length,
    LIMITS.macAddressesPerMachine,
    `spec.mac_addresses has ${macs.length} addresses; the limit is ${LIMITS.macAddressesPerMachine}: send one per network port`,
    ids,
  );
  macs.forEach((mac, index) =>
    checkLength(
      "spec.mac_address",
      mac,
      LIMITS.macAddressLength,
      "send one MAC address per entry",
      { ...ids, index: String(index) },
      `spec.mac_addresses[${index}]`,
    )
  );
  checkHardwareSpec(spec, ids);
}

/**
 * Checks the encoded size of what a client stores of a machine (its id, spec and labels; the
 * status is the server's) against {@linkcode LIMITS.machineBytes}.
 *
 * @param machine The machine as it would be stored.
 * @throws {InvalidArgumentError} `LIMIT_EXCEEDED` with field `machine`.
 */
export function checkMachineSize(machine: Machine): void {
  const bytes = toBinary(MachineSchema, { ...machine, status: undefined }).length;
  checkCount(
    "machine",
    bytes,
    LIMITS.machineBytes,
    `machine${
      machine.machineId === "" ? "" : ` "${machine.machineId}"`
    } is ${bytes} bytes encoded (id, spec and labels); the limit is ${LIMITS.machineBytes}: keep bulky data elsewhere and store a reference`,
    machine.machineId === "" ? {} : { machineId: machine.machineId },
  );
}

/**
 * The error for a required field left empty.
 *
 * @param field The request field, e.g. `machine_id`.
 * @param message What is missing and how to fix it.
 * @param metadata Other ids involved.
 * @returns An {@linkcode InvalidArgumentError} with reason `MISSING_FIELD` and metadata `field`.
 */
export function missingField(
  field: string,
  message: string,
  metadata: Record<string, string> = {},
): InvalidArgumentError {
  return new InvalidArgumentError(message, {
    reason: "MISSING_FIELD",
    metadata: { ...metadata, field },
  });
}
