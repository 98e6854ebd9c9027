/**
 * The HTTP surface (`lib/http/`): the dashboard's change feed (resume by `Last-Event-ID`,
 * snapshot when too far behind), the operation log stream, the token (401, the `?token=` cookie
 * flow, bearer), TLS, readiness at shutdown, bounds and bad input, mounted routes, and
 * `--http-port` on the real server. No sleeps: tests read the streams they open.
 *
 * Permissions: `--allow-net --allow-env --allow-read --allow-run` (openssl, the server process).
 */

import assert from "node:assert/strict";
import {
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { DashboardFeed } from "../lib/http/dashboard_feed.ts";
import type { HttpRoute } from "../lib/http/route.ts";
import { type HttpSurfaceOptions, SESSION_COOKIE, startHttpSurface } from "../lib/http/surface.ts";
import { startServer } from "../lib/grpc/server.ts";
import { runServer, spawnServer } from "../scripts/server_process.ts";
import {
  enterMaintenance,
  holdVerb,
  importMachines,
  runOperation,
  SANITIZE,
  testEngine,
} from "./helpers.ts";
import { makeCerts } from "./tls_certs.ts";

/** One parsed Server-Sent Event. */
interface SseEvent {
  id?: string;
  event: string;
  data: Record<string, unknown>;
}

/** Reads the Server-Sent Events of a response one at a time (comments and `retry:` skipped). */
function sseReader(response: Response) {
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<SseEvent | undefined> {
      while (true) {
        const end = buffer.indexOf("\n\n");
        if (end !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = new Map<string, string>();
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(": ");
            fields.set(line.slice(0, colon), line.slice(colon + 2));
          }
          if (!fields.has("event")) continue;
          return {
            id: fields.get("id"),
            event: fields.get("event")!,
            data: JSON.parse(fields.get("data")!),
          };
        }
        const { value, done } = await reader.read();
        if (done) return undefined;
        buffer += value;
      }
    },
    /** Reads events until one matches. */
    async until(predicate: (event: SseEvent) => boolean): Promise<SseEvent> {
      while (true) {
        const event = await this.next();
        if (!event) throw new Error("the stream ended before the expected event");
        if (predicate(event)) return event;
      }
    },
    cancel(): Promise<void> {
      return reader.cancel();
    },
  };
}

function operationIs(id: string, phase: string): (event: SseEvent) => boolean {
  return (event) =>
    event.event === "operation" &&
    (event.data.operation as { id: string; phase: string }).id === id &&
    (event.data.operation as { phase: string }).phase === phase;
}

async function surface(options: Partial<HttpSurfaceOptions> = {}) {
  const engine = options.engine ?? testEngine();
  const http = await startHttpSurface({ port: 0, ...options, engine });
  return {
    engine,
    http,
    async [Symbol.asyncDispose]() {
      await http.shutdown({ before: () => engine.shutdown() });
    },
  };
}

Deno.test("DashboardFeed resumes inside its window and asks for a snapshot outside it", () => {
  const engine = testEngine();
  using feed = new DashboardFeed(engine, { window: 4, epoch: "0000abcd" });
  const start = feed.snapshot();
  assert.equal(start.cursor, 0);
  assert.match(start.text, /^id: 0000abcd-0\nevent: snapshot\n/);
  importMachines(engine, 3);
  // Saw the snapshot and the first machine: resumes after it, with the other two.
  const cursor = feed.resume("0000abcd-1");
  assert.equal(cursor, 1);
  const missed = feed.read(cursor!)!;
  assert.deepEqual([...missed.text.matchAll(/^id: (\S+)$/gm)].map((m) => m[1]), [
    "0000abcd-2",
    "0000abcd-3",
  ]);
  assert.match(missed.text, /"id":"machine-2"/);
  assert.equal(missed.cursor, 3);
  // Another run's id, a malformed one, and one from the future all need a snapshot.
  assert.equal(feed.resume("ffffffff-1"), undefined);
  assert.equal(feed.resume("garbage"), undefined);
  assert.equal(feed.resume("0000abcd-99"), undefined);
  // Five more changes (machine-1..5 again) push the first four out of the 4-change window.
  importMachines(engine, 5);
  assert.equal(feed.first, 4);
  assert.equal(feed.resume("0000abcd-3"), undefined);
  assert.equal(feed.read(3), undefined);
  assert.equal(feed.resume("0000abcd-4"), 4);
});

