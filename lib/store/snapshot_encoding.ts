/**
 * The binary encoding of immutable snapshots, computed once per snapshot. The store hands out
 * deeply frozen snapshots, and the same snapshot is often encoded many times (a machine on
 * every ListMachines page it is on, an operation event fanned out to every watcher, a log line
 * replayed to every reader); the store also measures them to cut list pages by bytes. A frozen
 * message's encoding is kept, keyed by the object, for as long as the object lives, so the size
 * the store measures and the bytes the gRPC layer sends (`lib/grpc/encoding.ts`) are one
 * encoding.
 *
 * Protobuf-es only: this module knows nothing of gRPC.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";

const cache = new WeakMap<object, Uint8Array>();

/**
 * Encodes a message like `toBinary`, reusing the encoding of a frozen (immutable) message.
 *
 * The cached encoding of a frozen message is a `Buffer` (a `Uint8Array` subclass) over the
 * bytes, so a caller that needs a `Buffer`, such as a grpc-js serializer, can use it as is
 * rather than wrap the bytes again on every call. Never write to the returned bytes.
 *
 * @param schema The message's schema.
 * @param message The message.
 * @returns The protobuf wire bytes.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * const machine = Object.freeze(create(MachineSchema, { machineId: "m-1" }));
 * snapshotEncoding(MachineSchema, machine) === snapshotEncoding(MachineSchema, machine); // true
 * ```
 */
export function snapshotEncoding<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
): Uint8Array {
  // Only frozen messages are cached, so a hit needs no isFrozen check (the costlier of the two
  // on the list hot path).
  const cached = cache.get(message);
  if (cached) return cached;
  if (!Object.isFrozen(message)) return toBinary(schema, message);
  // One entry per top-level snapshot: its nested messages are encoded inline, not cached
  // separately, so the cache holds one byte array per machine, event or log line.
  const encoded = toBinary(schema, message);
  const bytes = Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  cache.set(message, bytes);
  return bytes;
}

/**
 * The encoding {@linkcode snapshotEncoding} keeps for `message`, if any: a lookup without the
 * `Object.isFrozen` check, for callers that encode messages that are mostly cached snapshots.
 *
 * @param message A message.
 * @returns Its cached encoding, or `undefined` when it has none (yet, or is not frozen).
 */
export function cachedEncoding(message: object): Uint8Array | undefined {
  return cache.get(message);
}

/**
 * The bytes a message takes as one element of a repeated message field (such as
 * `ListMachinesResponse.machines`): its encoding plus the field key and the length prefix.
 * The encoding of a frozen message is cached (see {@linkcode snapshotEncoding}).
 *
 * @param schema The message's schema.
 * @param message The message.
 * @returns The size in bytes.
 *
 * @example
 * ```ts
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
 * const machine = Object.freeze(create(MachineSchema, { machineId: "m-1" }));
 * elementSize(MachineSchema, machine); // 7: key, length, then "m-1" as field 1
 * ```
 */
export function elementSize<D extends DescMessage>(schema: D, message: MessageShape<D>): number {
  const length = snapshotEncoding(schema, message).length;
  // Field numbers below 16 take a one-byte key; the length prefix is a varint.
  return 1 + varintLength(length) + length;
}

/**
 * The size of `value` as a protobuf varint.
 *
 * @param value A non-negative integer.
 * @returns 1 to 10 bytes.
 */
export function varintLength(value: number): number {
  let length = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    length++;
  }
  return length;
}
