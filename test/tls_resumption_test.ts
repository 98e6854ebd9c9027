/**
 * TLS session resumption against mutual TLS: a session a client got without a certificate (from
 * another TLS listener in the same process, or the HTTP surface) must not let it call the
 * mutual-TLS gRPC listener. The client is `openssl s_client` (it saves and resumes sessions,
 * which Deno's node:tls client does not expose), speaking just enough HTTP/2 for one unary call.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { startServer } from "../lib/grpc/server.ts";
import { refuseUnverifiedPeers } from "../lib/grpc/tls.ts";
import { spawnServer } from "../scripts/server_process.ts";
import { SANITIZE, testEngine } from "./helpers.ts";
import { makeCerts } from "./tls_certs.ts";

const certs = await makeCerts();

/** The TLS versions resumption is tested with: tickets (1.3) and session ids or tickets (1.2). */
const VERSIONS = ["-tls1_3", "-tls1_2"] as const;

/** Options of {@linkcode listMachines}. */
interface RawCallOptions {
  tls: (typeof VERSIONS)[number];
  /** Resume the session saved in this file. */
  sessionIn?: string;
  /** Save the session to this file. */
  sessionOut?: string;
  /** Present the test client certificate. */
  withCert?: boolean;
  token?: string;
}

function frame(type: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length << 8);
  out[3] = type;
  out[4] = flags;
  view.setUint32(5, type === 4 ? 0 : 1); // SETTINGS on the connection, the rest on stream 1
  out.set(payload, 9);
  return out;
}

/** HPACK literals without indexing: no table, no Huffman (every name and value < 127 bytes). */
function headerBlock(headers: [string, string][]): Uint8Array {
  const bytes: number[] = [];
  for (const [name, value] of headers) {
    const [n, v] = [new TextEncoder().encode(name), new TextEncoder().encode(value)];
    bytes.push(0, n.length, ...n, v.length, ...v);
  }
  return new Uint8Array(bytes);
}

/**
 * One ListMachines call over a raw HTTP/2 connection by `openssl s_client`; resolves to the
 * bytes of gRPC response DATA on the stream: 5 (an empty ListMachinesResponse) when the call was
 * answered, 0 when it was refused (at the TLS handshake or with an error status).
 */
async function listMachines(port: number, dir: string, options: RawCallOptions): Promise<number> {
  const args = ["s_client", options.tls, "-connect", `localhost:${port}`, "-servername"];
  args.push("localhost", "-CAfile", `${dir}/ca.pem`, "-alpn", "h2", "-quiet");
  if (options.sessionIn) args.push("-sess_in", options.sessionIn);
  if (options.sessionOut) args.push("-sess_out", options.sessionOut);
  if (options.withCert) args.push("-cert", `${dir}/client.pem`, "-key", `${dir}/client.key`);
  const child = new Deno.Command("openssl", {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  })
    .spawn();
  const headers: [string, string][] = [
    [":method", "POST"],
    [":scheme", "https"],
    [":path", "/baremetal.v1.MachineService/ListMachines"],
    [":authority", "localhost"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ];
  if (options.token) headers.push(["authorization", `Bearer ${options.token}`]);
  const writer = child.stdin.getWriter();
  const request = [
    new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    frame(4, 0, new Uint8Array()), // SETTINGS
    frame(1, 4, headerBlock(headers)), // HEADERS, END_HEADERS
    frame(0, 1, new Uint8Array(5)), // DATA, END_STREAM: an empty request message
  ];
  // A refused handshake ends the process while it is being written to: that is a result too.
  for (const bytes of request) await writer.write(bytes).catch(() => {});
  let pending = new Uint8Array();
  let data = 0;
  let ended = false;
  for await (const chunk of child.stdout) {
    const joined = new Uint8Array(pending.length + chunk.length);
    joined.set(pending);
    joined.set(chunk, pending.length);
    pending = joined;
    while (pending.length >= 9) {
      const length = (pending[0] << 16) | (pending[1] << 8) | pending[2];
      if (pending.length < 9 + length) break;
      const [type, flags] = [pending[3], pending[4]];
      const stream = new DataView(pending.buffer, pending.byteOffset).getUint32(5) & 0x7fffffff;
      if (type === 0 && stream === 1) data += length;
      // END_STREAM on the call's DATA or trailers, RST_STREAM, or GOAWAY: the call is over.
      if ((stream === 1 && (type <= 1 && (flags & 1) || type === 3)) || type === 7) ended = true;
      pending = pending.slice(9 + length);
    }
    if (ended) break;
  }
  try {
    child.kill("SIGTERM"); // s_client -quiet waits for the server to close; the call is over
  } catch {
    // Already exited (a refused handshake).
  }
  await writer.close().catch(() => {});
  await child.status;
  return data;
}

/** The test PEMs as files for openssl and the server flags, and a token file. */
async function pemDir(token: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "bmdemo-resume-" });
  await Deno.writeTextFile(`${dir}/ca.pem`, certs.ca);
  await Deno.writeTextFile(`${dir}/server.pem`, certs.serverCert);
  await Deno.writeTextFile(`${dir}/server.key`, certs.serverKey);
  await Deno.writeTextFile(`${dir}/client.pem`, certs.clientCert);
  await Deno.writeTextFile(`${dir}/client.key`, certs.clientKey);
  await Deno.writeTextFile(`${dir}/token`, `${token}\n`);
  return dir;
}

