/**
 * Regression tests for denoland/deno#36788: Deno 2.9.4 to 2.9.6 abort the whole process inside
 * `node:http2` (nghttp2: `find_stream_on_goaway_func: Assertion 'stream->closed_next == NULL'
 * failed`, exit 134, sometimes a bare SIGSEGV) when a connection that carried calls is closed
 * with a GOAWAY. We pin Deno 2.9.3; these tests fail on a runtime that has the bug.
 *
 * Measured with Deno 2.9.6 and these very files: the process that *receives* the GOAWAY on a
 * connection where it opened the streams dies, that is the client when the server stops
 * gracefully (13 calls were enough). A client closing its own channel did not crash the server
 * in any of our runs, so the first test alone would pass on the broken runtime; the second one
 * is the guard.
 *
 * Both must be cross-process: with server and client in one process the crash does not
 * reproduce, and an abort would take the test runner down instead of failing an assertion. So
 * the server is `fixtures/echo_server.ts` in its own `deno run`, and the client that receives
 * the GOAWAY is this very file run as a script (see {@linkcode runGoawayClient}).
 *
 * Permissions: `--allow-run --allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { GetMachineRequestSchema, MachineService } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { createServiceDefinition } from "../lib/grpc/service_definition.ts";
import { connectClient } from "../lib/client/mod.ts";
import { SANITIZE } from "./helpers.ts";

const PROJECT_ROOT = new URL("..", import.meta.url);
const ECHO_SERVER = new URL("fixtures/echo_server.ts", import.meta.url);

/** Unary calls on one channel before it is closed: "over 1,000" in the architecture notes. */
const CALLS = 1_200;
/** Calls in flight at once on that channel. */
const IN_FLIGHT = 50;
/** Safety net only: how long a child may take to print its ready line before it is killed. */
const READY_TIMEOUT_MS = 30_000;
/** Safety net only: how long the GOAWAY client waits for the server's GOAWAY. */
const GOAWAY_TIMEOUT_MS = 30_000;

// ----- child processes ---------------------------------------------------------------------------

interface ProcessExit {
  status: Deno.CommandStatus;
  stdout: string;
  stderr: string;
}

interface DenoProcess extends AsyncDisposable {
  /** The match of the ready pattern in the child's stdout. */
  readonly ready: RegExpExecArray;
  /** The exit status if the process has already exited. */
  exited(): Deno.CommandStatus | undefined;
  /** Waits for the process to exit by itself. */
  wait(): Promise<ProcessExit>;
  /** Sends SIGTERM unless the process already exited, then waits for its exit. */
  stop(): Promise<ProcessExit>;
}

/**
 * Runs `deno run <script> ...args` from the project root and waits, by reading its stdout (no
 * sleeping), for a line that matches `ready`.
 */
async function spawnDeno(script: URL, args: string[], ready: RegExp): Promise<DenoProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      script.pathname,
      ...args,
    ],
    cwd: PROJECT_ROOT.pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let exitStatus: Deno.CommandStatus | undefined;
  const status = child.status.then((value) => exitStatus = value);
  const kill = (): void => {
    if (exitStatus !== undefined) return;
    try {
      child.kill("SIGTERM");
    } catch {
      // It exited between the check and the kill; `status` has the outcome.
    }
  };

  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stdout = "";
  let match: RegExpExecArray | null = null;
  const readyTimer = setTimeout(kill, READY_TIMEOUT_MS);
  try {
    while (match === null) {
      const { value, done } = await reader.read();
      if (done) break;
      stdout += value;
      match = ready.exec(stdout);
    }
  } finally {
    clearTimeout(readyTimer);
  }
  // Keep reading, so the pipe never fills and the rest of the output is kept.
  const drained = (async (): Promise<void> => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      stdout += value;
    }
  })();

  let exit: Promise<ProcessExit> | undefined;
  const wait = (): Promise<ProcessExit> => {
    exit ??= (async () => {
      const final = await status;
      await drained;
      return { status: final, stdout, stderr: await stderr };
    })();
    return exit;
  };
  const stop = (): Promise<ProcessExit> => {
    kill();
    return wait();
  };

  if (match === null) {
    const { status, stderr } = await stop();
    throw new Error(
      `${script.pathname} exited (code ${status.code}, signal ${status.signal}) before ` +
        `printing ${ready}:\n${stderr}`,
    );
  }
  return {
    ready: match,
    exited: () => exitStatus,
    wait,
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
}

