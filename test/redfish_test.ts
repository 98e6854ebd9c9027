import assert from "node:assert/strict";
import type { BmcCredential, BmcTarget } from "../lib/provider/bmc.ts";
import { createBmcGate } from "../lib/provider/bmc_gate.ts";
import type { ProviderCall } from "../lib/provider/mod.ts";
import {
  createRedfishDriver,
  isPermanentStatus,
  parseRedfishAddress,
  redfishBmcKey,
  type RedfishDriverOptions,
  RedfishError,
} from "../lib/provider/redfish.ts";
import {
  type RedfishMock,
  type RedfishMockOptions,
  startRedfishMock,
} from "../scripts/lab/redfish_mock.ts";
import { SANITIZE } from "./helpers.ts";

const CREDENTIAL: BmcCredential = { username: "admin", password: "s3cret-pw" };
const MOCK: RedfishMockOptions = { username: "admin", password: "s3cret-pw" };
const TLS_DIR = new URL("./fixtures/redfish_tls/", import.meta.url);

/** A provider call whose log lines are kept. */
function testCall(signal = new AbortController().signal): ProviderCall & { lines: string[] } {
  const lines: string[] = [];
  return { operationId: "op-1", signal, lines, log: (line) => lines.push(line) };
}

function targetOf(
  mock: RedfishMock,
  suffix = "",
  credential: BmcCredential = CREDENTIAL,
): BmcTarget {
  const address = `${mock.url}${suffix}`;
  return { machineId: "machine-1", address, key: redfishBmcKey(address), credential };
}

function driverOf(options: Partial<RedfishDriverOptions> = {}) {
  return createRedfishDriver({
    gate: createBmcGate({ concurrency: 4 }),
    pollIntervalMs: 2,
    requestTimeoutMs: 5_000,
    ...options,
  });
}

/** The mock's record as `METHOD path auth status`, runs of the same poll folded into one `…*`. */
function sequence(mock: RedfishMock): string[] {
  const lines: string[] = [];
  for (const r of mock.records) {
    const line = `${r.method} ${r.path} ${r.auth} ${r.status}`;
    const last = lines.at(-1);
    if (last === line || last === `${line} *`) lines[lines.length - 1] = `${line} *`;
    else lines.push(line);
  }
  return lines;
}

async function rejectsWith(
  promise: Promise<unknown>,
  check: (error: RedfishError) => void,
): Promise<RedfishError> {
  let caught: unknown;
  await assert.rejects(promise, (error) => (caught = error, true));
  assert.ok(caught instanceof RedfishError, `expected a RedfishError, got ${String(caught)}`);
  check(caught);
  assert.ok(!caught.message.includes(CREDENTIAL.password), "the message carries the password");
  return caught;
}

Deno.test(
  "Redfish setBootPxe() discovers the only system, PATCHes Pxe/Once and logs out",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock(MOCK);
    const call = testCall();
    await driverOf().setBootPxe(call, targetOf(mock));
    assert.deepEqual(sequence(mock), [
      "GET /redfish/v1 none 200",
      "POST /redfish/v1/SessionService/Sessions none 201",
      "GET /redfish/v1/Systems session 200",
      "PATCH /redfish/v1/Systems/1 session 204",
      "GET /redfish/v1/Systems/1 session 200",
      "DELETE /redfish/v1/SessionService/Sessions/1 session 204",
    ]);
    assert.equal(mock.openSessions, 0);
    assert.deepEqual([mock.system("1").bootTarget, mock.system("1").bootEnabled], ["Pxe", "Once"]);
    assert.ok(call.lines.includes(
      'Redfish PATCH /redfish/v1/Systems/1 {"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}} -> 204',
    ));
    assert.ok(call.lines.some((l) => l.includes("Once override back as Continuous (tolerated)")));
    assert.ok(!call.lines.join("\n").includes(CREDENTIAL.password));
  },
);

