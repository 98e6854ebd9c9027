import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { create, type DescService } from "@bufbuild/protobuf";
import type {
  CallContext,
  CallHandler,
  CallInfo,
  ServiceImpl,
} from "../lib/grpc/handler_contract.ts";
import { defaultToStatus, type GrpcStatus } from "../lib/grpc/handler_status.ts";
import { createServiceDefinition } from "../lib/grpc/service_definition.ts";
import {
  createServiceHandlers,
  type ServiceHandlersOptions,
} from "../lib/grpc/service_handlers.ts";
import { rejectsWithCode, SANITIZE } from "./helpers.ts";
import { type Client, Code, connectClient } from "../lib/client/mod.ts";
import {
  GetMachineRequestSchema,
  LogChunkSchema,
  MachineSchema,
  MachineService,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";

// ----- fixtures ----------------------------------------------------------------------------------

/** A domain-like error, to prove that `toStatus` is the one place errors become statuses. */
class MachineExistsError extends Error {
  constructor(readonly machineId: string) {
    super(`machine "${machineId}" already exists`);
    this.name = "MachineExistsError";
  }
}

function testToStatus(err: unknown): GrpcStatus {
  if (err instanceof MachineExistsError) {
    const metadata = new grpc.Metadata();
    metadata.set("machine-id", err.machineId);
    return { code: grpc.status.ALREADY_EXISTS, details: err.message, metadata };
  }
  if (err instanceof DOMException && err.name === "AbortError") {
    return { code: grpc.status.UNAVAILABLE, details: `Server is stopping: ${err.message}` };
  }
  return defaultToStatus(err);
}

function notUsed(): Promise<never> {
  return Promise.reject(new Error("Not used by this test"));
}

function machineService(
  overrides: Partial<ServiceImpl<typeof MachineService>> = {},
): ServiceImpl<typeof MachineService> {
  return {
    registerMachine: notUsed,
    getMachine: notUsed,
    listMachines: notUsed,
    updateMachine: notUsed,
    rebootMachine: notUsed,
    reimageMachine: notUsed,
    enterMaintenance: notUsed,
    exitMaintenance: notUsed,
    cancelOperation: notUsed,
    ...overrides,
  };
}

function operationService(
  overrides: Partial<ServiceImpl<typeof OperationService>> = {},
): ServiceImpl<typeof OperationService> {
  return {
    getOperation: notUsed,
    listOperations: notUsed,
    watchOperations: notUsed,
    streamOperationLogs: notUsed,
    ...overrides,
  };
}

interface TestServer extends AsyncDisposable {
  readonly address: string;
}

interface Implementations {
  machines?: ServiceImpl<typeof MachineService>;
  operations?: ServiceImpl<typeof OperationService>;
}

/** Starts a grpc-js server on an ephemeral loopback port; disposing it force-closes it. */
async function startServer(
  impl: Implementations,
  options: ServiceHandlersOptions = {},
): Promise<TestServer> {
  const server = new grpc.Server();
  const handlerOptions = { toStatus: testToStatus, ...options };
  server.addService(
    createServiceDefinition(MachineService),
    createServiceHandlers(MachineService, impl.machines ?? machineService(), handlerOptions),
  );
  server.addService(
    createServiceDefinition(OperationService),
    createServiceHandlers(OperationService, impl.operations ?? operationService(), handlerOptions),
  );
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(err);
      else resolve(port);
    });
  });
  return {
    address: `127.0.0.1:${port}`,
    // tryShutdown calls back once the listener and every session are closed, which
    // forceShutdown brings about at once: the test ends with no HTTP/2 op left behind.
    [Symbol.asyncDispose]: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        server.forceShutdown();
      }),
  };
}

/** Safety net only: fails with a clear message instead of hanging when an awaited event never comes. */
async function within<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ----- createServiceDefinition() -----------------------------------------------------------------

