/**
 * The CLI's check after a connection failure (lib/cli/tls_probe.ts): against real server
 * processes, a plaintext client learns that the server speaks TLS, a TLS client without a
 * certificate that the server requires one; the other failures keep their messages. Each is one
 * error line and one hint, exit 3.
 *
 * @module
 */

import assert from "node:assert/strict";
import { probeTls } from "../lib/cli/tls_probe.ts";
import { type ServerProcess, spawnServer } from "../scripts/server_process.ts";
import { SANITIZE } from "./helpers.ts";
import { makeCerts } from "./tls_certs.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-net", "--allow-env", "--allow-read", CLI, ...args],
    stdin: "null",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(30_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** A TLS server process (mutual with `clientCa`), a plaintext one, and the CA's PEM file. */
async function servers(
  dir: string,
): Promise<{ tls: ServerProcess; mtls: ServerProcess; plain: ServerProcess; ca: string }> {
  const certs = await makeCerts();
  const files = { cert: `${dir}/server.pem`, key: `${dir}/server.key`, ca: `${dir}/ca.pem` };
  await Deno.writeTextFile(files.cert, certs.serverCert);
  await Deno.writeTextFile(files.key, certs.serverKey);
  await Deno.writeTextFile(files.ca, certs.ca);
  const tlsFlags = ["--timing", "zero", "--tls-cert", files.cert, "--tls-key", files.key];
  return {
    tls: await spawnServer(tlsFlags),
    mtls: await spawnServer([...tlsFlags, "--client-ca", files.ca]),
    plain: await spawnServer(["--timing", "zero"]),
    ca: files.ca,
  };
}

/** `localhost:<port>`: the test certificate names localhost, and node:tls refuses an IP as a name. */
function local(server: ServerProcess): string {
  return `localhost:${server.address.split(":").at(-1)}`;
}

Deno.test(
  "cross-process: TLS on one side, or no client certificate, each named with its fix",
  SANITIZE,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-probe-" });
    const { tls, mtls, plain, ca } = await servers(dir);
    try {
      const speaksTls = (address: string) =>
        `error: the bmdemo server at ${address} speaks TLS; bmdemo-cli connected in plaintext\n` +
        "hint: pass --tls (or --ca <file> for a private CA)\n";
      const cases: [string, string[], string | RegExp][] = [
        ["plaintext client, TLS server", ["--server", local(tls)], speaksTls(local(tls))],
        ["plaintext client, mutual TLS server", ["--server", local(mtls)], speaksTls(local(mtls))],
        [
          "TLS client without a certificate, mutual TLS server",
          ["--server", local(mtls), "--ca", ca],
          `error: the bmdemo server at ${local(mtls)} requires a client certificate ` +
          "(mutual TLS)\nhint: pass --cert <file> and --key <file>, a certificate signed by the " +
          "server's client CA\n",
        ],
        // The other failures keep their messages.
        [
          "TLS client, plaintext server",
          ["--server", local(plain), "--ca", ca],
          /^error: TLS with the bmdemo server at \S+ failed \(a certificate problem, or TLS on one side only\)\nhint: [^\n]+\n$/,
        ],
        [
          "nothing listens",
          ["--server", "127.0.0.1:1"],
          /^error: cannot reach the bmdemo server at 127\.0\.0\.1:1\nhint: [^\n]+\n$/,
        ],
      ];
      for (const [name, args, expected] of cases) {
        const run = await cli(...args, "list");
        assert.equal(run.code, 3, `${name}: ${run.stderr}`);
        assert.equal(run.stdout, "", name);
        if (typeof expected === "string") assert.equal(run.stderr, expected, name);
        else assert.match(run.stderr, expected, name);
      }
    } finally {
      await Promise.all([tls.stop(), mtls.stop(), plain.stop()]);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("probeTls tells TLS, mutual TLS and plaintext servers apart", SANITIZE, async () => {
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-probe-" });
  const { tls, mtls, plain } = await servers(dir);
  try {
    assert.equal(await probeTls(local(tls)), "tls");
    assert.equal(await probeTls(tls.address), "tls", "an IP address, without a server name");
    assert.equal(await probeTls(local(mtls)), "client-certificate-required");
    assert.equal(await probeTls(local(plain)), "not-tls");
    assert.equal(await probeTls("127.0.0.1:1"), "unknown");
    assert.equal(await probeTls("no port"), "unknown");
  } finally {
    await Promise.all([tls.stop(), mtls.stop(), plain.stop()]);
    await Deno.remove(dir, { recursive: true });
  }
});
