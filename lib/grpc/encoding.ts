/**
 * Binary encoding that reuses work across calls: a frozen (immutable) snapshot is encoded once
 * (`lib/store/snapshot_encoding.ts` keeps its bytes for as long as it lives; the store's byte-capped
 * list pages measure the same bytes); a message that is not frozen (a list response built per
 * call) is encoded with its repeated and singular message fields taken from that cache.
 *
 * Protobuf allows fields in any order, and repeated elements keep their relative order, so the
 * output decodes to exactly the message `toBinary` would have produced.
 *
 * @module
 */

import { type DescField, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { cachedEncoding, snapshotEncoding, varintLength } from "../store/snapshot_encoding.ts";

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
 * encodeMessage(MachineSchema, machine) === encodeMessage(MachineSchema, machine); // true
 * ```
 */
export function encodeMessage<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
): Uint8Array {
  // A cached snapshot first: the common case (list elements, fanned-out events), and a lookup
  // is cheaper than the isFrozen check.
  const cached = cachedEncoding(message);
  if (cached) return cached;
  if (!Object.isFrozen(message)) return encodeFresh(schema, message);
  return snapshotEncoding(schema, message);
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
  const head = toBinary(schema, rest as MessageShape<DescMessage>);
  // Encode (or fetch) every nested message first, to size the output once.
  const keys: number[] = [];
  const bodies: Uint8Array[] = [];
  let size = head.length;
  for (const f of nested) {
    const key = (f.number << 3) | 2; // wire type 2: length-delimited
    const value = message[f.localName];
    const elements = f.fieldKind === "list" ? value as Record<string, unknown>[] : [value];
    for (const element of elements) {
      const body = encodeMessage(f.message, element as MessageShape<DescMessage>);
      keys.push(key);
      bodies.push(body);
      size += varintLength(key) + varintLength(body.length) + body.length;
    }
  }
  const out = new Uint8Array(size);
  out.set(head, 0);
  let offset = head.length;
  for (let i = 0; i < bodies.length; i++) {
    offset = writeVarint(out, offset, keys[i]);
    offset = writeVarint(out, offset, bodies[i].length);
    out.set(bodies[i], offset);
    offset += bodies[i].length;
  }
  return out;
}

function writeVarint(out: Uint8Array, offset: number, value: number): number {
  while (value >= 0x80) {
    out[offset++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  out[offset++] = value;
  return offset;
}