function spawnEchoServer(): Promise<DenoProcess & { address: string }> {
  return spawnDeno(ECHO_SERVER, [], /^LISTENING (\d+)$/m).then((server) =>
    Object.assign(server, { address: `127.0.0.1:${server.ready[1]}` })
  );
}

function describeExit(name: string, exit: ProcessExit): string {
  return `${name} ended with code ${exit.status.code}, signal ${exit.status.signal}:\n` +
    exit.stderr;
}

/** Runs `task(0 .. total-1)` with at most `concurrency` tasks in flight. */
async function runConcurrently(
  total: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  async function worker(): Promise<void> {
    while (next < total) {
      await task(next++);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
}

// ----- tests -------------------------------------------------------------------------------------

Deno.test(
  "grpc-js server in another process survives a client closing a channel after 1,200 calls",
  SANITIZE,
  async () => {
    await using server = await spawnEchoServer();

    try {
      {
        using client = connectClient(MachineService, server.address);
        await runConcurrently(CALLS, IN_FLIGHT, async (index) => {
          const machine = await client.getMachine({ machineId: `m-${index}` });
          assert.equal(machine.machineId, `m-${index}`);
        });
      } // The client closes its channel here, sending the server a GOAWAY.

      {
        using client = connectClient(MachineService, server.address);
        const machine = await client.getMachine({ machineId: "after-close" });
        assert.equal(machine.machineId, "after-close");
      } // Closed before the server stops, so this process never receives the server's GOAWAY.
    } catch (err) {
      // Say whether the server had died: that, not the failed call, is the finding.
      throw new Error(`A call failed; ${describeExit("the server", await server.stop())}`, {
        cause: err,
      });
    }

    assert.equal(server.exited(), undefined, "the server process exited on its own");
    const exit = await server.stop();
    assert.equal(exit.status.code, 0, describeExit("the server", exit));
  },
);

Deno.test(
  "grpc-js client in another process survives the server's GOAWAY after 1,200 calls",
  SANITIZE,
  async () => {
    await using server = await spawnEchoServer();
    await using client = await spawnDeno(
      new URL(import.meta.url),
      ["goaway-client", server.address],
      /^CALLS DONE$/m,
    );

    // SIGTERM makes the server stop gracefully: it sends the client's connection a GOAWAY.
    const serverExit = await server.stop();
    assert.equal(serverExit.status.code, 0, describeExit("the server", serverExit));

    const clientExit = await client.wait();
    assert.equal(clientExit.status.code, 0, describeExit("the client", clientExit));
    assert.match(clientExit.stdout, /^GOAWAY SEEN$/m);
  },
);

// ----- the client process of the GOAWAY test -----------------------------------------------------

/**
 * The client process of the second test: makes {@linkcode CALLS} calls on one channel, prints
 * `CALLS DONE`, then waits until grpc-js has processed the server's GOAWAY (the channel leaves
 * READY), prints `GOAWAY SEEN` and exits 0. A runtime with the bug aborts in between, inside
 * nghttp2, before any JavaScript sees the GOAWAY.
 *
 * It drives `grpc.Client` directly, rather than `createClient`, to watch the channel's state.
 */
async function runGoawayClient(address: string): Promise<void> {
  const getMachine = createServiceDefinition(MachineService).GetMachine;
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = (machineId: string): Promise<void> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        getMachine.path,
        getMachine.requestSerialize,
        getMachine.responseDeserialize,
        create(GetMachineRequestSchema, { machineId }),
        (err) => err ? reject(err) : resolve(),
      );
    });
  await runConcurrently(CALLS, IN_FLIGHT, (index) => call(`m-${index}`));

  const channel = client.getChannel();
  const state = channel.getConnectivityState(false);
  if (state !== grpc.connectivityState.READY) {
    throw new Error(`Cannot wait for a GOAWAY as the channel is ${grpc.connectivityState[state]}`);
  }
  console.log("CALLS DONE");
  await new Promise<void>((resolve, reject) => {
    channel.watchConnectivityState(
      grpc.connectivityState.READY,
      Date.now() + GOAWAY_TIMEOUT_MS,
      (err) => err ? reject(err) : resolve(),
    );
  });
  console.log("GOAWAY SEEN");
  client.close();
}

if (import.meta.main) {
  const [role, address] = Deno.args;
  if (role !== "goaway-client" || address === undefined) {
    throw new Error(`Cannot run as a script with arguments ${JSON.stringify(Deno.args)}`);
  }
  await runGoawayClient(address);
}