Deno.test(
  "createServiceDefinition() derives paths, streaming flags and codecs from the descriptor",
  SANITIZE,
  () => {
    const machines = createServiceDefinition(MachineService);
    assert.deepEqual(Object.keys(machines), MachineService.methods.map((method) => method.name));
    const getMachine = machines.GetMachine;
    assert.equal(getMachine.path, "/baremetal.v1.MachineService/GetMachine");
    assert.equal(getMachine.originalName, "getMachine");
    assert.equal(getMachine.requestStream, false);
    assert.equal(getMachine.responseStream, false);

    const logs = createServiceDefinition(OperationService).StreamOperationLogs;
    assert.equal(logs.path, "/baremetal.v1.OperationService/StreamOperationLogs");
    assert.equal(logs.requestStream, false);
    assert.equal(logs.responseStream, true);

    const request = create(GetMachineRequestSchema, { machineId: "m-1" });
    const bytes = getMachine.requestSerialize(request);
    assert.ok(bytes instanceof Uint8Array);
    assert.deepEqual(getMachine.requestDeserialize(bytes), request);
  },
);

Deno.test("createServiceDefinition() rejects a client-streaming method", SANITIZE, () => {
  const method = { ...MachineService.methods[0], methodKind: "client_streaming" };
  const service = { ...MachineService, methods: [method] } as unknown as DescService;
  assert.throws(
    () => createServiceDefinition(service),
    new TypeError(
      'Cannot adapt method "baremetal.v1.MachineService.RegisterMachine" as only unary and ' +
        'server-streaming methods are supported: current value is "client_streaming"',
    ),
  );
});

/** Calls GetMachine("m-1"), cancels it once its handler started, and expects CANCELLED. */
async function cancelOnceStarted(
  client: Client<typeof MachineService>,
  started: Promise<void>,
): Promise<void> {
  const controller = new AbortController();
  const pending = client.getMachine({ machineId: "m-1" }, { signal: controller.signal });
  await within(started, "the handler to start");
  controller.abort();
  await rejectsWithCode(pending, Code.Canceled);
}

// ----- unary calls -------------------------------------------------------------------------------

Deno.test(
  "connectClient() resolves a unary call with the handler's response",
  SANITIZE,
  async () => {
    await using server = await startServer({
      machines: machineService({
        getMachine(request, call) {
          return Promise.resolve(create(MachineSchema, {
            machineId: request.machineId,
            labels: {
              caller: String(call.metadata.get("x-caller")[0]),
              peerIsLoopback: String(call.peer.startsWith("127.0.0.1:")),
            },
          }));
        },
      }),
    });
    using client = connectClient(MachineService, server.address);
    const machine = await client.getMachine({ machineId: "m-1" }, {
      headers: { "x-caller": "test" },
    });

    assert.equal(machine.machineId, "m-1");
    assert.deepEqual(machine.labels, { caller: "test", peerIsLoopback: "true" });
  },
);

Deno.test(
  "createServiceHandlers() ends a failed unary call with the status from toStatus",
  SANITIZE,
  async () => {
    await using server = await startServer({
      machines: machineService({
        registerMachine(request) {
          return Promise.reject(new MachineExistsError(request.machine?.machineId ?? ""));
        },
      }),
    });
    using client = connectClient(MachineService, server.address);

    const err = await rejectsWithCode(
      client.registerMachine({ machine: { machineId: "m-1" } }),
      Code.AlreadyExists,
      'machine "m-1" already exists',
    );
    assert.deepEqual(err.metadata.get("machine-id"), "m-1");
  },
);

Deno.test(
  "createServiceHandlers() maps what is not a domain error to INTERNAL",
  SANITIZE,
  async (t) => {
    await using server = await startServer({
      machines: machineService({
        // deno-lint-ignore require-await
        async getMachine(request) {
          // Exactly what the test is about: a handler that throws something that is not an Error.
          throw { machineId: request.machineId };
        },
        listMachines() {
          // A handler that is not async and throws synchronously.
          throw new RangeError("Page size out of range");
        },
        updateMachine() {
          return Promise.reject("plain string");
        },
      }),
    });
    using client = connectClient(MachineService, server.address);

    await t.step("a thrown object", async () => {
      await rejectsWithCode(
        client.getMachine({ machineId: "m-1" }),
        Code.Internal,
        "Handler failed with a non-Error value: [object Object]",
      );
    });
    await t.step("a thrown string", async () => {
      await rejectsWithCode(
        client.updateMachine({}),
        Code.Internal,
        'Handler failed with a non-Error value: "plain string"',
      );
    });
    await t.step("a synchronous throw", async () => {
      await rejectsWithCode(
        client.listMachines({}),
        Code.Internal,
        "Page size out of range",
      );
    });
  },
);

