/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, `ServerReflectionInfo`) fed from
 * the descriptors protobuf-es embeds in the generated code: no `.proto` file is read at run
 * time, so the bundled server has reflection too. `grpcurl -plaintext HOST:PORT list` lists
 * every service of the files given, and `grpcurl … describe baremetal.v1.Machine` works.
 *
 * The reflection protocol's own descriptors are embedded here (the files of the npm package
 * `@grpc/reflection`, whose service implementation reads `.proto` files next to its sources at
 * run time and cannot run from a bundle); `test/reflection_test.ts` checks they match it.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  create,
  createFileRegistry,
  type DescFile,
  type DescMessage,
  type DescService,
  fromBinary,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { base64Decode } from "@bufbuild/protobuf/wire";
import {
  type DescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";

/**
 * A file descriptor from the base64 of its binary `FileDescriptorProto` (without imports).
 *
 * @param base64 The encoded `google.protobuf.FileDescriptorProto`.
 * @param name The file name to give it, e.g. `grpc/health/v1/health.proto`.
 * @returns The file descriptor.
 *
 * @example
 * ```ts ignore
 * const file = embeddedFile(BASE64, "grpc/health/v1/health.proto");
 * ```
 */
export function embeddedFile(base64: string, name: string): DescFile {
  const proto = fromBinary(FileDescriptorProtoSchema, base64Decode(base64));
  proto.name = name;
  if (proto.syntax === "") proto.syntax = "proto3";
  qualifyTypeNames(proto);
  return createFileRegistry(proto, () => undefined).getFile(name)!;
}

/**
 * Makes every type reference of a self-contained file fully qualified (`.pkg.Type`), as
 * protobuf-es requires; proto-loader writes them relative to the package (`Type`).
 */
function qualifyTypeNames(file: FileDescriptorProto): void {
  const defined = new Set<string>();
  const collect = (scope: string, messages: DescriptorProto[], enums: { name: string }[]) => {
    for (const e of enums) defined.add(`${scope}.${e.name}`);
    for (const m of messages) {
      defined.add(`${scope}.${m.name}`);
      collect(`${scope}.${m.name}`, m.nestedType, m.enumType);
    }
  };
  const root = file.package === "" ? "" : `.${file.package}`;
  collect(root, file.messageType, file.enumType);
  const resolve = (scope: string, name: string): string => {
    if (name === "" || name.startsWith(".")) return name;
    for (let s = scope;; s = s.slice(0, s.lastIndexOf("."))) {
      if (defined.has(`${s}.${name}`)) return `${s}.${name}`;
      if (s === "") return name;
    }
  };
  const visit = (scope: string, messages: DescriptorProto[]) => {
    for (const m of messages) {
      const inner = `${scope}.${m.name}`;
      for (const field of m.field) field.typeName = resolve(inner, field.typeName);
      visit(inner, m.nestedType);
    }
  };
  visit(root, file.messageType);
  for (const service of file.service) {
    for (const method of service.method) {
      method.inputType = resolve(root, method.inputType);
      method.outputType = resolve(root, method.outputType);
    }
  }
}

/** `grpc/reflection/v1/reflection.proto`. */
export const file_grpc_reflection_v1: DescFile = embeddedFile(
  "ChhncnBjX3JlZmxlY3Rpb25fdjEucHJvdG8SEmdycGMucmVmbGVjdGlvbi52MSLlAQoXU2VydmVyUmVmbGVjdGlvblJl" +
    "cXVlc3QSDAoEaG9zdBgBIAEoCRIYCg5maWxlQnlGaWxlbmFtZRgDIAEoCUgAEh4KFGZpbGVDb250YWluaW5nU3ltYm9s" +
    "GAQgASgJSAASMwoXZmlsZUNvbnRhaW5pbmdFeHRlbnNpb24YBSABKAsyEEV4dGVuc2lvblJlcXVlc3RIABIjChlhbGxF" +
    "eHRlbnNpb25OdW1iZXJzT2ZUeXBlGAYgASgJSAASFgoMbGlzdFNlcnZpY2VzGAcgASgJSABCEAoObWVzc2FnZVJlcXVl" +
    "c3QiQwoQRXh0ZW5zaW9uUmVxdWVzdBIWCg5jb250YWluaW5nVHlwZRgBIAEoCRIXCg9leHRlbnNpb25OdW1iZXIYAiAB" +
    "KAUiyQIKGFNlcnZlclJlZmxlY3Rpb25SZXNwb25zZRIRCgl2YWxpZEhvc3QYASABKAkSMAoPb3JpZ2luYWxSZXF1ZXN0" +
    "GAIgASgLMhdTZXJ2ZXJSZWZsZWN0aW9uUmVxdWVzdBI4ChZmaWxlRGVzY3JpcHRvclJlc3BvbnNlGAQgASgLMhZGaWxl" +
    "RGVzY3JpcHRvclJlc3BvbnNlSAASPgobYWxsRXh0ZW5zaW9uTnVtYmVyc1Jlc3BvbnNlGAUgASgLMhdFeHRlbnNpb25O" +
    "dW1iZXJSZXNwb25zZUgAEjMKFGxpc3RTZXJ2aWNlc1Jlc3BvbnNlGAYgASgLMhNMaXN0U2VydmljZVJlc3BvbnNlSAAS" +
    "JgoNZXJyb3JSZXNwb25zZRgHIAEoCzINRXJyb3JSZXNwb25zZUgAQhEKD21lc3NhZ2VSZXNwb25zZSI1ChZGaWxlRGVz" +
    "Y3JpcHRvclJlc3BvbnNlEhsKE2ZpbGVEZXNjcmlwdG9yUHJvdG8YASADKAwiSAoXRXh0ZW5zaW9uTnVtYmVyUmVzcG9u" +
    "c2USFAoMYmFzZVR5cGVOYW1lGAEgASgJEhcKD2V4dGVuc2lvbk51bWJlchgCIAMoBSI3ChNMaXN0U2VydmljZVJlc3Bv" +
    "bnNlEiAKB3NlcnZpY2UYASADKAsyD1NlcnZpY2VSZXNwb25zZSIfCg9TZXJ2aWNlUmVzcG9uc2USDAoEbmFtZRgBIAEo" +
    "CSI4Cg1FcnJvclJlc3BvbnNlEhEKCWVycm9yQ29kZRgBIAEoBRIUCgxlcnJvck1lc3NhZ2UYAiABKAkyiQEKEFNlcnZl" +
    "clJlZmxlY3Rpb24SdQoUU2VydmVyUmVmbGVjdGlvbkluZm8SKy5ncnBjLnJlZmxlY3Rpb24udjEuU2VydmVyUmVmbGVj" +
    "dGlvblJlcXVlc3QaLC5ncnBjLnJlZmxlY3Rpb24udjEuU2VydmVyUmVmbGVjdGlvblJlc3BvbnNlKAEwAUJmChVpby5n" +
    "cnBjLnJlZmxlY3Rpb24udjFCFVNlcnZlclJlZmxlY3Rpb25Qcm90b1ABWjRnb29nbGUuZ29sYW5nLm9yZy9ncnBjL3Jl" +
    "ZmxlY3Rpb24vZ3JwY19yZWZsZWN0aW9uX3YxYgZwcm90bzM=",
  "grpc/reflection/v1/reflection.proto",
);

/** `grpc/reflection/v1alpha/reflection.proto`. */
export const file_grpc_reflection_v1alpha: DescFile = embeddedFile(
  "Ch1ncnBjX3JlZmxlY3Rpb25fdjFhbHBoYS5wcm90bxIXZ3JwYy5yZWZsZWN0aW9uLnYxYWxwaGEi5QEKF1NlcnZlclJl" +
    "ZmxlY3Rpb25SZXF1ZXN0EgwKBGhvc3QYASABKAkSGAoOZmlsZUJ5RmlsZW5hbWUYAyABKAlIABIeChRmaWxlQ29udGFp" +
    "bmluZ1N5bWJvbBgEIAEoCUgAEjMKF2ZpbGVDb250YWluaW5nRXh0ZW5zaW9uGAUgASgLMhBFeHRlbnNpb25SZXF1ZXN0" +
    "SAASIwoZYWxsRXh0ZW5zaW9uTnVtYmVyc09mVHlwZRgGIAEoCUgAEhYKDGxpc3RTZXJ2aWNlcxgHIAEoCUgAQhAKDm1l" +
    "c3NhZ2VSZXF1ZXN0IkMKEEV4dGVuc2lvblJlcXVlc3QSFgoOY29udGFpbmluZ1R5cGUYASABKAkSFwoPZXh0ZW5zaW9u" +
    "TnVtYmVyGAIgASgFIskCChhTZXJ2ZXJSZWZsZWN0aW9uUmVzcG9uc2USEQoJdmFsaWRIb3N0GAEgASgJEjAKD29yaWdp" +
    "bmFsUmVxdWVzdBgCIAEoCzIXU2VydmVyUmVmbGVjdGlvblJlcXVlc3QSOAoWZmlsZURlc2NyaXB0b3JSZXNwb25zZRgE" +
    "IAEoCzIWRmlsZURlc2NyaXB0b3JSZXNwb25zZUgAEj4KG2FsbEV4dGVuc2lvbk51bWJlcnNSZXNwb25zZRgFIAEoCzIX" +
    "RXh0ZW5zaW9uTnVtYmVyUmVzcG9uc2VIABIzChRsaXN0U2VydmljZXNSZXNwb25zZRgGIAEoCzITTGlzdFNlcnZpY2VS" +
    "ZXNwb25zZUgAEiYKDWVycm9yUmVzcG9uc2UYByABKAsyDUVycm9yUmVzcG9uc2VIAEIRCg9tZXNzYWdlUmVzcG9uc2Ui" +
    "NQoWRmlsZURlc2NyaXB0b3JSZXNwb25zZRIbChNmaWxlRGVzY3JpcHRvclByb3RvGAEgAygMIkgKF0V4dGVuc2lvbk51" +
    "bWJlclJlc3BvbnNlEhQKDGJhc2VUeXBlTmFtZRgBIAEoCRIXCg9leHRlbnNpb25OdW1iZXIYAiADKAUiNwoTTGlzdFNl" +
    "cnZpY2VSZXNwb25zZRIgCgdzZXJ2aWNlGAEgAygLMg9TZXJ2aWNlUmVzcG9uc2UiHwoPU2VydmljZVJlc3BvbnNlEgwK" +
    "BG5hbWUYASABKAkiOAoNRXJyb3JSZXNwb25zZRIRCgllcnJvckNvZGUYASABKAUSFAoMZXJyb3JNZXNzYWdlGAIgASgJ" +
    "MpMBChBTZXJ2ZXJSZWZsZWN0aW9uEn8KFFNlcnZlclJlZmxlY3Rpb25JbmZvEjAuZ3JwYy5yZWZsZWN0aW9uLnYxYWxw" +
    "aGEuU2VydmVyUmVmbGVjdGlvblJlcXVlc3QaMS5ncnBjLnJlZmxlY3Rpb24udjFhbHBoYS5TZXJ2ZXJSZWZsZWN0aW9u" +
    "UmVzcG9uc2UoATABYgZwcm90bzM=",
  "grpc/reflection/v1alpha/reflection.proto",
);

/** The reflection services: `grpc.reflection.v1.ServerReflection` and the `v1alpha` one. */
export const REFLECTION_SERVICES: readonly DescService[] = [
  file_grpc_reflection_v1.services[0],
  file_grpc_reflection_v1alpha.services[0],
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

interface ReflectionRequest extends Message {
  host: string;
  messageRequest:
    | {
      case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType";
      value: string;
    }
    | { case: "listServices"; value: string }
    | { case: "fileContainingExtension"; value: { containingType: string } }
    | { case: undefined; value?: undefined };
}

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
