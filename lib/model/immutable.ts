/**
 * Immutable snapshots: what the store, the event feed and the log journal hand out is frozen, so
 * no holder can change what another holder sees, and work derived from a snapshot (e.g. its wire
 * encoding, see `lib/grpc/encoding.ts`) can be kept for as long as the snapshot lives.
 *
 * @module
 */

/**
 * Deeply freezes a value. Byte arrays inside it are left as they are (a typed array with
 * elements cannot be frozen); nobody writes to them.
 *
 * @param value A message or plain value.
 * @returns The same value, frozen.
 *
 * @example
 * ```ts
 * const frozen = freezeSnapshot({ a: { b: 1 } });
 * Object.isFrozen(frozen.a); // true
 * ```
 */
export function freezeSnapshot<T>(value: T): T {
  if (
    typeof value === "object" && value !== null && !ArrayBuffer.isView(value) &&
    !Object.isFrozen(value)
  ) {
    for (const child of Object.values(value)) freezeSnapshot(child);
    Object.freeze(value);
  }
  return value;
}
