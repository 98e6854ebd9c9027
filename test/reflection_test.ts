import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { create, type DescService, fromBinary, type Message } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { REFLECTION_SERVICES, reflectionServiceDefinition } from "../lib/grpc/reflection.ts";
import { SANITIZE, testServer } from "./helpers.ts";

interface Response {
  messageResponse:
    | { case: "listServicesResponse"; value: { service: { name: string }[] } }
    | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
    | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } }
    | { case: undefined };
}

/** Sends `requests` on one ServerReflectionInfo stream and collects one response each. */
async function reflect(
  address: string,
  service: DescService,
  requests: Record<string, unknown>[],
  metadata = new grpc.Metadata(),
): Promise<Response[]> {
  const definition = reflectionServiceDefinition(service);
  const method = Object.values(definition)[0];
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    const call = client.makeBidiStreamRequest<Message, Message>(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      metadata,
    );
    const input = service.methods[0].input;
    for (const request of requests) {
      call.write(create(input, { messageRequest: request } as never));
    }
    call.end();
    const responses: Response[] = [];
    for await (const response of call) responses.push(response as unknown as Response);
    return responses;
  } finally {
    client.close();
  }
}

Deno.test("reflection lists every service, over v1 and v1alpha", SANITIZE, async () => {
  await using server = await testServer();
  for (const service of REFLECTION_SERVICES) {
    const [response] = await reflect(server.address, service, [
      { case: "listServices", value: "*" },
    ]);
    assert.equal(response.messageResponse.case, "listServicesResponse");
    const names = response.messageResponse.value.service.map((s) => s.name).sort();
    assert.deepEqual(names, [
      "baremetal.v1.MachineService",
      "baremetal.v1.OperationService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
  }
});

Deno.test(
  "reflection describes baremetal.v1.Machine from the generated descriptors",
  SANITIZE,
  async () => {
    await using server = await testServer();
    const [bySymbol, byMethod, byFile, missing] = await reflect(
      server.address,
      REFLECTION_SERVICES[0],
      [
        { case: "fileContainingSymbol", value: "baremetal.v1.Machine" },
        { case: "fileContainingSymbol", value: "baremetal.v1.MachineService.GetMachine" },
        { case: "fileByFilename", value: "google/protobuf/timestamp.proto" },
        { case: "fileContainingSymbol", value: "baremetal.v1.Nope" },
      ],
    );
    assert.equal(bySymbol.messageResponse.case, "fileDescriptorResponse");
    const files = bySymbol.messageResponse.value.fileDescriptorProto.map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes)
    );
    assert.deepEqual(files.map((f) => f.name), [
      "baremetal/v1/baremetal.proto",
      "google/protobuf/timestamp.proto",
    ]);
    assert.ok(files[0].messageType.some((m) => m.name === "Machine"));
    assert.ok(files[0].dependency.includes("google/protobuf/timestamp.proto"));
    assert.equal(byMethod.messageResponse.case, "fileDescriptorResponse");
    assert.equal(byFile.messageResponse.case, "fileDescriptorResponse");
    assert.equal(missing.messageResponse.case, "errorResponse");
    assert.equal(missing.messageResponse.value.errorCode, grpc.status.NOT_FOUND);
  },
);

Deno.test("reflection describes the generated health and reflection files", SANITIZE, async () => {
  await using server = await testServer();
  const responses = await reflect(server.address, REFLECTION_SERVICES[1], [
    { case: "fileContainingSymbol", value: "grpc.health.v1.Health" },
    { case: "fileByFilename", value: "grpc/reflection/v1/reflection.proto" },
    { case: "fileContainingSymbol", value: "grpc.reflection.v1alpha.ServerReflectionRequest" },
  ]);
  const names = responses.map((response) => {
    assert.equal(response.messageResponse.case, "fileDescriptorResponse");
    return response.messageResponse.value.fileDescriptorProto.map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes).name
    );
  });
  assert.deepEqual(names, [
    ["grpc/health/v1/health.proto"],
    ["grpc/reflection/v1/reflection.proto"],
    ["grpc/reflection/v1alpha/reflection.proto"],
  ]);
});