Deno.test(
  "createServiceHandlers() falls back to INTERNAL when toStatus fails",
  SANITIZE,
  async () => {
    await using server = await startServer(
      {
        machines: machineService({
          getMachine: () => Promise.reject(new Error("original failure")),
        }),
      },
      {
        toStatus: () => {
          throw new Error("mapping bug");
        },
      },
    );
    using client = connectClient(MachineService, server.address);

    await rejectsWithCode(
      client.getMachine({ machineId: "m-1" }),
      Code.Internal,
      "original failure",
    );
  },
);

Deno.test(
  "createServiceHandlers() leaves the signal of a finished call alone",
  SANITIZE,
  async () => {
    const signals: AbortSignal[] = [];
    await using server = await startServer({
      machines: machineService({
        getMachine(request, call) {
          signals.push(call.signal);
          return Promise.resolve(create(MachineSchema, { machineId: request.machineId }));
        },
      }),
    });
    using client = connectClient(MachineService, server.address);

    await client.getMachine({ machineId: "m-1" });
    // grpc-js emits `cancelled` right after it sends a status; by the time a second call on the
    // same connection is served, the first call's event has long been delivered.
    await client.getMachine({ machineId: "m-2" });

    assert.equal(signals.length, 2);
    assert.equal(signals[0].aborted, false);
  },
);

Deno.test(
  "createServiceHandlers() gives a signal first read after the call settled that stays unaborted",
  SANITIZE,
  async () => {
    const contexts: CallContext[] = [];
    await using server = await startServer({
      machines: machineService({
        getMachine(request, call) {
          contexts.push(call);
          return Promise.resolve(create(MachineSchema, { machineId: request.machineId }));
        },
      }),
    });
    using client = connectClient(MachineService, server.address);

    await client.getMachine({ machineId: "m-1" });
    // As above: the first call's `cancelled` event has been delivered by now.
    await client.getMachine({ machineId: "m-2" });

    assert.equal(contexts.length, 2);
    assert.equal(contexts[0].signal.aborted, false);
  },
);

Deno.test(
  "createServiceHandlers() aborts a signal first read after the client cancelled",
  SANITIZE,
  async () => {
    const started = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const seen = Promise.withResolvers<AbortSignal>();
    await using server = await startServer({
      machines: machineService({
        async getMachine(request, call) {
          // The barrier call (below) is answered at once.
          if (request.machineId !== "m-1") return create(MachineSchema, { machineId: "barrier" });
          started.resolve();
          // The signal is not read until the client has given up on the call.
          await release.promise;
          seen.resolve(call.signal);
          return create(MachineSchema, { machineId: request.machineId });
        },
      }),
    });
    using client = connectClient(MachineService, server.address);
    await cancelOnceStarted(client, started.promise);
    // The cancel travels as RST_STREAM; a later call on the same connection is answered only
    // after the server took it in (frames are processed in order).
    await client.getMachine({ machineId: "barrier" });
    release.resolve();

    const signal = await within(seen.promise, "the handler to read its signal");
    assert.equal(signal.aborted, true);
    assert.ok(signal.reason instanceof DOMException);
    assert.equal(signal.reason.name, "AbortError");
  },
);

Deno.test(
  "createServiceHandlers() aborts a signal first read after shutdown with its reason",
  SANITIZE,
  async () => {
    const shutdown = new AbortController();
    const reason = new DOMException("Server shutdown", "AbortError");
    const started = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    await using server = await startServer({
      machines: machineService({
        async getMachine(_request, call) {
          started.resolve();
          await release.promise;
          throw call.signal.reason;
        },
      }),
    }, { signal: shutdown.signal });
    using client = connectClient(MachineService, server.address);

    const pending = client.getMachine({ machineId: "m-1" });
    await within(started.promise, "the handler to start");
    shutdown.abort(reason);
    release.resolve();

    // testToStatus maps an AbortError to UNAVAILABLE with its message.
    await rejectsWithCode(
      pending,
      Code.Unavailable,
      "Server is stopping: Server shutdown",
    );
  },
);

Deno.test(
  "createServiceHandlers() ends a unary call whose handler throws before returning a promise",
  SANITIZE,
  async () => {
    await using server = await startServer({
      machines: machineService({
        getMachine(request) {
          throw new MachineExistsError(request.machineId);
        },
      }),
    });
    using client = connectClient(MachineService, server.address);

    await rejectsWithCode(
      client.getMachine({ machineId: "m-1" }),
      Code.AlreadyExists,
      'machine "m-1" already exists',
    );
  },
);