/** An in-process server with the test certificate, asking for client certificates or not. */
function tlsServer(mode: "plain" | "mutual"): ReturnType<typeof startServer> {
  const tls = { cert: certs.serverCert, key: certs.serverKey };
  return startServer({
    port: 0,
    engine: testEngine(),
    tls: mode === "mutual" ? { ...tls, clientCa: certs.ca } : tls,
  });
}

Deno.test(
  "mutual TLS: a session resumed from another TLS listener in the process is refused",
  SANITIZE,
  async () => {
    // Deno's node:tls servers share session state within a process: without the check in
    // lib/grpc/tls.ts, the resumed call below was answered without any client certificate.
    await using plain = await tlsServer("plain");
    await using mutual = await tlsServer("mutual");
    const dir = await pemDir("unused");
    try {
      for (const tls of VERSIONS) {
        const session = `${dir}/plain${tls}.session`;
        assert.equal(await listMachines(plain.port, dir, { tls, sessionOut: session }), 5);
        assert.equal(await listMachines(mutual.port, dir, { tls, sessionIn: session }), 0, tls);
        assert.equal(await listMachines(mutual.port, dir, { tls }), 0, tls);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "mutual TLS: a client resuming the session its certificate got keeps being served",
  SANITIZE,
  async () => {
    await using mutual = await tlsServer("mutual");
    const dir = await pemDir("unused");
    try {
      for (const tls of VERSIONS) {
        const session = `${dir}/own${tls}.session`;
        const first = await listMachines(mutual.port, dir, {
          tls,
          withCert: true,
          sessionOut: session,
        });
        assert.equal(first, 5, tls);
        // The session carries the verified certificate: resuming it is that client coming back.
        assert.equal(await listMachines(mutual.port, dir, { tls, sessionIn: session }), 5, tls);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "server.ts: a session from the HTTP surface does not open the mutual-TLS gRPC port",
  SANITIZE,
  async () => {
    const token = `tok-${crypto.randomUUID()}`;
    const dir = await pemDir(token);
    try {
      await using server = await spawnServer([
        ...["--tls-cert", `${dir}/server.pem`, "--tls-key", `${dir}/server.key`],
        ...["--client-ca", `${dir}/ca.pem`, "--auth-token-file", `${dir}/token`],
        ...["--http-port", "0"],
      ]);
      const grpcPort = Number(server.address.split(":").pop());
      const httpPort = Number(new URL(server.dashboard!).port);
      for (const tls of VERSIONS) {
        // The harness gets a call answered when the client is who mutual TLS asks for.
        assert.equal(await listMachines(grpcPort, dir, { tls, withCert: true, token }), 5, tls);
        const session = `${dir}/http${tls}.session`;
        await listMachines(httpPort, dir, { tls, sessionOut: session });
        const saved = await Deno.stat(session);
        assert.ok(saved.size > 0, "the HTTP surface gave the client a session to resume");
        for (const withToken of [undefined, token]) {
          const answered = await listMachines(grpcPort, dir, {
            tls,
            sessionIn: session,
            token: withToken,
          });
          assert.equal(answered, 0, `${tls}, token ${withToken ? "sent" : "not sent"}`);
        }
      }
      await server.stop();
      assert.doesNotMatch(server.stderr(), new RegExp(token));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("mutual TLS without a listener to check is an error, not an unchecked server", () => {
  // An unbound server has no HTTP/2 listener, as a grpc-js that moved its private field would
  // look: the server must not start without the check.
  assert.throws(
    () => refuseUnverifiedPeers(new grpc.Server(), () => {}),
    /no HTTP\/2 server to check client certificates on/,
  );
});