Deno.test(
  "Redfish restart() gracefully restarts, polls until On, and the next boot is PXE",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock({ ...MOCK, systems: 2, powerDelayMs: 40 });
    const driver = driverOf();
    const target = targetOf(mock, "/redfish/v1/Systems/2");
    await driver.setBootPxe(testCall(), target);
    const before = mock.records.length;
    const call = testCall();
    await driver.restart(call, target, { force: false });
    const restart = sequence(mock).slice(sequence(mock).indexOf("GET /redfish/v1 none 200", 1));
    assert.equal(mock.records.length > before, true);
    assert.deepEqual(restart, [
      "GET /redfish/v1 none 200",
      "POST /redfish/v1/SessionService/Sessions none 201",
      "GET /redfish/v1/Systems/2 session 200 *", // power read, reset action, then the polls
      "POST /redfish/v1/Systems/2/Actions/ComputerSystem.Reset session 204",
      "GET /redfish/v1/Systems/2 session 200 *",
      "DELETE /redfish/v1/SessionService/Sessions/2 session 204",
    ]);
    assert.deepEqual(mock.system("2").resets, ["GracefulRestart"]);
    assert.deepEqual(mock.system("2").boots, [{ source: "Pxe", image: null }]);
    assert.deepEqual(mock.system("1").resets, []);
    // The restart was seen in progress, then landed.
    assert.deepEqual(call.lines.filter((l) => l.startsWith("Redfish: PowerState")), [
      "Redfish: PowerState PoweringOn",
      "Redfish: PowerState On",
    ]);
  },
);

Deno.test("Redfish restart() picks the reset from AllowableValues", SANITIZE, async (t) => {
  const cases: { name: string; resetTypes: string[]; force: boolean; resets: string[] }[] = [
    {
      name: "forced: ForceRestart",
      resetTypes: ["On", "ForceOff", "GracefulRestart", "ForceRestart"],
      force: true,
      resets: ["ForceRestart"],
    },
    {
      name: "graceful not offered: ForceRestart",
      resetTypes: ["On", "ForceOff", "ForceRestart"],
      force: false,
      resets: ["ForceRestart"],
    },
    {
      name: "no restart, no PowerCycle: ForceOff then On",
      resetTypes: ["On", "ForceOff"],
      force: true,
      resets: ["ForceOff", "On"],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await using mock = startRedfishMock({ ...MOCK, resetTypes: c.resetTypes, powerDelayMs: 10 });
      const call = testCall();
      await driverOf().restart(call, targetOf(mock), { force: c.force });
      assert.deepEqual(mock.system("1").resets, c.resets);
      assert.equal(mock.system("1").power, "On");
      assert.equal(mock.openSessions, 0);
      if (c.resets.length === 2) {
        assert.deepEqual(call.lines.filter((l) => l.startsWith("Redfish: PowerState")), [
          "Redfish: PowerState On", // waiting for Off
          "Redfish: PowerState Off",
          "Redfish: PowerState Off", // waiting for On
          "Redfish: PowerState On",
        ]);
      }
    });
  }
  await t.step("nothing usable: a permanent error naming what is offered", async () => {
    await using mock = startRedfishMock({ ...MOCK, resetTypes: ["Nmi"] });
    await assert.rejects(
      driverOf().restart(testCall(), targetOf(mock), { force: true }),
      (error) =>
        error instanceof Error && "permanent" in error && error.permanent === true &&
        /offers none of ForceRestart, PowerCycle, ForceOff\+On \(allowed: Nmi\)/.test(
          error.message,
        ),
    );
    assert.equal(mock.openSessions, 0);
  });
});

Deno.test(
  "Redfish powerOn(), powerOff() and powerState() wait for the BMC's state",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock({ ...MOCK, initialPower: "Off", powerDelayMs: 20 });
    const driver = driverOf();
    const target = targetOf(mock, "/redfish/v1/Systems/1");
    assert.equal(await driver.powerState(testCall(), target), "off");
    await driver.powerOn(testCall(), target);
    assert.equal(mock.system("1").power, "On");
    assert.equal(await driver.powerState(testCall(), target), "on");
    const again = testCall();
    await driver.powerOn(again, target);
    assert.ok(again.lines.includes("Redfish: /redfish/v1/Systems/1 is already On"));
    await driver.powerOff(testCall(), target);
    assert.equal(mock.system("1").power, "Off");
    assert.deepEqual(mock.system("1").resets, ["On", "ForceOff"]);
    assert.equal(mock.openSessions, 0);
  },
);

