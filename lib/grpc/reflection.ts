/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, `ServerReflectionInfo`) fed from
 * the descriptors protobuf-es embeds in the generated code: no `.proto` file is read at run
 * time, so the bundled server has reflection too. `grpcurl -plaintext HOST:PORT list` lists
 * every service of the files given, and `grpcurl … describe baremetal.v1.Machine` works.
 *
 * The reflection protocol itself is generated (`lib/gen/grpc/reflection/`) from the `.proto`
 * files of the npm package `@grpc/reflection` (`deno task proto` vendors them; that package's
 * service implementation reads them next to its sources at run time and cannot run from a
 * bundle).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  create,
  type DescFile,
  type DescMessage,
  type DescService,
  fromBinary,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  file_grpc_reflection_v1_reflection,
  ServerReflection as ServerReflectionV1,
  type ServerReflectionRequest as ServerReflectionRequestV1,
} from "../gen/grpc/reflection/v1/reflection_pb.ts";
import {
  file_grpc_reflection_v1alpha_reflection,
  ServerReflection as ServerReflectionV1alpha,
  type ServerReflectionRequest as ServerReflectionRequestV1alpha,
} from "../gen/grpc/reflection/v1alpha/reflection_pb.ts";

/** `grpc/reflection/v1/reflection.proto` (generated). */
export const file_grpc_reflection_v1: DescFile = file_grpc_reflection_v1_reflection;

/** `grpc/reflection/v1alpha/reflection.proto` (generated). */
export const file_grpc_reflection_v1alpha: DescFile = file_grpc_reflection_v1alpha_reflection;

/** The reflection services: `grpc.reflection.v1.ServerReflection` and the `v1alpha` one. */
export const REFLECTION_SERVICES: readonly DescService[] = [
  ServerReflectionV1,
  ServerReflectionV1alpha,
];

/**
 * The binary `FileDescriptorProto`s of `files` and of everything they import, each file once,
 * dependencies before the files that import them.
 *
 * @param files Generated file descriptors, e.g. `file_baremetal_v1_baremetal`.
 * @returns One encoded `google.protobuf.FileDescriptorProto` per file.
 *
 * @example
 * ```ts
 * import { file_baremetal_v1_baremetal } from "../gen/baremetal/v1/baremetal_pb.ts";
 * fileDescriptorProtos([file_baremetal_v1_baremetal]).length; // 2 (with timestamp.proto)
 * ```
 */
export function fileDescriptorProtos(files: readonly DescFile[]): Uint8Array[] {
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  const visit = (file: DescFile): void => {
    if (seen.has(file.proto.name)) return;
    seen.add(file.proto.name);
    for (const dependency of file.dependencies) visit(dependency);
    out.push(toBinary(FileDescriptorProtoSchema, file.proto));
  };
  for (const file of files) visit(file);
  return out;
}

/**
 * The grpc-js definition of a reflection service (one bidi-streaming method,
 * `ServerReflectionInfo`, with protobuf-es messages), for the server and for clients.
 *
 * @param service One of {@linkcode REFLECTION_SERVICES}.
 * @returns The definition.
 *
 * @example
 * ```ts ignore
 * const Client = grpc.makeGenericClientConstructor(reflectionServiceDefinition(REFLECTION_SERVICES[0]), "R");
 * ```
 */
export function reflectionServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const method = service.methods[0];
  const serialize = (schema: DescMessage) => (value: Message): Buffer => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
  const deserialize = (schema: DescMessage) => (bytes: Buffer): Message =>
    fromBinary(schema, bytes);
  return {
    [method.name]: {
      path: `/${service.typeName}/${method.name}`,
      requestStream: true,
      responseStream: true,
      requestSerialize: serialize(method.input),
      requestDeserialize: deserialize(method.input),
      responseSerialize: serialize(method.output),
      responseDeserialize: deserialize(method.output),
      originalName: method.localName,
    },
  };
}

/** Options of {@linkcode addReflection}. */
export interface ReflectionOptions {
  /**
   * Files to describe, e.g. `[file_baremetal_v1_baremetal]`; their imports are included. Every
   * service they declare is listed; the reflection files are always added.
   */
  files: readonly DescFile[];
  /**
   * Checks the metadata of every reflection call before it is served; throw to refuse it with
   * the status `toStatus` gives.
   *
   * @default every call is served
   */
  guard?: (metadata: grpc.Metadata) => void;
  /**
   * Maps what `guard` throws to the status the call ends with.
   *
   * @default UNAUTHENTICATED with the error's message
   */
  toStatus?: (error: unknown) => Partial<grpc.StatusObject>;
}

