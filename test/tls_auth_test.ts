import assert from "node:assert/strict";
import { MachineService } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { Code, connectClient, errorInfo } from "../lib/client/mod.ts";
import { startServer } from "../lib/grpc/server.ts";
import { isLoopbackHost } from "../lib/grpc/auth.ts";
import { HealthService } from "../lib/grpc/health.ts";
import { rejectsWithCode, SANITIZE, testEngine, testServer } from "./helpers.ts";
import { runServer, spawnServer } from "../scripts/server_process.ts";
import { makeCerts } from "./tls_certs.ts";

const certs = await makeCerts();

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** How long a CLI process may run before it is killed: one that spins fails its test, never hangs it. */
const CLI_WATCHDOG_MS = 30_000;

/**
 * Runs bmdemo-cli in its own process, as a user does; refused connections are tested this way
 * (a client that spun on one, as connect-node did before lib/client's workaround, is killed by
 * the watchdog and its test fails with the exit code and stderr).
 */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const watchdog = new AbortController();
  const timer = setTimeout(() => watchdog.abort(), CLI_WATCHDOG_MS);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-net", "--allow-env", "--allow-read", CLI, ...args],
      stdin: "null",
      env: { NO_COLOR: "1" },
      signal: watchdog.signal,
    }).output();
    const decoder = new TextDecoder();
    const stderr = decoder.decode(out.stderr) +
      (watchdog.signal.aborted ? `\n(killed after ${CLI_WATCHDOG_MS} ms)` : "");
    return { code: out.code, stdout: decoder.decode(out.stdout), stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** Writes the test PEMs to a temporary directory for the CLI's file flags. */
async function pemFiles(): Promise<{ dir: string } & Record<"ca" | "cert" | "key", string>> {
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-pem-" });
  const files = { ca: `${dir}/ca.pem`, cert: `${dir}/client.pem`, key: `${dir}/client.key` };
  await Deno.writeTextFile(files.ca, certs.ca);
  await Deno.writeTextFile(files.cert, certs.clientCert);
  await Deno.writeTextFile(files.key, certs.clientKey);
  return { dir, ...files };
}

Deno.test("TLS: a client trusting the CA works, a plaintext client fails", SANITIZE, async () => {
  await using server = await startServer({
    port: 0,
    engine: testEngine(),
    tls: { cert: certs.serverCert, key: certs.serverKey },
  });
  // Deno's node:tls refuses an IP address as the TLS server name: dial the DNS name.
  const address = `localhost:${server.port}`;
  using secure = connectClient(MachineService, address, {
    tls: { ca: certs.ca },
  });
  assert.deepEqual((await secure.listMachines({})).machines, []);
  const pem = await pemFiles();
  try {
    const plain = await cli("--server", address, "list");
    assert.equal(plain.code, 3, plain.stderr);
    assert.equal(
      plain.stderr,
      `error: the bmdemo server at ${address} speaks TLS; bmdemo-cli connected in plaintext\n` +
        "hint: pass --tls (or --ca <file> for a private CA)\n",
    );
    const trusted = await cli("--server", address, "--ca", pem.ca, "list");
    assert.deepEqual([trusted.code, trusted.stdout], [
      0,
      "No machines registered. Use 'import <N>' to create fake machines.\n",
    ], trusted.stderr);
  } finally {
    await Deno.remove(pem.dir, { recursive: true });
  }
});

Deno.test(
  "TLS failures say it is a certificate problem and name --ca and --tls",
  SANITIZE,
  async () => {
    await using secure = await startServer({
      port: 0,
      engine: testEngine(),
      tls: { cert: certs.serverCert, key: certs.serverKey },
    });
    await using plain = await testServer();
    // Unknown CA (the system roots do not hold the test CA), and a TLS client against a
    // plaintext server.
    for (const address of [`localhost:${secure.port}`, `localhost:${plain.port}`]) {
      const run = await cli("--server", address, "--tls", "list");
      assert.equal(run.code, 3, run.stderr);
      assert.match(run.stderr, /^error: TLS with the bmdemo server at .* failed \(a certificate/);
      assert.match(run.stderr, /--ca <file>/);
      assert.match(run.stderr, /--tls/);
      assert.doesNotMatch(run.stderr, /cannot reach/);
    }
  },
);

Deno.test("a CLI run without --allow-net names the flag", SANITIZE, async () => {
  await using server = await testServer();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-env",
      "--allow-read",
      CLI,
      "--server",
      server.address,
      "list",
    ],
    stdin: "null",
    env: { NO_COLOR: "1", BMDEMO_CLI_PROGRAM: "bmdemo-cli.js" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 3, stderr);
  assert.match(stderr, /^error: bmdemo-cli\.js may not use the network: run it with --allow-net/);
  assert.doesNotMatch(stderr, /cannot reach|deno task server/);
});

Deno.test("mutual TLS: a client certificate signed by the CA is required", SANITIZE, async () => {
  await using server = await startServer({
    port: 0,
    engine: testEngine(),
    tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.ca },
  });
  const address = `localhost:${server.port}`;
  using withCert = connectClient(MachineService, address, {
    tls: { ca: certs.ca, key: certs.clientKey, cert: certs.clientCert },
  });
  assert.deepEqual((await withCert.listMachines({})).machines, []);
  const pem = await pemFiles();
  try {
    // The refusal reaches the client as the write failing (EPIPE), as the session dying right
    // after its handshake, or (sometimes) as the server's certificate_required alert, whichever
    // wins the race; the check after the failure (lib/cli/tls_probe.ts) tells them apart.
    for (let attempt = 0; attempt < 5; attempt++) {
      const anonymous = await cli("--server", address, "--ca", pem.ca, "list");
      assert.equal(anonymous.code, 3, anonymous.stderr);
      assert.equal(
        anonymous.stderr,
        `error: the bmdemo server at ${address} requires a client certificate (mutual TLS)\n` +
          "hint: pass --cert <file> and --key <file>, a certificate signed by the server's " +
          "client CA\n",
      );
    }
    const identified = await cli(
      "--server",
      address,
      "--ca",
      pem.ca,
      "--cert",
      pem.cert,
      "--key",
      pem.key,
      "import",
      "1",
    );
    assert.deepEqual([identified.code, identified.stdout], [0, "machine-1   FACTORY_READY\n"]);
  } finally {
    await Deno.remove(pem.dir, { recursive: true });
  }
});