Deno.test(
  "Redfish driver falls back to Basic auth when the BMC has no sessions",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock({ ...MOCK, sessions: false });
    const call = testCall();
    assert.equal(await driverOf().powerState(call, targetOf(mock)), "on");
    assert.deepEqual(sequence(mock), [
      "GET /redfish/v1 none 200",
      "GET /redfish/v1/Systems basic 200",
      "GET /redfish/v1/Systems/1 basic 200",
    ]);
    assert.ok(call.lines.includes("Redfish: the BMC offers no session service; using Basic auth"));
  },
);

Deno.test(
  "Redfish driver falls back to Basic auth when the BMC's session table is full (503)",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock({ ...MOCK, maxSessions: 0 });
    const call = testCall();
    assert.equal(await driverOf().powerState(call, targetOf(mock)), "on");
    assert.deepEqual(sequence(mock), [
      "GET /redfish/v1 none 200",
      "POST /redfish/v1/SessionService/Sessions none 503",
      "GET /redfish/v1/Systems basic 200",
      "GET /redfish/v1/Systems/1 basic 200",
    ]);
    assert.ok(call.lines.some((line) => line.includes("refused a session (HTTP 503")));
  },
);

Deno.test(
  "Redfish driver reports a refused credential as permanent, with the BMC's message",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock(MOCK);
    const credential = { username: "admin", password: "wrong-pw" };
    const error = await rejectsWith(
      driverOf().setBootPxe(testCall(), targetOf(mock, "", credential)),
      (e) => {
        assert.deepEqual([e.method, e.path, e.status, e.permanent], [
          "POST",
          "/redfish/v1/SessionService/Sessions",
          401,
          true,
        ]);
        assert.equal(e.bmcMessage, "The user name or password is not valid.");
      },
    );
    assert.equal(
      error.message,
      "Redfish POST /redfish/v1/SessionService/Sessions failed: HTTP 401 Unauthorized: " +
        "The user name or password is not valid.",
    );
    assert.ok(!error.message.includes("wrong-pw"));
    assert.deepEqual(sequence(mock), [
      "GET /redfish/v1 none 200",
      "POST /redfish/v1/SessionService/Sessions none 401",
    ]);
  },
);

