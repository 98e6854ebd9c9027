/**
 * The routing provider (`lib/provider/hardware.ts`) with a recording BMC driver: per-machine
 * driver selection, registration checks of the hardware fields, credentials, the netboot broker
 * and BMC protection (a gate bounding calls in flight per BMC).
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  type MachineSpec,
  MachineSpecSchema,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { createEngine, type Engine } from "../lib/engine/mod.ts";
import { InvalidArgumentError } from "../lib/model/errors.ts";
import type { BmcDriver, BmcGate, BmcTarget, RestartOptions } from "../lib/provider/bmc.ts";
import { type CredentialBook, loadCredentials } from "../lib/provider/credentials.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import { createHardwareProvider } from "../lib/provider/hardware.ts";
import type { SshRunner } from "../lib/provider/ssh.ts";
import { type ProviderCall, ProviderError } from "../lib/provider/mod.ts";
import {
  createNetbootBroker,
  type HttpRoute,
  type NetbootBroker,
} from "../lib/provider/netboot.ts";
import { enterMaintenance, logText, runOperation, SANITIZE, untilTerminal } from "./helpers.ts";

const PASSWORD = "s3cret-bmc-password";

/** One call a driver received. */
interface DriverCall {
  verb: string;
  machineId: string;
  key: string;
  username: string;
  force?: boolean;
}

/**
 * A gate for tests: at most `concurrency` actions per key in flight, the rest wait FIFO (the
 * server uses `lib/provider/bmc_gate.ts`).
 */
function testGate(concurrency: number): BmcGate {
  const queues = new Map<string, { running: number; waiting: (() => void)[] }>();
  return {
    async run(key, signal, action) {
      const queue = queues.get(key) ?? { running: 0, waiting: [] };
      queues.set(key, queue);
      if (queue.running >= concurrency) {
        const turn = Promise.withResolvers<void>();
        queue.waiting.push(turn.resolve);
        const onAbort = () => turn.reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        try {
          await turn.promise;
        } finally {
          signal.removeEventListener("abort", onAbort);
          const index = queue.waiting.indexOf(turn.resolve);
          if (index >= 0) queue.waiting.splice(index, 1);
        }
      }
      queue.running++;
      try {
        return await action();
      } finally {
        queue.running--;
        queue.waiting.shift()?.();
      }
    },
  };
}

/**
 * A BMC driver that records its calls and runs each through the gate, counting the calls in
 * flight per BMC; each call yields to the event loop once, so concurrent calls overlap.
 */
