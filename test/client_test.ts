/**
 * The node:http2 gRPC client against a bare HTTP/2 server that answers exactly what each test
 * needs (frames split or packed, trailers-only errors, foreign responses, dropped connections),
 * and against our real server for the end-to-end path. The everyday behaviour (typed calls,
 * cancellation, streams with backpressure) is also exercised by every other gRPC test, which
 * all use this client.
 */

import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { Buffer } from "node:buffer";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  type LogChunk,
  LogChunkSchema,
  MachineSchema,
  MachineService,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { ErrorInfoSchema } from "../lib/gen/google/rpc/error_details_pb.ts";
import { StatusSchema } from "../lib/gen/google/rpc/status_pb.ts";
import { createClient, MAX_RECEIVE_MESSAGE_BYTES, RpcError } from "../lib/grpc/client.ts";
import { errorInfoOf } from "../lib/grpc/error_details.ts";
import { startServer } from "../lib/grpc/server.ts";
import { SANITIZE, testEngine } from "./helpers.ts";

const OK_TRAILERS = { "grpc-status": "0" };
const GRPC_HEADERS = { ":status": 200, "content-type": "application/grpc" };

/** A length-prefixed gRPC message. */
function frame(bytes: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out[0] = flags;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

interface RawServer extends AsyncDisposable {
  address: string;
  /** Request headers of every stream, in arrival order. */
  requests: http2.IncomingHttpHeaders[];
}

/** A plaintext HTTP/2 server whose every stream `answer` handles. */
async function rawServer(
  answer: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<RawServer> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  const requests: http2.IncomingHttpHeaders[] = [];
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    requests.push(headers);
    // The request body is not needed, but must be read for the stream to finish.
    stream.resume();
    answer(stream, headers);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    requests,
    async [Symbol.asyncDispose]() {
      for (const session of sessions) session.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Rejects with an RpcError of `code` whose details match `details`. */
async function rejectsWith(promise: Promise<unknown>, code: number, details?: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof RpcError, `not an RpcError: ${error}`);
    assert.equal(error.code, code, error.message);
    if (details) assert.match(error.details, details);
    return true;
  });
}

async function collect(stream: AsyncIterable<LogChunk>): Promise<string[]> {
  const lines: string[] = [];
  for await (const chunk of stream) lines.push(new TextDecoder().decode(chunk.data));
  return lines;
}

const chunk = (text: string): Uint8Array =>
  toBinary(LogChunkSchema, create(LogChunkSchema, { data: new TextEncoder().encode(text) }));

