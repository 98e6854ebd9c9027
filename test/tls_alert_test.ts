/**
 * A connection refused by a mutual-TLS server belongs to the call that made it: the call
 * rejects, and nothing escapes to the program afterwards. The server runs in its own process
 * (in-process TLS listeners share session state in Deno), and so does the client, a program that
 * keeps running after its calls (test/fixtures/mtls_anonymous_client.ts): an uncaught error ends
 * it, which the test sees as its exit code.
 *
 * @module
 */

import assert from "node:assert/strict";
import { spawnServer } from "../scripts/server_process.ts";
import { SANITIZE } from "./helpers.ts";
import { makeCerts } from "./tls_certs.ts";

const CLIENT = new URL("fixtures/mtls_anonymous_client.ts", import.meta.url).pathname;

/** At most this many calls in the client process, until {@linkcode ALERTS} met the alert. */
const CALLS = 200;
/** Calls that rejected with the server's alert (the race the late error followed) to meet. */
const ALERTS = 2;

/** Safety net only: a client that hangs is killed and fails the test. */
const CLIENT_WATCHDOG_MS = 60_000;

Deno.test(
  "mutual TLS: a call without a client certificate fails alone, nothing is left uncaught",
  SANITIZE,
  async () => {
    const certs = await makeCerts();
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-alert-" });
    const watchdog = new AbortController();
    const timer = setTimeout(() => watchdog.abort(), CLIENT_WATCHDOG_MS);
    try {
      await Deno.writeTextFile(`${dir}/ca.pem`, certs.ca);
      await Deno.writeTextFile(`${dir}/server.pem`, certs.serverCert);
      await Deno.writeTextFile(`${dir}/server.key`, certs.serverKey);
      await using server = await spawnServer([
        ...["--tls-cert", `${dir}/server.pem`, "--tls-key", `${dir}/server.key`],
        ...["--client-ca", `${dir}/ca.pem`],
      ]);
      const port = server.address.split(":").pop();
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          ...["run", "--no-prompt", "--allow-net", "--allow-env", "--allow-read", CLIENT],
          ...[`localhost:${port}`, `${dir}/ca.pem`, String(CALLS), String(ALERTS)],
        ],
        stdin: "null",
        env: { NO_COLOR: "1" },
        signal: watchdog.signal,
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `the client process ended early:\n${stdout}\n${stderr}`);
      const lines = stdout.trimEnd().split("\n");
      assert.equal(lines.pop(), "DONE");
      // Canceled: a second race, not this test's subject. The socket sometimes closes before
      // the alert is read, and Deno closes the stream with RST code CANCEL, which connect-node
      // reports as Canceled although the caller cancelled nothing.
      for (const line of lines) assert.match(line, /^(Unavailable|Canceled) /, stdout);
      const alerted = lines.filter((line) => /received fatal alert/.test(line)).length;
      assert.ok(alerted > 0, `no call met the server's alert in ${lines.length} calls`);
    } finally {
      clearTimeout(timer);
      await Deno.remove(dir, { recursive: true });
    }
  },
);