Deno.test("connectClient() cancels a unary call when its signal aborts", SANITIZE, async () => {
  const started = Promise.withResolvers<void>();
  const serverAborted = Promise.withResolvers<unknown>();
  await using server = await startServer({
    machines: machineService({
      getMachine(_request, call) {
        call.signal.addEventListener("abort", () => serverAborted.resolve(call.signal.reason), {
          once: true,
        });
        started.resolve();
        return new Promise((_resolve, reject) => {
          call.signal.addEventListener("abort", () => reject(call.signal.reason), { once: true });
        });
      },
    }),
  });
  using client = connectClient(MachineService, server.address);
  await cancelOnceStarted(client, started.promise);
  const reason = await within(serverAborted.promise, "the handler's signal to abort");
  assert.ok(reason instanceof DOMException);
  assert.equal(reason.name, "AbortError");
});

Deno.test("createServiceHandlers() applies the wrapper to every call", SANITIZE, async () => {
  const seen: string[] = [];
  function recording<Req, Res, Ctx extends CallContext>(
    info: CallInfo,
    next: CallHandler<Req, Res, Ctx>,
  ): CallHandler<Req, Res, Ctx> {
    return async (request, context) => {
      try {
        const response = await next(request, context);
        seen.push(`${info.service}/${info.method} ${info.kind} ok`);
        return response;
      } catch (err) {
        seen.push(`${info.service}/${info.method} ${info.kind} ${(err as Error).name}`);
        throw err;
      }
    };
  }
  await using server = await startServer({
    machines: machineService({
      getMachine: ({ machineId }) => Promise.resolve(create(MachineSchema, { machineId })),
      registerMachine: () => Promise.reject(new MachineExistsError("m-1")),
    }),
    operations: operationService({
      streamOperationLogs: (_request, call) => call.send(create(LogChunkSchema, { seq: 1n })),
    }),
  }, { wrap: recording });
  using machines = connectClient(MachineService, server.address);
  using operations = connectClient(OperationService, server.address);

  await machines.getMachine({ machineId: "m-1" });
  await rejectsWithCode(machines.registerMachine({}), Code.AlreadyExists);
  const chunks = await Array.fromAsync(operations.streamOperationLogs({ operationId: "op-1" }));

  assert.equal(chunks.length, 1);
  assert.deepEqual(seen, [
    "baremetal.v1.MachineService/GetMachine unary ok",
    "baremetal.v1.MachineService/RegisterMachine unary MachineExistsError",
    "baremetal.v1.OperationService/StreamOperationLogs server_streaming ok",
  ]);
});

// ----- server-streaming calls --------------------------------------------------------------------

Deno.test(
  "connectClient() streams every message in order while send() honours backpressure",
  SANITIZE,
  async () => {
    const total = 5_000;
    let slowSends = 0;
    await using server = await startServer({
      operations: operationService({
        async streamOperationLogs(request, call) {
          for (let seq = 0; seq < total; seq++) {
            const chunk = create(LogChunkSchema, {
              operationId: request.operationId,
              seq: BigInt(seq),
              data: new Uint8Array(1024).fill(seq % 256),
            });
            let sent = false;
            const pending = call.send(chunk).then(() => {
              sent = true;
            });
            // A send that grpc-js accepted at once settles within this microtask turn; one that
            // waits for `drain` cannot, as `drain` needs I/O.
            await null;
            if (!sent) slowSends++;
            await pending;
          }
        },
      }),
    });
    using client = connectClient(OperationService, server.address);

    let expected = 0;
    for await (const chunk of client.streamOperationLogs({ operationId: "op-1" })) {
      assert.equal(chunk.seq, BigInt(expected));
      assert.equal(chunk.operationId, "op-1");
      assert.equal(chunk.data.length, 1024);
      assert.equal(chunk.data[1023], expected % 256);
      expected++;
    }

    assert.equal(expected, total);
    assert.ok(slowSends > 0, "send() never waited for drain: backpressure was not exercised");
  },
);

