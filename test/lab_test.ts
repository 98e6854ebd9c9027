/**
 * The lab's pieces: the netboot stand-in against the server's broker, the Redfish mock and
 * `ipmi_sim` (chassis mode) reporting boots, the lab's credentials file, and the lab targeting a
 * server started before it (`--server`, `--credentials`).
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  MachineService,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { connectClient } from "../lib/client/mod.ts";
import { loadCredentials } from "../lib/provider/credentials.ts";
import { createNetbootBroker } from "../lib/provider/netboot.ts";
import { labCredentials, labMac, startLab } from "../scripts/lab.ts";
import { freePort, startIpmiSim } from "../scripts/lab/ipmi_sim.ts";
import { netbootStandIn } from "../scripts/lab/netboot_stand_in.ts";
import { type RedfishBoot, startRedfishMock } from "../scripts/lab/redfish_mock.ts";
import { spawnServer } from "../scripts/server_process.ts";
import { SANITIZE } from "./helpers.ts";

Deno.test(
  "netbootStandIn() retries while no repave awaits, then follows the script to the report",
  SANITIZE,
  async () => {
    const mac = labMac(1);
    // The advertised base is one only VMs reach: the stand-in resolves against its server.
    const broker = createNetbootBroker({ baseUrl: "http://10.0.2.100:9" });
    const seen: string[] = [];
    const firstMiss = Promise.withResolvers<void>();
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      async (r) => {
        const url = new URL(r.url);
        const route = broker.routes.find((x) => x.method === r.method && x.path === url.pathname);
        const response = route ? await route.handle(r) : new Response("none", { status: 404 });
        seen.push(`${url.pathname} ${response.status}`);
        if (response.status === 404) firstMiss.resolve();
        return response;
      },
    );
    const lines: string[] = [];
    const booted = netbootStandIn({
      server: `http://127.0.0.1:${server.addr.port}`,
      mac,
      detail: "stand-in for system 1",
      log: (line) => lines.push(line),
      signal: AbortSignal.timeout(30_000),
      retryMs: 10,
    });
    await firstMiss.promise;
    const machine = create(MachineSchema, { machineId: "m-1", spec: { macAddresses: [mac] } });
    const report = await broker.awaitReport(
      { operationId: "op-1", signal: AbortSignal.timeout(30_000), log: () => {} },
      machine,
      { imageRef: "img", cloudInitRef: "ci" },
    );
    assert.equal(await booted, "reported");
    assert.equal(report.detail, "stand-in for system 1");
    assert.deepEqual(seen.slice(-2), ["/boot/ipxe 200", "/boot/report 200"]);
    assert.match(lines.join("\n"), /lab stand-in, no VM/);
  },
);

Deno.test("netbootStandIn() stops when its signal aborts", SANITIZE, async () => {
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("no repave", { status: 404 }),
  );
  const stop = new AbortController();
  const booted = netbootStandIn({
    server: `http://127.0.0.1:${server.addr.port}`,
    mac: labMac(2),
    detail: "x",
    log: (line) => {
      if (line.includes("GET")) stop.abort();
    },
    signal: stop.signal,
  });
  assert.equal(await booted, "aborted");
});

Deno.test(
  "Redfish mock with onBoot: a reset lands when due without a poll and reports its boot source",
  SANITIZE,
  async () => {
    const booted = Promise.withResolvers<[string, RedfishBoot]>();
    await using mock = startRedfishMock({
      systems: 2,
      powerDelayMs: 30,
      onBoot: (id, boot) => booted.resolve([id, boot]),
    });
    const auth = { authorization: `Basic ${btoa("admin:password")}` };
    const system = `${mock.url}/redfish/v1/Systems/2`;
    const patch = await fetch(system, {
      method: "PATCH",
      headers: auth,
      body: JSON.stringify({
        Boot: { BootSourceOverrideTarget: "Pxe", BootSourceOverrideEnabled: "Once" },
      }),
    });
    await patch.body?.cancel();
    const reset = await fetch(`${system}/Actions/ComputerSystem.Reset`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ ResetType: "ForceRestart" }),
    });
    await reset.body?.cancel();
    assert.deepEqual(await booted.promise, ["2", { source: "Pxe", image: null }]);
  },
);

Deno.test(
  "ipmi_sim chassis mode reports each boot with its device; bootdev pxe applies once",
  SANITIZE,
  async () => {
    const devices: string[] = [];
    const twoBoots = Promise.withResolvers<void>();
    await using bmc = await startIpmiSim({
      onBoot: (device) => {
        devices.push(device);
        if (devices.length === 2) twoBoots.resolve();
      },
    });
    const ipmitool = async (...args: string[]): Promise<void> => {
      const out = await new Deno.Command("ipmitool", {
        args: ["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", String(bmc.port)]
          .concat(["-U", bmc.username, "-E", ...args]),
        env: { IPMI_PASSWORD: bmc.password },
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
    };
    await ipmitool("chassis", "bootdev", "pxe");
    await ipmitool("power", "on");
    await ipmitool("power", "off");
    await ipmitool("power", "on");
    await twoBoots.promise;
    assert.deepEqual(devices, ["pxe", "default"]);
    assert.deepEqual(await bmc.boots(), ["pxe", "default"]);
  },
);

Deno.test("labCredentials(): VM BMCs may refuse a boot device, the others not", async () => {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(file, labCredentials("pw"));
    const book = await loadCredentials(file);
    const find = (labels: Record<string, string>) => book.find({ address: "", host: "", labels });
    assert.deepEqual(find({ lab: "bmdemo", "lab-bmc": "ipmi-vm" }), {
      username: "admin",
      password: "pw",
      allowBootDeviceRefused: true,
    });
    assert.deepEqual(find({ lab: "bmdemo", "lab-bmc": "ipmi" }), {
      username: "admin",
      password: "pw",
    });
  } finally {
    await Deno.remove(file);
  }
});

Deno.test(
  "startLab() targets a server started with its credentials file and flags: a Redfish machine reimages",
  SANITIZE,
  async () => {
    const file = await Deno.makeTempFile({ suffix: ".yaml" });
    try {
      // The server is started first, with the file an earlier lab wrote.
      await Deno.writeTextFile(file, labCredentials("earlier-lab"));
      const httpPort = freePort();
      await using server = await spawnServer([
        ...["--timing", "zero", "--http-port", String(httpPort), "--bmc-credentials", file],
      ]);
      const printed: string[] = [];
      await using lab = await startLab({
        machines: 1,
        server: server.address,
        httpPort,
        credentialsFile: file,
        log: (line) => printed.push(line),
      });
      assert.match(
        printed.join("\n"),
        new RegExp(`must run with: --bmc-credentials ${file} --http-port ${httpPort}`),
      );
      assert.equal(lab.serverProcess, undefined);
      using machines = connectClient(MachineService, server.address);
      using operations = connectClient(OperationService, server.address);
      const maintenance = await machines.enterMaintenance({
        machineId: "machine-1",
        requestId: "m",
      });
      const finish = async (operationId: string) => {
        for await (const _ of operations.streamOperationLogs({ operationId })) {
          // Ends when the operation does.
        }
        return await operations.getOperation({ operationId });
      };
      await finish(maintenance.operationId);
      const reimage = await machines.reimageMachine({ machineId: "machine-1", requestId: "r" });
      const done = await finish(reimage.operationId);
      assert.equal(done.phase, OperationPhase.SUCCEEDED, done.error?.message ?? "");
      await lab.stop();
      await server.stop();
    } finally {
      await Deno.remove(file);
    }
  },
);