Deno.test(
  "/events: a snapshot, live changes, then Last-Event-ID resumes without loss",
  SANITIZE,
  async () => {
    await using s = await surface();
    importMachines(s.engine, 2);
    const first = sseReader(await fetch(`${s.http.url}events`));
    const snapshot = (await first.next())!;
    assert.equal(snapshot.event, "snapshot");
    assert.deepEqual(
      (snapshot.data.machines as { id: string }[]).map((m) => m.id),
      ["machine-1", "machine-2"],
    );
    await enterMaintenance(s.engine, "machine-1");
    const created = await first.until((e) => e.event === "operation");
    assert.equal((created.data.machine as { state: string }).state, "BUSY");
    // The browser drops here; the operation finishes while it is away.
    await first.cancel();
    const op = await runOperation(s.engine, {
      machineId: "machine-1",
      type: OperationType.REIMAGE,
    });
    assert.equal(op.phase, OperationPhase.SUCCEEDED);

    const resumed = sseReader(
      await fetch(`${s.http.url}events`, { headers: { "last-event-id": created.id! } }),
    );
    const messages: string[] = [];
    while (true) {
      const event = (await resumed.next())!;
      assert.notEqual(event.event, "snapshot", "a resume inside the window sends no snapshot");
      messages.push(event.data.message as string);
      if (operationIs(op.operationId, "SUCCEEDED")(event)) {
        assert.equal((event.data.operation as { step: number }).step, 5);
        assert.equal((event.data.machine as { provisioned: boolean }).provisioned, true);
        break;
      }
    }
    assert.deepEqual(messages.slice(0, 3), [
      "Operation started",
      "Operation succeeded",
      "Operation created",
    ]);
    assert.ok(messages.includes("Step repave-image succeeded"), messages.join(", "));
    await resumed.cancel();
  },
);

Deno.test(
  "/events: a browser too far behind gets a fresh snapshot, not a gap",
  SANITIZE,
  async () => {
    await using s = await surface({ feed: { window: 2 } });
    importMachines(s.engine, 1);
    const reader = sseReader(await fetch(`${s.http.url}events`));
    const snapshot = (await reader.next())!;
    await reader.cancel();
    importMachines(s.engine, 4); // machine-1 again, then 2, 3, 4: four changes, window of two
    const again = sseReader(
      await fetch(`${s.http.url}events`, { headers: { "last-event-id": snapshot.id! } }),
    );
    const fresh = (await again.next())!;
    assert.equal(fresh.event, "snapshot");
    assert.equal((fresh.data.machines as unknown[]).length, 4);
    await again.cancel();
  },
);

Deno.test(
  "/operations/{id}/logs: replay, live, end; Last-Event-ID skips what was read",
  SANITIZE,
  async () => {
    const hold = holdVerb();
    await using s = await surface({ engine: testEngine({ hooks: { repave: hold.hook } }) });
    importMachines(s.engine, 1);
    await enterMaintenance(s.engine, "machine-1");
    const { operation } = s.engine.startOperation({
      machineId: "machine-1",
      requestId: "r-1",
      type: OperationType.REIMAGE,
    });
    await hold.entered;
    const logs = sseReader(await fetch(`${s.http.url}operations/${operation.operationId}/logs`));
    const replayed = (await logs.next())!;
    assert.equal(replayed.event, "log");
    assert.equal(replayed.id, "1");
    hold.release();
    const end = await logs.until((e) => e.event === "end");
    assert.equal((end.data.operation as { phase: string }).phase, "SUCCEEDED");
    assert.equal(await logs.next(), undefined, "the stream ends after its end event");

    const resumed = sseReader(
      await fetch(`${s.http.url}operations/${operation.operationId}/logs`, {
        headers: { "last-event-id": "3" },
      }),
    );
    assert.equal((await resumed.next())!.id, "4");
    await resumed.cancel();
  },
);

