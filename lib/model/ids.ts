/**
 * Identifier generation. Ids are random (UUIDv4 with a readable prefix), never derived from the
 * clock, so two ids made in the same instant cannot collide.
 *
 * @module
 */

/**
 * Returns a new operation id, `op-<uuid>`.
 *
 * @returns The id.
 *
 * @example
 * ```ts
 * newOperationId(); // "op-3b241101-e2bb-4255-8caf-4136c566a962"
 * ```
 */
export function newOperationId(): string {
  return `op-${crypto.randomUUID()}`;
}

/**
 * Returns a new machine id, `m-<uuid>`, for a machine registered without one.
 *
 * @returns The id.
 */
export function newMachineId(): string {
  return `m-${crypto.randomUUID()}`;
}