Deno.test(
  "Redfish driver surfaces every fault with the BMC's answer, transient or permanent",
  SANITIZE,
  async (t) => {
    await t.step("500 on the PATCH: transient, session still deleted", async () => {
      await using mock = startRedfishMock(MOCK);
      mock.inject({ kind: "status", status: 500, method: "PATCH", message: "BMC busy" });
      await rejectsWith(driverOf().setBootPxe(testCall(), targetOf(mock)), (e) => {
        assert.equal(
          e.message,
          "Redfish PATCH /redfish/v1/Systems/1 failed: HTTP 500 Internal Server Error: BMC busy",
        );
        assert.deepEqual([e.status, e.bmcMessage, e.permanent], [500, "BMC busy", false]);
      });
      assert.equal(mock.records.at(-1)?.method, "DELETE");
      assert.equal(mock.openSessions, 0);
    });
    await t.step("unknown system: permanent 404", async () => {
      await using mock = startRedfishMock(MOCK);
      await rejectsWith(
        driverOf().powerState(testCall(), targetOf(mock, "/redfish/v1/Systems/9")),
        (e) => {
          assert.deepEqual([e.status, e.permanent, e.bmcMessage], [404, true, "No system 9."]);
        },
      );
      assert.equal(mock.openSessions, 0);
    });
    await t.step("a hung request: transient timeout, session still deleted", async () => {
      await using mock = startRedfishMock(MOCK);
      mock.inject({ kind: "hang", method: "GET", path: "/redfish/v1/Systems/1" });
      await rejectsWith(
        driverOf({ requestTimeoutMs: 50 }).powerState(
          testCall(),
          targetOf(mock, "/redfish/v1/Systems/1"),
        ),
        (e) => {
          assert.equal(
            e.message,
            "Redfish GET /redfish/v1/Systems/1 failed: no answer within 50ms",
          );
          assert.deepEqual([e.status, e.permanent], [0, false]);
        },
      );
      assert.equal(mock.openSessions, 0);
    });
    await t.step("refused connection: transient, status 0", async () => {
      const mock = startRedfishMock(MOCK);
      const target = targetOf(mock);
      await mock.close();
      await rejectsWith(driverOf().powerState(testCall(), target), (e) => {
        assert.match(
          e.message,
          /^Redfish GET \/redfish\/v1 failed: no answer from http:\/\/127\.0\.0\.1:\d+: .*refused/i,
        );
        assert.deepEqual([e.status, e.permanent], [0, false]);
      });
    });
    await t.step(
      "several systems and no id in the address: permanent, naming the fix",
      async () => {
        await using mock = startRedfishMock({ ...MOCK, systems: 2 });
        await assert.rejects(
          driverOf().powerState(testCall(), targetOf(mock)),
          (e) =>
            e instanceof Error && "permanent" in e && e.permanent === true &&
            e.message.includes("serves 2 systems (/redfish/v1/Systems/1, /redfish/v1/Systems/2)") &&
            e.message.includes("bmc_address ending in /redfish/v1/Systems/<id>"),
        );
        assert.equal(mock.openSessions, 0);
      },
    );
  },
);

Deno.test(
  "Redfish restart() stops promptly on abort mid-poll and still deletes the session",
  SANITIZE,
  async () => {
    await using mock = startRedfishMock({ ...MOCK, powerDelayMs: 60_000 });
    const abort = new AbortController();
    const polling = Promise.withResolvers<void>();
    const call: ProviderCall = {
      operationId: "op-1",
      signal: abort.signal,
      log: (line) => line === "Redfish: PowerState PoweringOn" && polling.resolve(),
    };
    const restart = driverOf({ pollIntervalMs: 5 }).restart(call, targetOf(mock), { force: true });
    await polling.promise;
    const reason = new Error("step reboot timed out");
    abort.abort(reason);
    await assert.rejects(restart, (error) => error === reason);
    assert.equal(mock.openSessions, 0);
    assert.equal(mock.records.at(-1)?.method, "DELETE");
    assert.equal(mock.system("1").power, "On"); // the change has not landed: nothing waited for it
  },
);

Deno.test("Redfish driver sends every request through the gate", SANITIZE, async () => {
  await using mock = startRedfishMock(MOCK);
  mock.inject({ kind: "slow", delayMs: 5 });
  const gate = createBmcGate({ concurrency: 2 });
  const driver = driverOf({ gate });
  const target = targetOf(mock, "/redfish/v1/Systems/1");
  const states = await Promise.all(
    Array.from({ length: 8 }, () => driver.powerState(testCall(), target)),
  );
  assert.deepEqual(states, Array(8).fill("on"));
  assert.equal(mock.peakInFlight, 2);
  assert.equal(mock.openSessions, 0);
});