Deno.test(
  "the token: 401 without it, the ?token= link becomes a cookie, bearer works",
  SANITIZE,
  async () => {
    await using s = await surface({ authToken: "s3cret" });
    const url = s.http.url;
    assert.equal(s.http.signInUrl, `${url}?token=s3cret`);
    for (const path of ["", "events", "assets/dashboard.js", "operations/op-1/logs"]) {
      const response = await fetch(`${url}${path}`);
      assert.equal(response.status, 401, path);
      assert.match(await response.text(), /requires a token: open the sign-in link/);
    }
    const wrong = await fetch(`${url}?token=guess`, { redirect: "manual" });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const signIn = await fetch(`${url}?token=s3cret&view=1`, { redirect: "manual" });
    assert.equal(signIn.status, 303);
    assert.equal(signIn.headers.get("location"), "/?view=1");
    await signIn.body?.cancel();
    const cookie = signIn.headers.get("set-cookie")!;
    assert.match(
      cookie,
      new RegExp(`^${SESSION_COOKIE}=[0-9a-f]{64}; Path=/; HttpOnly; SameSite=Strict$`),
    );
    assert.ok(!cookie.includes("s3cret"), "the cookie holds a digest, never the token");
    const session = cookie.split(";")[0];
    const page = await fetch(url, { headers: { cookie: session } });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /data-state="connecting"/);
    const forged = await fetch(url, { headers: { cookie: `${SESSION_COOKIE}=${"0".repeat(64)}` } });
    assert.equal(forged.status, 401);
    await forged.body?.cancel();
    const bearer = sseReader(
      await fetch(`${url}events`, { headers: { authorization: "Bearer s3cret" } }),
    );
    assert.equal((await bearer.next())!.event, "snapshot");
    await bearer.cancel();
    const badBearer = await fetch(url, { headers: { authorization: "Bearer nope" } });
    assert.equal(badBearer.status, 401);
    assert.match(await badBearer.text(), /token is not valid/);
    // Health and readiness stay public for probes.
    for (const path of ["healthz", "readyz"]) {
      const response = await fetch(`${url}${path}`);
      assert.equal(response.status, 200, path);
      await response.body?.cancel();
    }
  },
);