Deno.test(
  "client: messages packed into one DATA frame or split across many arrive whole and in order",
  SANITIZE,
  async () => {
    const big = "x".repeat(100_000); // larger than one HTTP/2 frame (16 KiB)
    await using server = await rawServer((stream) => {
      stream.respond(GRPC_HEADERS, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
      stream.write(Buffer.concat([frame(chunk("one")), frame(chunk("two"))]));
      const third = frame(chunk("three"));
      for (const byte of third) stream.write(Buffer.from([byte]));
      stream.end(frame(chunk(big)));
    });
    using client = createClient(OperationService, server.address);
    const lines = await collect(client.streamOperationLogs({ operationId: "op-1" }));
    assert.deepEqual(lines, ["one", "two", "three", big]);
    assert.equal(server.requests[0][":path"], "/baremetal.v1.OperationService/StreamOperationLogs");
    assert.equal(server.requests[0]["content-type"], "application/grpc");
    assert.equal(server.requests[0].te, "trailers");
  },
);

Deno.test(
  "client: a trailers-only error carries its code, decoded message and ErrorInfo",
  SANITIZE,
  async () => {
    const status = create(StatusSchema, {
      code: 5,
      message: "gone away",
      details: [anyPack(
        ErrorInfoSchema,
        create(ErrorInfoSchema, {
          reason: "MACHINE_NOT_FOUND",
          domain: "bmdemo",
          metadata: { machineId: "m-1" },
        }),
      )],
    });
    await using server = await rawServer((stream) => {
      stream.respond({
        ...GRPC_HEADERS,
        "grpc-status": "5",
        "grpc-message": "machine%20%22m-1%22%20gone%20away",
        "grpc-status-details-bin": Buffer.from(toBinary(StatusSchema, status)).toString("base64"),
      }, { endStream: true });
    });
    using client = createClient(MachineService, server.address);
    const error = await client.getMachine({ machineId: "m-1" }).catch((e) => e);
    assert.ok(error instanceof RpcError);
    assert.equal(error.code, 5);
    assert.equal(error.details, 'machine "m-1" gone away');
    assert.equal(error.message, '5 NOT_FOUND: machine "m-1" gone away');
    assert.equal(errorInfoOf(error)?.reason, "MACHINE_NOT_FOUND");
    assert.deepEqual(errorInfoOf(error)?.metadata, { machineId: "m-1" });
  },
);

Deno.test(
  "client: a response that is not gRPC fails with the code its HTTP status maps to",
  SANITIZE,
  async () => {
    await using server = await rawServer((stream, headers) => {
      const status = headers[":path"]!.endsWith("GetMachine") ? 404 : 503;
      stream.respond({ ":status": status, "content-type": "text/plain" });
      stream.end("nope");
    });
    using client = createClient(MachineService, server.address);
    await rejectsWith(client.getMachine({ machineId: "m" }), 12, /HTTP status code 404/);
    await rejectsWith(client.listMachines({}), 14, /HTTP status code 503/);
  },
);

Deno.test(
  "client: protocol violations fail the call instead of being guessed at",
  SANITIZE,
  async (t) => {
    const cases: {
      name: string;
      body: Buffer;
      trailers: boolean;
      code: number;
      details: RegExp;
    }[] = [
      {
        name: "a message longer than the receive limit",
        body: Buffer.from([0, 0x7f, 0xff, 0xff, 0xff]),
        trailers: true,
        code: 8,
        details: new RegExp(`larger than max \\(\\d+ vs\\. ${MAX_RECEIVE_MESSAGE_BYTES}\\)`),
      },
      {
        name: "a compressed message nobody asked for",
        body: frame(toBinary(MachineSchema, create(MachineSchema, { machineId: "m" })), 1),
        trailers: true,
        code: 13,
        details: /Compressed/,
      },
      {
        name: "a unary call with no message",
        body: Buffer.alloc(0),
        trailers: true,
        code: 12,
        details: /No message received/,
      },
      {
        name: "a response cut inside a message",
        body: frame(toBinary(MachineSchema, create(MachineSchema, { machineId: "m" }))).subarray(
          0,
          7,
        ),
        trailers: true,
        code: 13,
        details: /inside a message/,
      },
      {
        name: "no status at all",
        body: frame(toBinary(MachineSchema, create(MachineSchema, { machineId: "m" }))),
        trailers: false,
        code: 2,
        details: /without a status/,
      },
    ];
    for (const { name, body, trailers, code, details } of cases) {
      await t.step(name, async () => {
        await using server = await rawServer((stream) => {
          stream.respond(GRPC_HEADERS, { waitForTrailers: trailers });
          if (trailers) stream.on("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
          stream.on("error", () => {}); // the client may reset the stream first
          stream.end(body);
        });
        using client = createClient(MachineService, server.address);
        await rejectsWith(client.getMachine({ machineId: "m" }), code, details);
      });
    }
  },
);

Deno.test("client: a deadline is sent as grpc-timeout and enforced locally", SANITIZE, async () => {
  const reset = Promise.withResolvers<number | undefined>();
  await using server = await rawServer((stream) => {
    // Never answers: only the client's own timer can end the call.
    stream.on("close", () => reset.resolve(stream.rstCode));
  });
  using client = createClient(MachineService, server.address);
  await rejectsWith(
    client.getMachine({ machineId: "m" }, { deadline: new Date(Date.now() + 50) }),
    4,
    /Deadline exceeded/,
  );
  assert.match(String(server.requests[0]["grpc-timeout"]), /^\d{1,8}m$/);
  assert.equal(await reset.promise, http2.constants.NGHTTP2_CANCEL);

  await rejectsWith(
    client.getMachine({ machineId: "m" }, { deadline: new Date(Date.now() - 1) }),
    4,
  );
  assert.equal(server.requests.length, 1, "a call whose deadline passed was still sent");
});

Deno.test(
  "client: the token and call metadata travel as headers (-bin values in base64)",
  SANITIZE,
  async () => {
    await using server = await rawServer((stream) => {
      stream.respond(GRPC_HEADERS, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
      stream.end(frame(toBinary(MachineSchema, create(MachineSchema, { machineId: "m" }))));
    });
    using client = createClient(MachineService, server.address, { token: "s3cret" });
    await client.getMachine({ machineId: "m" }, {
      metadata: { "x-trace": "abc", "x-blob-bin": new Uint8Array([1, 2, 255]) },
    });
    const [headers] = server.requests;
    assert.equal(headers.authorization, "Bearer s3cret");
    assert.equal(headers["x-trace"], "abc");
    assert.deepEqual([...Buffer.from(String(headers["x-blob-bin"]), "base64")], [1, 2, 255]);
  },
);

Deno.test(
  "client: a dropped connection fails its calls with UNAVAILABLE, the next call reconnects",
  SANITIZE,
  async () => {
    let drop = true;
    await using server = await rawServer((stream) => {
      if (drop) {
        drop = false;
        stream.session?.destroy();
        return;
      }
      stream.respond(GRPC_HEADERS, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
      stream.end(frame(toBinary(MachineSchema, create(MachineSchema, { machineId: "again" }))));
    });
    using client = createClient(MachineService, server.address);
    await rejectsWith(client.getMachine({ machineId: "m" }), 14);
    assert.equal((await client.getMachine({ machineId: "m" })).machineId, "again");
  },
);

Deno.test("client: an address nobody listens on fails with UNAVAILABLE", SANITIZE, async () => {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address() as net.AddressInfo;
  await new Promise((resolve) => listener.close(resolve));
  using client = createClient(MachineService, `127.0.0.1:${port}`);
  await rejectsWith(client.getMachine({ machineId: "m" }), 14, /No connection established/);
});

Deno.test("client: close() ends calls in progress with CANCELLED", SANITIZE, async () => {
  const opened = Promise.withResolvers<void>();
  await using server = await rawServer((stream) => {
    stream.on("error", () => {});
    opened.resolve();
  });
  const client = createClient(MachineService, server.address);
  const call = client.getMachine({ machineId: "m" });
  await opened.promise;
  client.close();
  await rejectsWith(call, 1);
  await rejectsWith(client.getMachine({ machineId: "m" }), 1, /shut down/);
});

Deno.test("client: end to end against our server, by localhost name", SANITIZE, async () => {
  await using server = await startServer({ port: 0, engine: testEngine() });
  using machines = createClient(MachineService, `localhost:${server.port}`);
  const registered = await machines.registerMachine({
    machine: {
      machineId: "m-1",
      spec: { macAddresses: ["02:00:00:00:00:01"], serial: "S1", sshEndpoint: "10.0.0.1:22" },
    },
  });
  assert.equal(registered.machineId, "m-1");
  assert.equal((await machines.getMachine({ machineId: "m-1" })).spec?.serial, "S1");
  await rejectsWith(machines.getMachine({ machineId: "m-2" }), 5, /m-2/);
});