type ReflectionRequest = ServerReflectionRequestV1 | ServerReflectionRequestV1alpha;

/**
 * Registers the reflection services (`v1` and `v1alpha`) on `server`. They list the services
 * of `files` and of the reflection files, and answer `file_by_filename` and
 * `file_containing_symbol` (messages, enums, services, methods, fields) with the file and its
 * imports. Extensions are not indexed: those requests answer NOT_FOUND.
 *
 * @param server The server (anything with grpc-js' `addService`).
 * @param options Files and the guard of every call.
 *
 * @example
 * ```ts ignore
 * addReflection(server, { files: [file_baremetal_v1_baremetal, file_grpc_health_v1] });
 * ```
 */
export function addReflection(
  server: Pick<grpc.Server, "addService">,
  options: ReflectionOptions,
): void {
  const files = new Map<string, DescFile>();
  const symbols = new Map<string, DescFile>();
  const services: string[] = [];
  const index = (file: DescFile): void => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    for (const dependency of file.dependencies) index(dependency);
    for (const type of nestedTypes(file)) {
      symbols.set(type.typeName, file);
      if (type.kind === "message") {
        for (const field of type.fields) symbols.set(`${type.typeName}.${field.name}`, file);
      } else if (type.kind === "enum") {
        // Enum values are scoped like siblings of their enum.
        const scope = type.typeName.slice(0, type.typeName.lastIndexOf(".") + 1);
        for (const value of type.values) symbols.set(`${scope}${value.name}`, file);
      } else if (type.kind === "service") {
        for (const method of type.methods) symbols.set(`${type.typeName}.${method.name}`, file);
      }
    }
  };
  const described = [...options.files, file_grpc_reflection_v1, file_grpc_reflection_v1alpha];
  for (const file of described) index(file);
  for (const file of described) services.push(...file.services.map((s) => s.typeName));

  const respond = (service: DescService, request: ReflectionRequest): Message => {
    const file = (desc: DescFile | undefined, what: string) =>
      desc
        ? {
          case: "fileDescriptorResponse",
          value: { fileDescriptorProto: fileDescriptorProtos([desc]).reverse() },
        }
        : {
          case: "errorResponse",
          value: { errorCode: grpc.status.NOT_FOUND, errorMessage: what },
        };
    const r = request.messageRequest;
    let messageResponse: unknown;
    switch (r.case) {
      case "listServices":
        messageResponse = {
          case: "listServicesResponse",
          value: { service: services.map((name) => ({ name })) },
        };
        break;
      case "fileByFilename":
        messageResponse = file(files.get(r.value), `file "${r.value}" not found`);
        break;
      case "fileContainingSymbol":
        messageResponse = file(symbols.get(r.value), `symbol "${r.value}" not found`);
        break;
      case "fileContainingExtension":
        messageResponse = file(undefined, `extensions of "${r.value.containingType}" not found`);
        break;
      case "allExtensionNumbersOfType":
        messageResponse = symbols.has(r.value)
          ? { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value } }
          : file(undefined, `type "${r.value}" not found`);
        break;
      default:
        messageResponse = {
          case: "errorResponse",
          value: { errorCode: grpc.status.INVALID_ARGUMENT, errorMessage: "empty request" },
        };
    }
    const output = service.methods[0].output;
    return create(output, {
      validHost: request.host,
      originalRequest: request,
      messageResponse,
    } as never);
  };

  const { guard, toStatus = defaultGuardStatus } = options;
  for (const service of REFLECTION_SERVICES) {
    const method = service.methods[0];
    server.addService(reflectionServiceDefinition(service), {
      [method.name]: (call: grpc.ServerDuplexStream<ReflectionRequest, Message>) => {
        if (guard) {
          try {
            guard(call.metadata);
          } catch (error) {
            call.emit("error", toStatus(error));
            return;
          }
        }
        call.on("data", (request: ReflectionRequest) => call.write(respond(service, request)));
        call.on("end", () => call.end());
      },
    });
  }
}

function defaultGuardStatus(error: unknown): Partial<grpc.StatusObject> {
  return {
    code: grpc.status.UNAUTHENTICATED,
    details: error instanceof Error ? error.message : String(error),
  };
}