Deno.test("an oversized request fails with RESOURCE_EXHAUSTED", SANITIZE, async () => {
  await using server = await testServer();
  using client = connectClient(MachineService, server.address);
  await rejectsWithCode(
    client.getMachine({ machineId: "x".repeat(5 * 1024 * 1024) }),
    Code.ResourceExhausted,
  );
});

Deno.test(
  "token: server.ts requires it on every call but health, and never logs it",
  SANITIZE,
  async () => {
    const token = `tok-${crypto.randomUUID()}`;
    const file = await Deno.makeTempFile({ prefix: "bmdemo-token-" });
    try {
      await Deno.writeTextFile(file, `${token}\n`);
      await using server = await spawnServer(["--auth-token-file", file, "--log-level", "debug"]);
      using client = connectClient(MachineService, server.address);
      const missing = await rejectsWithCode(
        client.listMachines({}),
        Code.Unauthenticated,
        /authorization: Bearer <token>/,
      );
      assert.equal(errorInfo(missing)?.reason, "UNAUTHENTICATED");
      await rejectsWithCode(
        client.listMachines({}, { headers: bearer("wrong") }),
        Code.Unauthenticated,
      );
      assert.deepEqual((await client.listMachines({}, { headers: bearer(token) })).machines, []);
      using health = connectClient(HealthService, server.address) as unknown as {
        check(r: { service: string }): Promise<{ status: number }>;
        close(): void;
        [Symbol.dispose](): void;
      };
      assert.equal((await health.check({ service: "" })).status, 1);
      const status = await server.stop();
      assert.equal(status.code, 0);
      assert.match(server.stderr(), /ListMachines UNAUTHENTICATED/);
      assert.ok(!server.stderr().includes(token), "the token appears in the server log");
    } finally {
      await Deno.remove(file);
    }
  },
);

Deno.test("a non-loopback --host needs a token or --insecure-expose", SANITIZE, async () => {
  const out = await runServer(["--host", "0.0.0.0", "--port", "0"]);
  assert.equal(out.code, 2);
  assert.match(out.stderr, /--insecure-expose/);
  await using server = await spawnServer(["--host", "0.0.0.0", "--insecure-expose"]);
  assert.match(server.address, /^0\.0\.0\.0:\d+$/);
  assert.equal((await server.stop()).code, 0);
});

Deno.test("server.ts refuses --tls-cert without --tls-key", SANITIZE, async () => {
  const out = await runServer(["--tls-cert", "x.pem"]);
  assert.equal(out.code, 2);
  assert.match(out.stderr, /--tls-cert and --tls-key go together/);
});

Deno.test("isLoopbackHost", SANITIZE, () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]) {
    assert.ok(isLoopbackHost(host), host);
  }
  for (const host of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "example.com"]) {
    assert.ok(!isLoopbackHost(host), host);
  }
});
