/**
 * The grpc-js `ServiceDefinition` of a protobuf-es service descriptor, with no `.proto` file or
 * proto-loader at run time: method paths, streaming flags and the binary codecs, including the
 * request decoder that turns undecodable bytes into a {@linkcode MalformedRequestError} the
 * handler adapter (`./service_handlers.ts`) reports like any other failure.
 *
 * Only unary and server-streaming methods are supported (all our proto uses).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type * as grpc from "@grpc/grpc-js";
import {
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type Message,
} from "@bufbuild/protobuf";
import { encodeMessage } from "./encoding.ts";
import type { SupportedMethodKind } from "./handler_contract.ts";

/**
 * Builds the grpc-js service definition of a protobuf-es service descriptor.
 *
 * Each method is keyed by its name as written in the `.proto` file (`GetMachine`), like
 * proto-loader does, with `originalName` set to its protobuf-es `localName` (`getMachine`):
 * `grpc.makeGenericClientConstructor` creates client methods under both names, and
 * `server.addService` finds an implementation under either. The path is
 * `/${service.typeName}/${method.name}`; messages are encoded with `toBinary` and decoded with
 * `fromBinary`, so decoded `bytes` fields are views into the received buffer.
 *
 * @param service The generated service descriptor, e.g. `MachineService`.
 * @returns The definition to pass to `grpc.Server.addService` or `makeGenericClientConstructor`.
 * @throws {TypeError} If a method is client-streaming or bidi-streaming.
 *
 * @example
 * ```ts ignore
 * const definition = createServiceDefinition(MachineService);
 * definition.GetMachine.path; // "/baremetal.v1.MachineService/GetMachine"
 * ```
 */
export function createServiceDefinition<S extends DescService>(
  service: S,
): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Message, Message>> = {};
  for (const method of service.methods) {
    const kind = supportedKind(method);
    definition[method.name] = {
      path: methodPath(method),
      // Always false for the supported kinds; kept as the rule so the flags read like grpc-js'.
      requestStream: method.methodKind === "client_streaming" ||
        method.methodKind === "bidi_streaming",
      responseStream: kind === "server_streaming",
      requestSerialize: serializer(method.input),
      requestDeserialize: requestDeserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
  }
  return definition;
}

function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * The kind of a method this adapter supports.
 *
 * @param method A method of a generated service descriptor.
 * @returns `unary` or `server_streaming`.
 * @throws {TypeError} If the method is client-streaming or bidi-streaming.
 */
export function supportedKind(method: DescMethod): SupportedMethodKind {
  const kind = method.methodKind;
  if (kind === "unary" || kind === "server_streaming") return kind;
  throw new TypeError(
    `Cannot adapt method "${method.parent.typeName}.${method.name}" as only unary and ` +
      `server-streaming methods are supported: current value is "${kind}"`,
  );
}

function serializer(schema: DescMessage): grpc.serialize<Message> {
  return (value) => {
    const bytes = encodeMessage(schema, value);
    // The cached encoding of a snapshot already is a Buffer; otherwise a view, not a copy:
    // grpc-js only reads the bytes to frame them.
    return Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(schema: DescMessage): grpc.deserialize<Message> {
  return (bytes) => fromBinary(schema, bytes);
}

/**
 * A request whose bytes are not a valid message. grpc-js answers a throwing deserializer with a
 * hard-coded INTERNAL and never runs the handler, so bad input would look like a server bug;
 * instead the adapter turns this marker into a {@linkcode MalformedRequestError} that goes
 * through the wrapper (auth, logging) and `toStatus` like any other failure.
 */
class MalformedRequest {
  constructor(readonly typeName: string, readonly cause: unknown) {}
}

function requestDeserializer(schema: DescMessage): grpc.deserialize<Message> {
  return (bytes) => {
    try {
      return fromBinary(schema, bytes);
    } catch (error) {
      return new MalformedRequest(schema.typeName, error) as unknown as Message;
    }
  };
}

/** A request's bytes could not be decoded as its message type. */
export class MalformedRequestError extends Error {
  /** Fully qualified name of the expected message, e.g. `baremetal.v1.GetMachineRequest`. */
  readonly typeName: string;

  /**
   * @param typeName The expected message type.
   * @param options The decoding error as `cause`.
   */
  constructor(typeName: string, options?: ErrorOptions) {
    super(
      `the request is not a valid ${typeName} message (${
        options?.cause instanceof Error ? options.cause.message : String(options?.cause)
      }); send a protobuf-encoded ${typeName}`,
      options,
    );
    this.name = "MalformedRequestError";
    this.typeName = typeName;
  }
}

/**
 * Fails a call whose request could not be decoded, from inside the (wrapped) handler.
 *
 * @param request What the request deserializer returned.
 * @throws {MalformedRequestError} If the request's bytes were not a valid message.
 */
export function checkDecoded(request: Message): void {
  if (request instanceof MalformedRequest) {
    throw new MalformedRequestError(request.typeName, { cause: request.cause });
  }
}