Deno.test(
  "Redfish insertMedia() and ejectMedia() drive the system's virtual CD",
  SANITIZE,
  async (t) => {
    await using mock = startRedfishMock(MOCK);
    await using images = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) =>
        new URL(request.url).pathname === "/boot.iso"
          ? new Response("iso")
          : new Response("missing", { status: 404 }),
    );
    const image = `http://127.0.0.1:${images.addr.port}/boot.iso`;
    const driver = driverOf();
    const target = targetOf(mock);
    await t.step("insert", async () => {
      await driver.insertMedia(testCall(), target, { image });
      assert.equal(mock.system("1").image, image);
    });
    await t.step("inserting again ejects first", async () => {
      const call = testCall();
      await driver.insertMedia(call, target, { image });
      assert.ok(call.lines.includes(`Redfish: ejecting ${image} first`));
    });
    await t.step("eject", async () => {
      await driver.ejectMedia(testCall(), target);
      assert.equal(mock.system("1").image, null);
    });
    await t.step("an image the BMC cannot fetch: HTTP 500 with its message", async () => {
      await rejectsWith(
        driver.insertMedia(testCall(), target, { image: `${image}.missing` }),
        (e) => {
          assert.equal(e.status, 500);
          assert.match(
            e.bmcMessage,
            /^Unable to download the image from http:.*boot\.iso\.missing: Error: HTTP 404/,
          );
          assert.equal(e.permanent, false);
        },
      );
      assert.equal(mock.system("1").image, null);
    });
    assert.equal(mock.openSessions, 0);
  },
);

Deno.test(
  "Redfish driver trusts a CA file, or any certificate when insecure",
  SANITIZE,
  async (t) => {
    const tls = {
      cert: await Deno.readTextFile(new URL("bmc.pem", TLS_DIR)),
      key: await Deno.readTextFile(new URL("bmc.key", TLS_DIR)),
    };
    await using mock = startRedfishMock({ ...MOCK, tls });
    assert.match(mock.url, /^https:/);
    const caFile = new URL("ca.pem", TLS_DIR).pathname;
    await t.step("default trust refuses the certificate: permanent", async () => {
      await rejectsWith(driverOf().powerState(testCall(), targetOf(mock)), (e) => {
        assert.match(e.message, /certificate/i);
        assert.equal(e.permanent, true);
      });
    });
    await t.step("caFile", async () => {
      const target = targetOf(mock, "", { ...CREDENTIAL, caFile });
      assert.equal(await driverOf().powerState(testCall(), target), "on");
    });
    await t.step("insecure", async () => {
      const target = targetOf(mock, "", { ...CREDENTIAL, insecure: true });
      await driverOf().setBootPxe(testCall(), target);
      assert.equal(mock.system("1").bootTarget, "Pxe");
    });
    await t.step("an unreadable caFile: permanent, naming the file", async () => {
      const target = targetOf(mock, "", { ...CREDENTIAL, caFile: "/nonexistent/ca.pem" });
      await assert.rejects(
        driverOf().powerState(testCall(), target),
        (e) =>
          e instanceof Error && "permanent" in e && e.permanent === true &&
          e.message.startsWith('Cannot read the CA file "/nonexistent/ca.pem"'),
      );
    });
    assert.equal(mock.openSessions, 0);
  },
);

Deno.test("parseRedfishAddress() accepts a BMC URL with an optional system", () => {
  assert.deepEqual(parseRedfishAddress("https://10.0.0.5"), { origin: "https://10.0.0.5" });
  assert.deepEqual(parseRedfishAddress("http://bmc:8000/redfish/v1/"), {
    origin: "http://bmc:8000",
  });
  assert.deepEqual(parseRedfishAddress("https://bmc:8443/redfish/v1/Systems/System.Embedded.1"), {
    origin: "https://bmc:8443",
    systemPath: "/redfish/v1/Systems/System.Embedded.1",
  });
  for (const bad of ["10.0.0.5:623", "ftp://bmc", "https://bmc/other", "https://u:p@bmc"]) {
    assert.throws(
      () => parseRedfishAddress(bad),
      /Invalid Redfish bmc_address .*expected https:\/\/host/,
    );
  }
  assert.throws(
    () => parseRedfishAddress("https://u:p@bmc"),
    (e) => e instanceof Error && !e.message.includes("u:p"),
  );
});

Deno.test("isPermanentStatus() marks client errors permanent and 5xx, 408, 409, 429 transient", () => {
  assert.deepEqual(
    [400, 401, 403, 404, 405, 501].map(isPermanentStatus),
    [true, true, true, true, true, true],
  );
  assert.deepEqual(
    [408, 409, 412, 429, 500, 502, 503, 504].map(isPermanentStatus),
    [false, false, false, false, false, false, false, false],
  );
});