function recordingDriver(name: string, gate?: BmcGate) {
  const calls: DriverCall[] = [];
  const finished: { verb: string; resolve: () => void }[] = [];
  const inFlight = new Map<string, number>();
  let maxInFlight = 0;
  async function act(
    call: ProviderCall,
    target: BmcTarget,
    { verb, force }: { verb: string; force?: boolean },
  ) {
    const body = async () => {
      const now = (inFlight.get(target.key) ?? 0) + 1;
      inFlight.set(target.key, now);
      maxInFlight = Math.max(maxInFlight, now);
      try {
        call.log(`[${name}] ${verb} ${target.address}`);
        calls.push({
          verb,
          machineId: target.machineId,
          key: target.key,
          username: target.credential.username,
          ...(force === undefined ? {} : { force }),
        });
        await new Promise((resolve) => setTimeout(resolve, 0));
      } finally {
        inFlight.set(target.key, inFlight.get(target.key)! - 1);
        for (const waiter of [...finished]) {
          if (waiter.verb !== verb) continue;
          finished.splice(finished.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
    };
    return gate ? await gate.run(target.key, call.signal, body) : await body();
  }
  const driver: BmcDriver = {
    name,
    setBootPxe: (call, target) => act(call, target, { verb: "setBootPxe" }),
    restart: (call, target, options: RestartOptions) =>
      act(call, target, { verb: "restart", force: options.force }),
    powerOn: (call, target) => act(call, target, { verb: "powerOn" }),
    powerOff: (call, target) => act(call, target, { verb: "powerOff" }),
    powerState: async (call, target) => {
      await act(call, target, { verb: "powerState" });
      return "on";
    },
  };
  return {
    driver,
    calls,
    maxInFlight: () => maxInFlight,
    /** Resolves once the driver has finished its next `verb`. */
    finished: (verb: string) => new Promise<void>((resolve) => finished.push({ verb, resolve })),
  };
}

function route(broker: NetbootBroker, method: string, path: string): HttpRoute {
  const found = broker.routes.find((r) => r.method === method && r.path === path);
  assert.ok(found, `${method} ${path} is a route`);
  return found;
}

/** Fetches a MAC's iPXE script through the route; returns the status and body. */
async function fetchScript(broker: NetbootBroker, mac: string): Promise<[number, string]> {
  const response = await route(broker, "GET", "/boot/ipxe").handle(
    new Request(`http://server/boot/ipxe?mac=${encodeURIComponent(mac)}`),
  );
  return [response.status, await response.text()];
}

/** The report URL in a script (what iPXE chains to), without the `${...}` iPXE expands. */
function reportUrl(script: string): URL {
  const match = /chain --autofree (\S+)/.exec(script);
  assert.ok(match, `the script chains to a report URL:\n${script}`);
  return new URL(match[1].replaceAll(/\$\{[^}]*\}/g, "x"));
}

async function report(broker: NetbootBroker, url: string, method = "GET"): Promise<number> {
  const response = await route(broker, method, "/boot/report").handle(
    new Request(url, { method }),
  );
  await response.body?.cancel();
  return response.status;
}

async function credentialsFile(text: string): Promise<string> {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(file, text);
  return file;
}

const CREDENTIALS = `credentials:
  - bmc: https://bmc-1.lab/redfish/v1/Systems/1
    username: exact-user
    password: ${PASSWORD}
  - bmc: bmc-shared.lab
    username: host-user
    password: ${PASSWORD}
  - selector: { rack: r1 }
    username: rack-user
    password: ${PASSWORD}
`;

interface Rig extends AsyncDisposable {
  engine: Engine;
  broker: NetbootBroker;
  calls: DriverCall[];
  maxInFlight(): number;
  /** Resolves once the redfish driver has finished its next `verb`. */
  finished(verb: string): Promise<void>;
  /** Resolves with the machine id when a repave starts waiting for its report. */
  waiting(): Promise<string>;
}

async function rig(
  options: {
    credentials?: string | null;
    gate?: BmcGate;
    autoReport?: boolean;
    ssh?: SshRunner;
  } = {},
): Promise<Rig> {
  let credentials: CredentialBook | undefined;
  let file: string | undefined;
  if (options.credentials !== null) {
    file = await credentialsFile(options.credentials ?? CREDENTIALS);
    credentials = await loadCredentials(file);
  }
  const recording = recordingDriver("redfish", options.gate);
  const inner = createNetbootBroker({ baseUrl: "http://10.0.2.100:8080", nonce: () => "nonce-1" });
  const waiters: ((id: string) => void)[] = [];
  const arrived: string[] = [];
  const broker: NetbootBroker = {
    baseUrl: inner.baseUrl,
    advertise: (url) => inner.advertise(url),
    routes: inner.routes,
    get pending() {
      return inner.pending;
    },
    awaitReport(call, machine, repave) {
      // Registers synchronously; the spy then tells the test (or reports, like the lab's VM).
      const done = inner.awaitReport(call, machine, repave);
      if (options.autoReport) {
        const mac = machine.spec!.macAddresses[0];
        fetchScript(inner, mac).then(([, script]) => report(inner, reportUrl(script).href));
      } else {
        const waiter = waiters.shift();
        if (waiter) waiter(machine.machineId);
        else arrived.push(machine.machineId);
      }
      return done;
    },
  };
  const engine = createEngine({
    provider: createHardwareProvider({
      simulated: createFakeProvider({ timing: "zero" }),
      drivers: [recording.driver, recordingDriver("ipmi").driver],
      credentials,
      netboot: broker,
      ssh: options.ssh,
    }),
    executor: { backoff: () => 0 },
  });
  return {
    engine,
    broker,
    calls: recording.calls,
    maxInFlight: recording.maxInFlight,
    finished: recording.finished,
    waiting: () => {
      const id = arrived.shift();
      if (id !== undefined) return Promise.resolve(id);
      return new Promise((resolve) => waiters.push(resolve));
    },
    async [Symbol.asyncDispose]() {
      await engine[Symbol.asyncDispose]();
      if (file) await Deno.remove(file);
    },
  };
}

function register(
  engine: Engine,
  machineId: string,
  spec: Partial<Omit<MachineSpec, "$typeName">>,
  labels: Record<string, string> = {},
): void {
  engine.registerMachine(create(MachineSchema, {
    machineId,
    spec: create(MachineSpecSchema, spec),
    labels,
  }));
}

/** Registers a machine and brings it to MAINTENANCE, where every operation may start. */
async function maintained(
  engine: Engine,
  machineId: string,
  spec: Partial<Omit<MachineSpec, "$typeName">>,
  labels: Record<string, string> = {},
): Promise<void> {
  register(engine, machineId, spec, labels);
  await enterMaintenance(engine, machineId);
}

const REDFISH_1 = {
  provider: "redfish",
  bmcAddress: "https://bmc-1.lab/redfish/v1/Systems/1",
  macAddresses: ["52:54:00:00:00:01"],
};

Deno.test(
  "a reimage of a redfish machine sets PXE, restarts, and completes on the netboot report",
  SANITIZE,
  async () => {
    await using r = await rig();
    await maintained(r.engine, "m-1", REDFISH_1);
    const { operation } = r.engine.startOperation({
      requestId: "r1",
      machineId: "m-1",
      type: OperationType.REIMAGE,
    });
    assert.equal(await r.waiting(), "m-1");
    assert.deepEqual(r.calls.map((c) => [c.verb, c.force]), [
      ["setBootPxe", undefined],
      ["restart", false],
    ]);
    assert.equal(r.calls[0].username, "exact-user", "the exact address's entry wins");
    assert.equal(r.calls[0].key, "bmc-1.lab:443");

    const [status, script] = await fetchScript(r.broker, "52-54-00-00-00-01");
    assert.equal(status, 200);
    assert.match(script, /^#!ipxe\n/);
    const url = reportUrl(script);
    assert.equal(url.origin, "http://10.0.2.100:8080", "the callback uses the advertised base URL");
    url.searchParams.set("detail", "wrote ubuntu-2204-lab to /dev/sda");
    assert.equal(await report(r.broker, url.href), 200);

    const done = await untilTerminal(r.engine, operation.operationId);
    assert.equal(done.phase, OperationPhase.SUCCEEDED, done.error?.message ?? "");
    const log = logText(r.engine, operation.operationId).join("\n");
    assert.match(log, /fetched its iPXE script/);
    assert.match(log, /\[repave\] image writer: wrote ubuntu-2204-lab to \/dev\/sda/);
    assert.match(
      log,
      /\[simulated\] Cluster join .* is simulated: no real action for this redfish machine/,
    );
    assert.match(log, /\[simulated\] Cluster verification is simulated/);
    assert.ok(!log.includes(PASSWORD), "the password never reaches the log");
    assert.equal(r.broker.pending, 0);
    assert.equal(await report(r.broker, url.href), 403, "the nonce is spent");
  },
);

Deno.test(
  "a forced reboot of a redfish machine is a forced restart; fake, empty and the original's provider names stay simulated",
  SANITIZE,
  async () => {
    await using r = await rig();
    await maintained(r.engine, "m-1", REDFISH_1);
    await maintained(r.engine, "fake-1", { provider: "fake", sshEndpoint: "10.0.0.1:22" });
    await maintained(r.engine, "empty-1", {});
    // The original demo's provider names stay simulated, so its clients register unchanged.
    await maintained(r.engine, "boulder-1", { provider: "boulder", bmcAddress: "bmc-7" });
    const op = await runOperation(r.engine, {
      machineId: "m-1",
      type: OperationType.REBOOT,
      requestId: "r",
    });
    assert.equal(op.phase, OperationPhase.SUCCEEDED, op.error?.message ?? "");
    const forced = r.engine.startOperation({
      requestId: "r2",
      machineId: "m-1",
      type: OperationType.REBOOT,
      force: true,
    });
    assert.equal(
      (await untilTerminal(r.engine, forced.operation.operationId)).phase,
      OperationPhase.SUCCEEDED,
    );
    assert.deepEqual(r.calls.map((c) => [c.verb, c.force]), [["restart", false], [
      "restart",
      true,
    ]]);
    for (const machineId of ["fake-1", "empty-1", "boulder-1"]) {
      const fake = await runOperation(r.engine, { machineId, type: OperationType.REIMAGE });
      assert.equal(fake.phase, OperationPhase.SUCCEEDED);
      const log = logText(r.engine, fake.operationId).join("\n");
      assert.match(log, /\[netboot\] IPXE configuration updated/, "the simulated provider's lines");
      assert.doesNotMatch(log, /\[simulated\]/);
    }
    assert.equal(r.calls.length, 2, "simulated machines never reach a driver");
  },
);

Deno.test(
  "registration refuses an unknown driver or a malformed address, naming the field",
  SANITIZE,
  async () => {
    await using r = await rig();
    const cases: [Partial<Omit<MachineSpec, "$typeName">>, string, RegExp][] = [
      [{ provider: "bouldr" }, "spec.provider", /not a driver: use fake, redfish, ipmi/],
      [{ provider: "redfish" }, "spec.bmc_address", /required for provider redfish/],
      [
        { provider: "redfish", bmcAddress: "ftp://bmc" },
        "spec.bmc_address",
        /not a Redfish address/,
      ],
      [
        { provider: "redfish", bmcAddress: "bmc-1.lab" },
        "spec.bmc_address",
        /not a Redfish address/,
      ],
      [
        { provider: "redfish", bmcAddress: "https://bmc/redfish/v1/Managers/1" },
        "spec.bmc_address",
        /Systems\/<id>/,
      ],
      [
        { provider: "redfish", bmcAddress: "https://admin:pw@bmc" },
        "spec.bmc_address",
        /--bmc-credentials/,
      ],
      [{ provider: "ipmi", bmcAddress: "bmc:99999" }, "spec.bmc_address", /not an IPMI address/],
      [{ provider: "ipmi", bmcAddress: "https://bmc" }, "spec.bmc_address", /host\[:port\]/],
      [
        { provider: "fake", sshEndpoint: "10.0.0.1:99999" },
        "spec.ssh_endpoint",
        /not host\[:port\]/,
      ],
      [
        { provider: "ipmi", bmcAddress: "b", sshEndpoint: "a b:22" },
        "spec.ssh_endpoint",
        /host\[:port\]/,
      ],
    ];
    for (const [spec, field, message] of cases) {
      assert.throws(
        () => register(r.engine, "m-bad", spec),
        (error) => {
          assert.ok(error instanceof InvalidArgumentError, String(error));
          assert.equal(error.metadata.field, field, JSON.stringify(spec));
          assert.equal(error.metadata.machineId, "m-bad");
          assert.match(error.message, message);
          return true;
        },
      );
    }
    assert.equal(r.engine.listMachines({}).items.length, 0, "nothing was stored");
    // The forms that pass.
    register(r.engine, "ok-1", { provider: "redfish", bmcAddress: "http://127.0.0.1:8000" });
    register(r.engine, "ok-2", {
      provider: "redfish",
      bmcAddress: "https://[::1]:8443/redfish/v1/Systems/abc/",
    });
    register(r.engine, "ok-3", {
      provider: "ipmi",
      bmcAddress: "bmc-7.lab",
      sshEndpoint: "[fe80::1]:2222",
    });
    register(r.engine, "ok-4", { provider: "", bmcAddress: "anything goes for a fake machine" });
    assert.throws(
      () =>
        r.engine.updateMachine("ok-3", {
          spec: create(MachineSpecSchema, { provider: "redfish", bmcAddress: "x" }),
        }),
      /not a Redfish address/,
      "an update is checked the same way",
    );
  },
);

Deno.test(
  "a missing credential fails the step naming the file and the machine",
  SANITIZE,
  async () => {
    await using r = await rig();
    await maintained(r.engine, "m-9", { provider: "redfish", bmcAddress: "https://bmc-9.lab" });
    const op = await runOperation(r.engine, { machineId: "m-9", type: OperationType.REBOOT });
    assert.equal(op.phase, OperationPhase.FAILED);
    assert.match(
      op.error!.message,
      /no credential for machine m-9 \(BMC https:\/\/bmc-9\.lab\) in --bmc-credentials \S+\.yaml/,
    );
    assert.equal(r.calls.length, 0);

    await using bare = await rig({ credentials: null });
    await maintained(bare.engine, "m-1", REDFISH_1);
    const refused = await runOperation(bare.engine, {
      machineId: "m-1",
      type: OperationType.REBOOT,
    });
    assert.equal(refused.phase, OperationPhase.FAILED);
    assert.match(refused.error!.message, /started without --bmc-credentials/);
  },
);

Deno.test("credentials match by exact address, then host, then labels", SANITIZE, async () => {
  await using r = await rig();
  await maintained(r.engine, "shared-2", {
    provider: "redfish",
    bmcAddress: "https://BMC-SHARED.lab:8443/redfish/v1/Systems/2",
  });
  await maintained(r.engine, "rack-1", { provider: "ipmi", bmcAddress: "10.9.9.9" }, {
    rack: "r1",
  });
  for (const machineId of ["shared-2", "rack-1"]) {
    const op = await runOperation(r.engine, { machineId, type: OperationType.REBOOT });
    assert.equal(op.phase, OperationPhase.SUCCEEDED, op.error?.message ?? "");
  }
  assert.deepEqual(r.calls.map((c) => [c.machineId, c.username, c.key]), [
    ["shared-2", "host-user", "bmc-shared.lab:8443"],
  ], "the ipmi machine went to the ipmi driver, not the recorded redfish one");
});

Deno.test("credentials file errors name the file, the entry and the field", SANITIZE, async (t) => {
  const cases: [string, RegExp][] = [
    ["credentials: [", /not valid YAML/],
    ["- bmc: x", /a mapping with a `credentials:` list/],
    ["credentials: []\nextra: 1", /unknown top-level key "extra"/],
    ["credentials:\n  - bmc: h\n    password: p", /entry 1 \(bmc "h"\): username: is required/],
    [
      "credentials:\n  - bmc: h\n    username: u",
      /entry 1 \(bmc "h"\): password: give exactly one/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password: p\n    password_env: E",
      /password: give exactly one/,
    ],
    [
      "credentials:\n  - username: u\n    password: p",
      /entry 1: bmc: give exactly one of bmc .* and selector/,
    ],
    [
      "credentials:\n  - bmc: h\n    selector: {a: b}\n    username: u\n    password: p",
      /bmc: give exactly one/,
    ],
    [
      "credentials:\n  - selector: {}\n    username: u\n    password: p",
      /selector: must be a non-empty mapping/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password: p\n    pasword: q",
      /entry 1 \(bmc "h"\): pasword: unknown field/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password_env: BMDEMO_TEST_UNSET_VAR",
      /password_env: environment variable BMDEMO_TEST_UNSET_VAR is not set/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password_file: /nonexistent/pw",
      /password_file: cannot read "\/nonexistent\/pw"/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password: p\n    ca_file: /nonexistent/ca.pem",
      /ca_file: cannot read/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password: p\n    insecure: yes please",
      /insecure: must be true or false/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password: p\n    allow_bootdev_refused: 1",
      /allow_bootdev_refused: must be true or false/,
    ],
    [
      "credentials:\n  - bmc: h\n    username: u\n    password: p\n  - bmc: g\n    username: u\n    password: p\n    ssh_key_file: /nonexistent/key",
      /entry 2 \(bmc "g"\): ssh_key_file: cannot read/,
    ],
  ];
  for (const [text, expected] of cases) {
    await t.step(expected.source, async () => {
      const file = await credentialsFile(text);
      try {
        await assert.rejects(loadCredentials(file, { env: () => undefined }), (error: Error) => {
          assert.equal(error.name, "CredentialsFileError");
          assert.ok(error.message.startsWith(`--bmc-credentials ${file}: `), error.message);
          assert.match(error.message, expected);
          assert.ok(!error.message.includes("secret"), "no secret in the message");
          return true;
        });
      } finally {
        await Deno.remove(file);
      }
    });
  }
  await t.step("a missing file", async () => {
    await assert.rejects(
      loadCredentials("/nonexistent/creds.yaml"),
      /--bmc-credentials \/nonexistent\/creds.yaml: cannot read the file/,
    );
  });
  await t.step("password_file and password_env are resolved at load", async () => {
    const secret = await credentialsFile("from-file\n");
    const file = await credentialsFile(
      `credentials:\n  - bmc: a\n    username: u\n    password_file: ${secret}\n    ssh_user: root\n    ssh_key_file: ${secret}\n  - bmc: b\n    username: u\n    password_env: PW\n    insecure: true\n    allow_bootdev_refused: true\n`,
    );
    try {
      const book = await loadCredentials(file, {
        env: (name) => name === "PW" ? "from-env" : undefined,
      });
      const a = book.find({ address: "a", host: "a", labels: {} });
      assert.deepEqual(a, {
        username: "u",
        password: "from-file",
        sshUser: "root",
        sshKeyFile: secret,
      });
      assert.deepEqual(book.find({ address: "b", host: "b", labels: {} }), {
        username: "u",
        password: "from-env",
        insecure: true,
        allowBootDeviceRefused: true,
      });
      assert.equal(book.find({ address: "c", host: "c", labels: {} }), undefined);
    } finally {
      await Deno.remove(file);
      await Deno.remove(secret);
    }
  });
});

Deno.test(
  "netboot: no script without an expectation; a wrong nonce is refused and changes nothing",
  SANITIZE,
  async () => {
    await using r = await rig();
    assert.deepEqual((await fetchScript(r.broker, "52:54:00:00:00:01"))[0], 404);
    assert.equal(
      await report(r.broker, "http://s/boot/report?mac=52:54:00:00:00:01&nonce=nonce-1"),
      403,
    );
    await maintained(r.engine, "m-1", REDFISH_1);
    const { operation } = r.engine.startOperation({
      requestId: "r",
      machineId: "m-1",
      type: OperationType.REIMAGE,
    });
    await r.waiting();
    const [, script] = await fetchScript(r.broker, "52:54:00:00:00:01");
    const url = reportUrl(script);
    const wrong = new URL(url);
    wrong.searchParams.set("nonce", "nonce-2");
    assert.equal(await report(r.broker, wrong.href), 403);
    assert.equal(await report(r.broker, wrong.href, "POST"), 403);
    assert.equal(await report(r.broker, "http://s/boot/report?mac=52:54:00:00:00:01"), 400);
    assert.equal(r.broker.pending, 1, "still waiting");
    assert.equal(r.engine.getOperation(operation.operationId).phase, OperationPhase.RUNNING);
    // The right nonce by POST, with the image writer's output as the body.
    const response = await route(r.broker, "POST", "/boot/report").handle(
      new Request(`http://s/boot/report?mac=52:54:00:00:00:01&nonce=nonce-1`, {
        method: "POST",
        body: "line one\nline two\n",
      }),
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();
    assert.equal(
      (await untilTerminal(r.engine, operation.operationId)).phase,
      OperationPhase.SUCCEEDED,
    );
    const log = logText(r.engine, operation.operationId);
    assert.ok(log.includes("[repave] image writer: line two"));
  },
);

Deno.test(
  "netboot: a wait ended by the step's signal says what was last seen",
  SANITIZE,
  async () => {
    const broker = createNetbootBroker({ baseUrl: "http://h:1/", nonce: () => "n" });
    const machine = create(MachineSchema, {
      machineId: "m-1",
      spec: { macAddresses: ["AA:BB:CC:00:00:01"] },
    });
    const repave = { imageRef: "img", cloudInitRef: "ci" };
    for (const fetched of [false, true]) {
      const lines: string[] = [];
      const controller = new AbortController();
      const call = {
        operationId: "op-1",
        signal: controller.signal,
        log: (line: string) => lines.push(line),
      };
      const waiting = broker.awaitReport(call, machine, repave);
      if (fetched) assert.equal((await fetchScript(broker, "aa:bb:cc:00:00:01"))[0], 200);
      const reason = new Error("step repave-image timed out after 600s");
      controller.abort(reason);
      await assert.rejects(waiting, (error) => error === reason);
      assert.match(
        lines.at(-1)!,
        fetched
          ? /fetched its iPXE script 1 time\(s\), last at .*, but the image writer never called back/
          : /never fetched its iPXE script .* reaches http:\/\/h:1\)/,
      );
      assert.equal(broker.pending, 0, "the expectation is gone");
      assert.equal((await fetchScript(broker, "aa:bb:cc:00:00:01"))[0], 404);
    }
  },
);

Deno.test(
  "netboot: a failed report, a machine without MAC and a shared MAC fail the repave clearly",
  SANITIZE,
  async () => {
    const broker = createNetbootBroker({
      baseUrl: "http://h:1",
      nonce: () => "n",
      maxExpectations: 2,
    });
    const call = { operationId: "op-1", signal: new AbortController().signal, log() {} };
    const repave = { imageRef: "img", cloudInitRef: "ci" };
    const machine = (id: string, macs: string[]) =>
      create(MachineSchema, { machineId: id, spec: { macAddresses: macs } });
    await assert.rejects(
      createNetbootBroker({}).awaitReport(call, machine("m-5", ["02:00:00:00:00:05"]), repave),
      /needs the URL machines reach this server's HTTP surface at: start the server with --http-port/,
    );
    await assert.rejects(
      broker.awaitReport(call, machine("m-0", []), repave),
      /m-0 has no spec.mac_addresses/,
    );
    const first = broker.awaitReport(call, machine("m-1", ["02:00:00:00:00:01"]), repave);
    await assert.rejects(
      broker.awaitReport(call, machine("m-2", ["02-00-00-00-00-01"]), repave),
      /MAC 02:00:00:00:00:01 is awaited by the repave of m-1/,
    );
    const second = broker.awaitReport(call, machine("m-3", ["02:00:00:00:00:03"]), repave);
    await assert.rejects(
      broker.awaitReport(call, machine("m-4", ["02:00:00:00:00:04"]), repave),
      /the limit is 2/,
    );
    assert.equal(
      await report(
        broker,
        "http://s/boot/report?mac=02:00:00:00:00:01&nonce=n&result=failed&detail=disk%20not%20found",
      ),
      200,
    );
    await assert.rejects(first, /the image writer reported a failure: disk not found/);
    assert.equal(await report(broker, "http://s/boot/report?mac=02:00:00:00:00:03&nonce=n"), 200);
    assert.equal((await second).result, "ok");
  },
);

Deno.test(
  "BMC protection: 50 concurrent reimages against one BMC never exceed the gate's limit",
  SANITIZE,
  async () => {
    const limit = 4;
    await using r = await rig({ gate: testGate(limit), autoReport: true });
    for (let i = 1; i <= 50; i++) {
      const hex = i.toString(16).padStart(2, "0");
      await maintained(r.engine, `m-${i}`, {
        provider: "redfish",
        // One BMC serving 50 systems: the same host and port, so one gate key.
        bmcAddress: `https://bmc-shared.lab/redfish/v1/Systems/${i}`,
        macAddresses: [`52:54:00:00:01:${hex}`],
      });
    }
    const ops = await Promise.all(
      Array.from(
        { length: 50 },
        (_, i) => runOperation(r.engine, { machineId: `m-${i + 1}`, type: OperationType.REIMAGE }),
      ),
    );
    assert.deepEqual(ops.map((op) => OperationPhase[op.phase]), Array(50).fill("SUCCEEDED"));
    assert.equal(r.calls.length, 100, "setBootPxe and restart for each");
    assert.deepEqual(new Set(r.calls.map((c) => c.key)), new Set(["bmc-shared.lab:443"]));
    assert.equal(r.maxInFlight(), limit, "the gate was full but never over");
  },
);

Deno.test(
  "executeSshCommand: a real machine with an ssh_endpoint goes to the SSH runner",
  SANITIZE,
  async () => {
    const runs: unknown[] = [];
    const ssh: SshRunner = {
      run(call, target, options) {
        call.log(`ran ${options.scriptRef}`);
        runs.push({ target, script: options.scriptRef });
        return Promise.resolve();
      },
    };
    const key = await Deno.makeTempFile({ prefix: "bmdemo-key-" });
    const file = await credentialsFile(
      CREDENTIALS.replace(
        "username: exact-user",
        `username: exact-user\n    ssh_user: root\n    ssh_key_file: ${key}`,
      ),
    );
    const userOnly = await credentialsFile(
      CREDENTIALS.replace("username: exact-user", "username: exact-user\n    ssh_user: root"),
    );
    try {
      const provider = createHardwareProvider({
        simulated: createFakeProvider({ timing: "zero" }),
        drivers: [recordingDriver("redfish").driver],
        credentials: await loadCredentials(file),
        netboot: createNetbootBroker({ baseUrl: "http://h:1" }),
        ssh,
      });
      const lines: string[] = [];
      const call = {
        operationId: "op",
        signal: new AbortController().signal,
        log: (l: string) => lines.push(l),
      };
      const withSsh = create(MachineSchema, {
        machineId: "m-1",
        spec: { ...REDFISH_1, sshEndpoint: "10.0.0.1:2222" },
      });
      await provider.executeSshCommand(call, withSsh, { scriptRef: "drain_node.sh" });
      assert.deepEqual(runs, [{
        target: { machineId: "m-1", endpoint: "10.0.0.1:2222", user: "root", keyFile: key },
        script: "drain_node.sh",
      }]);
      const without = create(MachineSchema, { machineId: "m-2", spec: REDFISH_1 });
      await provider.executeSshCommand(call, without, { scriptRef: "drain_node.sh" });
      assert.equal(runs.length, 1);
      assert.ok(
        lines.some((l) =>
          /\[simulated\] The SSH command \(the machine has no spec.ssh_endpoint\) is simulated/
            .test(
              l,
            )
        ),
      );
      const fake = create(MachineSchema, {
        machineId: "m-3",
        spec: { sshEndpoint: "10.0.0.3:22" },
      });
      await provider.executeSshCommand(call, fake, { scriptRef: "drain_node.sh" });
      assert.equal(runs.length, 1, "a fake machine's SSH stays simulated");
      // An entry without a key file: a permanent step error naming the field, nothing run.
      const keyless = createHardwareProvider({
        simulated: createFakeProvider({ timing: "zero" }),
        drivers: [recordingDriver("redfish").driver],
        credentials: await loadCredentials(userOnly),
        netboot: createNetbootBroker({ baseUrl: "http://h:1" }),
        ssh,
      });
      const refused = await keyless.executeSshCommand(call, withSsh, { scriptRef: "x.sh" }).then(
        () => undefined,
        (error: unknown) => error,
      );
      assert.ok(refused instanceof ProviderError && refused.permanent);
      assert.match(
        refused.message,
        /machine m-1 has an ssh_endpoint, but its entry .* has no ssh_key_file/,
      );
      assert.equal(runs.length, 1);
    } finally {
      await Deno.remove(file);
      await Deno.remove(userOnly);
      await Deno.remove(key);
    }
  },
);

Deno.test(
  "cancelling a reimage that waits for its netboot report ends the wait and drops the expectation",
  SANITIZE,
  async () => {
    await using r = await rig();
    await maintained(r.engine, "m-1", REDFISH_1);
    const { operation } = r.engine.startOperation({
      requestId: "r",
      machineId: "m-1",
      type: OperationType.REIMAGE,
    });
    await r.waiting();
    assert.equal((await fetchScript(r.broker, "52:54:00:00:00:01"))[0], 200);
    const poweredOff = r.finished("powerOff");
    r.engine.cancelOperation(operation.operationId);
    const done = await untilTerminal(r.engine, operation.operationId);
    // A user's cancel while the machine network-boots powers it off through its BMC.
    await poweredOff;
    assert.deepEqual(r.calls.at(-1), {
      verb: "powerOff",
      machineId: "m-1",
      key: r.calls[0].key,
      username: r.calls[0].username,
    });
    await new Promise((resolve) => setTimeout(resolve, 0)); // the provider's own continuation
    assert.equal(done.phase, OperationPhase.CANCELED);
    assert.equal(r.broker.pending, 0, "the expectation is gone");
    assert.equal((await fetchScript(r.broker, "52:54:00:00:00:01"))[0], 404);
    const log = logText(r.engine, operation.operationId).join("\n");
    assert.match(log, /A cancel while the machine network-boots powers it off/);
    assert.match(log, /fetched its iPXE script\n=== Operation CANCELED ===$/);
  },
);

Deno.test("netboot: advertise() sets the base URL once the HTTP surface listens; an explicit one stays", () => {
  const late = createNetbootBroker({});
  assert.equal(late.baseUrl, undefined);
  late.advertise("http://127.0.0.1:8080/");
  assert.equal(late.baseUrl, "http://127.0.0.1:8080");
  const fixed = createNetbootBroker({ baseUrl: "http://10.0.2.100:8080" });
  fixed.advertise("http://127.0.0.1:8080/");
  assert.equal(fixed.baseUrl, "http://10.0.2.100:8080", "--http-advertise-url wins");
});
