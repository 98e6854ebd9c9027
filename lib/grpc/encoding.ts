/**
 * Binary encoding that reuses work across calls: the store hands out immutable (frozen)
 * snapshots, and the same snapshot is often encoded many times (a machine listed by every
 * ListMachines page it is on, an operation event fanned out to every watcher, a log line
 * replayed to every reader). A frozen message's encoding is computed once and kept, keyed by the
 * object, for as long as the object lives; a message that is not frozen (a list response built
 * per call) is encoded with its repeated and singular message fields taken from that cache.
 *
 * Protobuf allows fields in any order, and repeated elements keep their relative order, so the
 * output decodes to exactly the message `toBinary` would have produced.
 *
 * @module
 */

import { type DescField, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";

const cache = new WeakMap<object, Uint8Array>();

type MessageField =
  & DescField
  & ({ fieldKind: "message" } | { fieldKind: "list"; listKind: "message" });

const messageFields = new WeakMap<DescMessage, readonly MessageField[]>();

function messageFieldsOf(schema: DescMessage): readonly MessageField[] {
  let fields = messageFields.get(schema);
  if (!fields) {
    fields = schema.fields.filter((f): f is MessageField =>
      f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")
    );
    messageFields.set(schema, fields);
  }
  return fields;
}

/**
 * Encodes a message like `toBinary`, reusing the encoding of frozen (immutable) messages.
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
 * encodeMessage(MachineSchema, machine) === encodeMessage(MachineSchema, machine); // true
 * ```
 */
export function encodeMessage<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
): Uint8Array {
  const frozen = Object.isFrozen(message);
  if (frozen) {
    const hit = cache.get(message);
    if (hit) return hit;
  }
  const bytes = encodeFresh(schema, message);
  if (frozen) cache.set(message, bytes);
  return bytes;
}

function encodeFresh(schema: DescMessage, message: Record<string, unknown>): Uint8Array {
  const fields = messageFieldsOf(schema);
  const nested = fields.filter((f) => {
    const value = message[f.localName];
    return f.fieldKind === "list" ? (value as unknown[]).length > 0 : value !== undefined;
  });
  if (nested.length === 0) return toBinary(schema, message as MessageShape<DescMessage>);
  // The scalar rest through protobuf-es, the message fields from the cache.
  const rest: Record<string, unknown> = { ...message };
  for (const f of nested) rest[f.localName] = f.fieldKind === "list" ? [] : undefined;
  const parts: Uint8Array[] = [toBinary(schema, rest as MessageShape<DescMessage>)];
  let size = parts[0].length;
  const push = (field: MessageField, value: Record<string, unknown>): void => {
    const body = encodeMessage(field.message, value as MessageShape<DescMessage>);
    const head = header(field.number, body.length);
    parts.push(head, body);
    size += head.length + body.length;
  };
  for (const f of nested) {
    const value = message[f.localName];
    if (f.fieldKind === "list") {
      for (const element of value as Record<string, unknown>[]) push(f, element);
    } else {
      push(f, value as Record<string, unknown>);
    }
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** The key (field number, wire type 2) and the length varint of a length-delimited field. */
function header(fieldNumber: number, length: number): Uint8Array {
  const bytes: number[] = [];
  for (let v = (fieldNumber << 3) | 2;; v >>>= 7) {
    if (v < 0x80) {
      bytes.push(v);
      break;
    }
    bytes.push((v & 0x7f) | 0x80);
  }
  for (let v = length;; v = Math.floor(v / 128)) {
    if (v < 0x80) {
      bytes.push(v);
      break;
    }
    bytes.push((v % 128) | 0x80);
  }
  return Uint8Array.from(bytes);
}
