import assert from "node:assert/strict";
import { startRedfishMock } from "../scripts/lab/redfish_mock.ts";
import { SANITIZE } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./fixtures/sushy_conformance.py", import.meta.url).pathname;
const BASIC = { authorization: `Basic ${btoa("admin:password")}` };

Deno.test("Redfish mock passes python3-sushy's conformance run", SANITIZE, async () => {
  const probe = await new Deno.Command(PYTHON, { args: ["-c", "import sushy"], stderr: "null" })
    .output().catch(() => ({ success: false }));
  assert.ok(
    probe.success,
    "python3-sushy is missing: apt-get install -y --no-install-recommends python3-sushy " +
      "(it needs /usr/bin/python3, not the python3 on PATH)",
  );
  await using mock = startRedfishMock({ systems: 2, powerDelayMs: 150 });
  await using images = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("iso"),
  );
  const image = `http://127.0.0.1:${images.addr.port}/boot.iso`;
  const run = await new Deno.Command(PYTHON, {
    args: [SCRIPT, mock.url, "admin", "password", image, "http://127.0.0.1:1/missing.iso"],
  }).output();
  const stderr = new TextDecoder().decode(run.stderr);
  assert.ok(run.success, `sushy run failed:\n${stderr}`);
  const seen = JSON.parse(new TextDecoder().decode(run.stdout));
  // Power reads are stale until the delay, then land; each list ends with the wanted state.
  assert.equal(seen.off_reads[0], "PowerState.ON");
  assert.equal(seen.on_reads[0], "PowerState.OFF");
  delete seen.off_reads;
  delete seen.on_reads;
  assert.deepEqual(seen, {
    members: ["/redfish/v1/Systems/1", "/redfish/v1/Systems/2"],
    power_before: "PowerState.ON",
    boot_target: "BootSource.PXE",
    boot_enabled: "BootSourceOverrideEnabled.CONTINUOUS", // Once, read back as on many BMCs
    reset_values: [
      "ResetType.FORCE_OFF",
      "ResetType.FORCE_RESTART",
      "ResetType.GRACEFUL_RESTART",
      "ResetType.GRACEFUL_SHUTDOWN",
      "ResetType.NMI",
      "ResetType.ON",
    ],
    bad_image_status: 500,
    inserted: [true, image],
    ejected: [false, null],
    wrong_password_status: 401,
  });
  const system = mock.system("1");
  assert.deepEqual(system.resets, ["ForceOff", "On"]);
  assert.deepEqual(system.boots, [{ source: "Pxe", image: null }]);
  assert.equal(mock.openSessions, 0);
  const auths = new Set(mock.records.map((r) => r.auth));
  assert.deepEqual([...auths].sort(), ["basic", "none", "session"]);
});

Deno.test("Redfish mock bounds its sessions and its request record", SANITIZE, async () => {
  await using mock = startRedfishMock({ maxSessions: 2, maxRecords: 3 });
  const login = () =>
    fetch(`${mock.url}/redfish/v1/SessionService/Sessions`, {
      method: "POST",
      body: JSON.stringify({ UserName: "admin", Password: "password" }),
    });
  for (const want of [201, 201, 503]) {
    const response = await login();
    await response.body?.cancel();
    assert.equal(response.status, want);
  }
  assert.equal(mock.openSessions, 2);
  assert.equal(mock.records.length, 3);
  const response = await fetch(`${mock.url}/redfish/v1/Systems`, { headers: BASIC });
  await response.body?.cancel();
  assert.equal(mock.records.length, 3);
  assert.deepEqual(mock.records.at(-1), {
    method: "GET",
    path: "/redfish/v1/Systems",
    auth: "basic",
    status: 200,
  });
});

Deno.test("Redfish mock applies injected faults the given number of times", SANITIZE, async () => {
  await using mock = startRedfishMock();
  mock.inject({ kind: "status", status: 503, path: /^\/redfish\/v1\/Systems/, times: 1 });
  const get = async () => {
    const response = await fetch(`${mock.url}/redfish/v1/Systems/1`, { headers: BASIC });
    return [response.status, await response.json()];
  };
  const [status, body] = await get();
  assert.equal(status, 503);
  assert.equal(body.error["@Message.ExtendedInfo"][0].Message, "Injected fault: HTTP 503.");
  assert.equal((await get())[0], 200);
  mock.inject({ kind: "slowPower", delayMs: 60_000 });
  const reset = await fetch(`${mock.url}/redfish/v1/Systems/1/Actions/ComputerSystem.Reset`, {
    method: "POST",
    headers: BASIC,
    body: JSON.stringify({ ResetType: "ForceOff" }),
  });
  await reset.body?.cancel();
  assert.equal(reset.status, 204);
  assert.equal((await get())[1].PowerState, "On"); // still stale: the change lands in a minute
  mock.inject({ kind: "status", status: 500, method: "GET" });
  mock.clearFaults();
  assert.equal((await get())[0], 200);
});

Deno.test("Redfish mock refuses a missing or wrong credential with 401", SANITIZE, async () => {
  await using mock = startRedfishMock();
  const attempts: Record<string, string>[] = [
    {},
    { authorization: `Basic ${btoa("admin:nope")}` },
    { "x-auth-token": "x" },
  ];
  for (const headers of attempts) {
    const response = await fetch(`${mock.url}/redfish/v1/Systems`, { headers });
    await response.body?.cancel();
    assert.equal(response.status, 401);
  }
  assert.deepEqual(mock.records.map((r) => r.auth), ["none", "basic", "session"]);
});