Deno.test(
  "TLS: the surface serves HTTPS with the server's certificate; the cookie is Secure",
  SANITIZE,
  async () => {
    const certs = await makeCerts();
    await using s = await surface({
      tls: { cert: certs.serverCert, key: certs.serverKey },
      authToken: "s3cret",
    });
    assert.match(s.http.url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
    using client = Deno.createHttpClient({ caCerts: [certs.ca] });
    const signIn = await fetch(`${s.http.url}?token=s3cret`, { client, redirect: "manual" });
    await signIn.body?.cancel();
    assert.equal(signIn.status, 303);
    assert.match(signIn.headers.get("set-cookie")!, /; Secure$/);
    const health = await fetch(`${s.http.url}healthz`, { client });
    assert.equal(await health.text(), "ok\n");
    await assert.rejects(fetch(`${s.http.url}healthz`), /fetch failed|certificate/i);
  },
);

Deno.test(
  "/readyz turns 503 first at shutdown, while gRPC and the engine still stop",
  SANITIZE,
  async () => {
    const hold = holdVerb();
    const engine = testEngine({ hooks: { reboot: hold.hook } });
    const grpc = await startServer({ port: 0, engine });
    const http = await startHttpSurface({ engine, port: 0 });
    importMachines(engine, 1);
    await enterMaintenance(engine, "machine-1");
    engine.startOperation({ machineId: "machine-1", requestId: "r", type: OperationType.REBOOT });
    await hold.entered;
    assert.equal(await (await fetch(`${http.url}readyz`)).text(), "ready\n");
    const events = sseReader(await fetch(`${http.url}events`));
    await events.next();
    // Holds the gRPC server's shutdown until readiness was looked at.
    const looked = Promise.withResolvers<void>();
    const stopping = http.shutdown({
      before: async () => {
        await looked.promise;
        await grpc.shutdown();
      },
    });
    const ready = await fetch(`${http.url}readyz`);
    assert.equal(ready.status, 503);
    assert.equal(await ready.text(), "shutting down\n");
    assert.equal(await (await fetch(`${http.url}healthz`)).text(), "ok\n");
    looked.resolve();
    hold.release();
    // The stream still carries the cancel shutdown causes, then ends.
    const canceled = await events.until((e) =>
      e.event === "operation" && e.data.message === "Operation canceled"
    );
    assert.equal((canceled.data.operation as { phase: string }).phase, "CANCELED");
    assert.equal(await events.until(() => false).catch(() => "ended"), "ended");
    await stopping;
    assert.equal(http.streamCount, 0);
  },
);

Deno.test(
  "bad input: 404, 405, oversized and malformed requests, too many streams",
  SANITIZE,
  async () => {
    const posted: string[] = [];
    const echo: HttpRoute = {
      method: "POST",
      path: "/boot/report",
      access: "public",
      handle: async (request) => {
        posted.push(await request.text());
        return new Response("noted\n");
      },
    };
    await using s = await surface({ maxStreams: 1, maxBodyBytes: 16, routes: [echo] });
    const url = s.http.url;
    const status = async (path: string, init?: RequestInit) => {
      const response = await fetch(`${url}${path}`, init);
      const body = await response.text();
      return { status: response.status, body, allow: response.headers.get("allow") };
    };
    assert.deepEqual(await status("nope"), {
      status: 404,
      body: "Not found: /nope\n",
      allow: null,
    });
    assert.equal((await status("events", { method: "POST" })).allow, "GET, HEAD");
    assert.equal((await status("events", { method: "DELETE" })).status, 405);
    assert.equal((await status("boot/report")).allow, "POST");
    assert.equal(
      (await status("boot/report", { method: "POST", body: "x".repeat(17) })).status,
      413,
    );
    assert.deepEqual(posted, [], "an oversized body never reaches the route");
    assert.equal(
      (await status("boot/report", { method: "POST", body: "mac=52:54" })).body,
      "noted\n",
    );
    assert.deepEqual(posted, ["mac=52:54"]);
    assert.equal(
      (await status("healthz", { method: "GET", headers: { "content-length": "0" } })).status,
      200,
    );
    assert.equal((await status(`?${"a".repeat(9000)}`)).status, 414);
    assert.equal((await status("operations/op%ZZ/logs")).status, 400);
    assert.equal((await status("operations/op%20x/logs")).status, 400);
    assert.match((await status("operations/op-missing/logs")).body, /No operation "op-missing"/);
    const open = await fetch(`${url}events`);
    const full = await status("events");
    assert.equal(full.status, 503);
    assert.match(full.body, /Too many open event streams \(1, the server's --max-watchers\)/);
    await open.body!.cancel();
  },
);

Deno.test(
  "HEAD: every GET route answers it like GET without a body; an event stream opens none",
  SANITIZE,
  async () => {
    const metrics: HttpRoute = {
      method: "GET",
      path: "/metrics",
      access: "token",
      handle: () => new Response("bmdemo_up 1\n"),
    };
    const report: HttpRoute = {
      method: "POST",
      path: "/boot/report",
      access: "public",
      handle: () => new Response("noted\n"),
    };
    let opened = 0;
    await using s = await surface({
      authToken: "t0ken",
      maxStreams: 1,
      routes: [metrics, report],
      onStream: () => {
        opened++;
        return { [Symbol.dispose]: () => {} };
      },
    });
    const url = s.http.url;
    const bearer = { authorization: "Bearer t0ken" };
    const head = async (path: string, headers: HeadersInit = {}) => {
      const response = await fetch(`${url}${path}`, { method: "HEAD", headers });
      return {
        status: response.status,
        body: await response.text(),
        type: response.headers.get("content-type"),
        length: response.headers.get("content-length"),
        allow: response.headers.get("allow"),
      };
    };
    const get = async (path: string, headers: HeadersInit = {}) => {
      const response = await fetch(`${url}${path}`, { headers });
      const body = await response.text();
      return { status: response.status, type: response.headers.get("content-type"), body };
    };
    for (
      const [path, headers] of [["healthz", {}], ["readyz", {}], ["", bearer], [
        "metrics",
        bearer,
      ]] as const
    ) {
      const [probe, full] = [await head(path, headers), await get(path, headers)];
      assert.equal(probe.status, 200, path);
      assert.equal(probe.body, "", path);
      assert.equal(probe.type, full.type, path);
      assert.equal(probe.length, String(new TextEncoder().encode(full.body).length), path);
    }
    // Unauthenticated: the same 401 as GET (how the dashboard tells "signed out" from "offline").
    assert.equal((await head("events")).status, 401);
    assert.equal((await head("metrics")).status, 401);
    const events = await head("events", bearer);
    assert.deepEqual([events.status, events.body], [200, ""]);
    assert.match(events.type ?? "", /^text\/event-stream/);
    assert.equal((await head("operations/op-missing/logs", bearer)).status, 404);
    assert.equal(s.http.streamCount, 0, "a HEAD opens no stream");
    assert.equal(opened, 0, "a HEAD is no watcher");
    // The stream limit answers HEAD as it answers GET.
    const open = await fetch(`${url}events`, { headers: bearer });
    assert.equal((await head("events", bearer)).status, 503);
    await open.body!.cancel();
    assert.deepEqual(
      [(await head("boot/report")).status, (await head("boot/report")).allow],
      [405, "POST"],
    );
    assert.equal((await head("nope")).status, 404);
    s.http.stopServing();
    assert.equal((await head("readyz")).status, 503);
  },
);

Deno.test("mounted routes: exact path, token access, refused duplicates", SANITIZE, async () => {
  const metrics: HttpRoute = {
    method: "GET",
    path: "/metrics",
    access: "token",
    handle: () => new Response("bmdemo_up 1\n"),
  };
  await using s = await surface({ authToken: "t0ken", routes: [metrics] });
  const denied = await fetch(`${s.http.url}metrics`);
  assert.equal(denied.status, 401);
  await denied.body?.cancel();
  const ok = await fetch(`${s.http.url}metrics`, { headers: { authorization: "Bearer t0ken" } });
  assert.equal(await ok.text(), "bmdemo_up 1\n");
  const sub = await fetch(`${s.http.url}metrics/x`);
  assert.equal(sub.status, 404);
  await sub.body?.cancel();
  const engine = testEngine();
  await assert.rejects(
    startHttpSurface({ engine, port: 0, routes: [metrics, metrics] }),
    /Route GET \/metrics is mounted twice/,
  );
  await assert.rejects(
    startHttpSurface({ engine, port: 0, routes: [{ ...metrics, path: "/events" }] }),
    /mounted twice \(or shadows a built-in route\)/,
  );
  await assert.rejects(
    startHttpSurface({ engine, port: 0, routes: [{ ...metrics, path: "/m/:id" }] }),
    /must be an exact path/,
  );
  await engine.shutdown();
});

Deno.test(
  "server.ts --http-port: prints the dashboard URL, serves it, refuses bad values",
  SANITIZE,
  async () => {
    await using server = await spawnServer(["--http-port", "0"]);
    assert.match(server.dashboard ?? "", /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await fetch(server.dashboard!);
    assert.match(await page.text(), /<title>bmdemo dashboard<\/title>/);
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr());

    const bad = await runServer(["--http-port", "http"]);
    assert.equal(bad.code, 2);
    assert.equal(
      bad.stderr.trim(),
      'bmdemo-server: --http-port must be a whole number from 0 to 65535: got "http" (see bmdemo-server --help)',
    );
    // With a token and stdout not a terminal: the sign-in hint without the token itself.
    const token = "tok-" + crypto.randomUUID();
    await using guarded = await spawnServer(["--http-port", "0"], {
      env: { BMDEMO_AUTH_TOKEN: token },
    });
    const url = guarded.dashboard!;
    assert.equal(
      guarded.startup.split("\n")[0],
      `bmdemo-server dashboard on ${url} (sign in once with ${url}?token=<token>)`,
    );
    const denied = await fetch(url);
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
    const signIn = await fetch(`${url}?token=${token}`, { redirect: "manual" });
    await signIn.body?.cancel();
    const cookie = signIn.headers.get("set-cookie")!.split(";")[0];
    const signedIn = await fetch(url, { headers: { cookie } });
    assert.equal(signedIn.status, 200);
    await signedIn.body?.cancel();
    assert.equal((await guarded.stop("SIGTERM")).code, 0);
    assert.ok(!guarded.stderr().includes(token) && !guarded.startup.includes(token));

    // Browsers are not asked for client certificates: mutual TLS needs the token on HTTP.
    const certs = await makeCerts();
    const dir = await Deno.makeTempDir({ prefix: "bmdemo-http-tls-" });
    try {
      for (const [name, pem] of [["c.pem", certs.serverCert], ["k.pem", certs.serverKey]]) {
        await Deno.writeTextFile(`${dir}/${name}`, pem);
      }
      const mutual = await runServer([
        "--http-port",
        "0",
        ...[
          "--tls-cert",
          `${dir}/c.pem`,
          "--tls-key",
          `${dir}/k.pem`,
          "--client-ca",
          `${dir}/c.pem`,
        ],
      ]);
      assert.equal(mutual.code, 2);
      assert.match(mutual.stderr, /--http-port with --client-ca needs a token \(--auth-token-file/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }

    const off = await spawnServer([]);
    assert.equal(off.dashboard, undefined, "off by default");
    await off.stop("SIGTERM");
  },
);

/** The value of one unlabelled sample in a Prometheus exposition. */
function sample(exposition: string, name: string): number {
  const line = exposition.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} is exposed`);
  return Number(line.split(" ")[1]);
}

Deno.test(
  "server.ts --http-port serves /metrics behind the token and counts dashboards as watchers; --no-metrics has none",
  SANITIZE,
  async () => {
    const token = "tok-" + crypto.randomUUID();
    await using server = await spawnServer(["--http-port", "0"], {
      env: { BMDEMO_AUTH_TOKEN: token },
    });
    const base = server.dashboard!;
    const bearer = { authorization: `Bearer ${token}` };
    const denied = await fetch(`${base}metrics`);
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
    const scrape = async (): Promise<string> => {
      const response = await fetch(`${base}metrics`, { headers: bearer });
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      return await response.text();
    };
    assert.equal(sample(await scrape(), "bmdemo_watchers"), 0);
    const events = sseReader(await fetch(`${base}events`, { headers: bearer }));
    await events.next(); // the snapshot: the stream is open
    assert.equal(sample(await scrape(), "bmdemo_watchers"), 1, "a dashboard is a watcher");
    await events.cancel();
    assert.equal((await server.stop("SIGTERM")).code, 0, server.stderr());

    await using off = await spawnServer(["--http-port", "0", "--no-metrics"]);
    const none = await fetch(`${off.dashboard!}metrics`);
    assert.equal(none.status, 404);
    await none.body?.cancel();
    assert.equal((await off.stop("SIGTERM")).code, 0);
  },
);
