import assert from "node:assert/strict";
import { Code, connectClient } from "../lib/client/mod.ts";
import { startServer } from "../lib/grpc/server.ts";
import { HealthService, ServingStatus } from "../lib/grpc/health.ts";
import { rejectsWithCode, SANITIZE, testEngine } from "./helpers.ts";

/** The health client, typed for the two methods used here. */
interface HealthClient {
  check(request: { service: string }): Promise<{ status: number }>;
  watch(request: { service: string }): AsyncIterableIterator<{ status: number }>;
  close(): void;
}

function healthClient(address: string): HealthClient {
  return connectClient(HealthService, address) as unknown as HealthClient;
}

const SERVICES = ["", "baremetal.v1.MachineService", "baremetal.v1.OperationService"];

Deno.test("health: SERVING for the server and both services once listening", SANITIZE, async () => {
  await using server = await startServer({ port: 0, engine: testEngine() });
  const client = healthClient(server.address);
  try {
    for (const service of SERVICES) {
      assert.equal((await client.check({ service })).status, ServingStatus.SERVING, service);
    }
    await rejectsWithCode(client.check({ service: "nope.Service" }), Code.NotFound);
  } finally {
    client.close();
  }
});

Deno.test(
  "health: a Watch sees NOT_SERVING when shutdown starts, then ends",
  SANITIZE,
  async () => {
    const server = await startServer({ port: 0, engine: testEngine() });
    const client = healthClient(server.address);
    try {
      const watches = SERVICES.map((service) => client.watch({ service }));
      for (const watch of watches) {
        assert.equal((await watch.next()).value?.status, ServingStatus.SERVING);
      }
      const stopping = server.shutdown();
      for (const watch of watches) {
        assert.equal((await watch.next()).value?.status, ServingStatus.NOT_SERVING);
        assert.equal((await watch.next()).done, true);
      }
      await stopping;
    } finally {
      client.close();
      await server.shutdown();
    }
  },
);