Deno.test(
  "send() hands messages under the stream's byte budget to HTTP/2 without waiting",
  SANITIZE,
  async () => {
    const total = 200;
    let waited = 0;
    await using server = await startServer({
      operations: operationService({
        async streamOperationLogs(request, call) {
          for (let seq = 0; seq < total; seq++) {
            let sent = false;
            const pending = call.send(
              create(LogChunkSchema, { operationId: request.operationId, seq: BigInt(seq) }),
            ).then(() => {
              sent = true;
            });
            // grpc-js' own stream takes 16 messages before write() returns false; a send that
            // waited for `drain` there could not settle within this microtask turn.
            await null;
            if (!sent) waited++;
            await pending;
          }
        },
      }),
    });
    using client = connectClient(OperationService, server.address);

    let received = 0;
    for await (const chunk of client.streamOperationLogs({ operationId: "op-1" })) {
      assert.equal(chunk.seq, BigInt(received++));
    }
    assert.equal(received, total);
    assert.equal(waited, 0, `${waited} of ${total} sends waited`);
  },
);

Deno.test(
  "connectClient() cancels the server handler when the consumer leaves the stream early",
  SANITIZE,
  async () => {
    const serverAborted = Promise.withResolvers<unknown>();
    const handlerSettled = Promise.withResolvers<unknown>();
    await using server = await startServer({
      operations: operationService({
        async streamOperationLogs(_request, call) {
          call.signal.addEventListener("abort", () => serverAborted.resolve(call.signal.reason), {
            once: true,
          });
          try {
            for (let seq = 0n;; seq++) {
              await call.send(create(LogChunkSchema, { seq, data: new Uint8Array(1024) }));
            }
          } catch (err) {
            handlerSettled.resolve(err);
            throw err;
          }
        },
      }),
    });
    using client = connectClient(OperationService, server.address);

    const received: bigint[] = [];
    for await (const chunk of client.streamOperationLogs({ operationId: "op-1" })) {
      received.push(chunk.seq);
      if (received.length === 3) break;
    }

    assert.deepEqual(received, [0n, 1n, 2n]);
    const reason = await within(serverAborted.promise, "the handler's signal to abort");
    assert.ok(reason instanceof DOMException);
    assert.equal(reason.name, "AbortError");
    // send() rejects with the signal's reason, which ends the endless handler.
    assert.equal(await within(handlerSettled.promise, "the handler to settle"), reason);
  },
);

Deno.test(
  "createServiceHandlers() ends open streams with the toStatus of the shutdown reason",
  SANITIZE,
  async () => {
    const shutdown = new AbortController();
    await using server = await startServer({
      operations: operationService({
        async streamOperationLogs(_request, call) {
          for (let seq = 0n; seq < 3n; seq++) await call.send(create(LogChunkSchema, { seq }));
          await new Promise((_resolve, reject) => {
            call.signal.addEventListener("abort", () => reject(call.signal.reason), { once: true });
          });
        },
      }),
    }, { signal: shutdown.signal });
    using client = connectClient(OperationService, server.address);

    const received: bigint[] = [];
    const consume = async (): Promise<void> => {
      for await (const chunk of client.streamOperationLogs({ operationId: "op-1" })) {
        received.push(chunk.seq);
        if (received.length === 3) {
          shutdown.abort(new DOMException("Server shutdown", "AbortError"));
        }
      }
    };

    await rejectsWithCode(
      consume(),
      Code.Unavailable,
      "Server is stopping: Server shutdown",
    );
    assert.deepEqual(received, [0n, 1n, 2n]);
  },
);

Deno.test(
  "createServiceHandlers() ends a failed stream with the status from toStatus",
  SANITIZE,
  async () => {
    await using server = await startServer({
      operations: operationService({
        async streamOperationLogs(request, call) {
          await call.send(create(LogChunkSchema, { seq: 0n }));
          throw new MachineExistsError(request.operationId);
        },
      }),
    });
    using client = connectClient(OperationService, server.address);

    const received: bigint[] = [];
    const consume = async (): Promise<void> => {
      for await (const chunk of client.streamOperationLogs({ operationId: "op-1" })) {
        received.push(chunk.seq);
      }
    };

    const err = await rejectsWithCode(
      consume(),
      Code.AlreadyExists,
      'machine "op-1" already exists',
    );
    assert.deepEqual(received, [0n]);
    assert.deepEqual(err.metadata.get("machine-id"), "op-1");
  },
);
