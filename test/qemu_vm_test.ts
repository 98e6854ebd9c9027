/**
 * A network-booting QEMU VM (scripts/lab/qemu.ts), run directly and behind `ipmi_sim` in VM mode
 * driven by the IPMI driver. Each test boots or starts a real VM under software emulation.
 */
import assert from "node:assert/strict";
import { createIpmiDriver, IpmiError } from "../lib/provider/ipmi.ts";
import type { ProviderCall } from "../lib/provider/mod.ts";
import { processList, startIpmiSim } from "../scripts/lab/ipmi_sim.ts";
import { startNetbootVm } from "../scripts/lab/qemu.ts";
import { SANITIZE } from "./helpers.ts";

function testCall(): ProviderCall & { lines: string[] } {
  const lines: string[] = [];
  return {
    operationId: "op-1",
    signal: new AbortController().signal,
    lines,
    log: (line) => lines.push(line),
  };
}

/** A loopback HTTP server the VM's guestfwd connects to when QEMU starts (it must listen first). */
function bootServer(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("#!ipxe\nshell\n"),
  );
}

async function vmsWithMac(mac: string): Promise<number[]> {
  return (await processList()).filter((p) => p.args.includes("qemu-system") && p.args.includes(mac))
    .map((p) => p.pid);
}

Deno.test(
  "startNetbootVm() boots iPXE that chains to the caller's server with the VM's MAC",
  SANITIZE,
  async () => {
    const called = Promise.withResolvers<string>();
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) => {
        called.resolve(new URL(request.url).searchParams.get("mac") ?? "");
        return new Response("#!ipxe\necho booted by bmdemo\nshell\n");
      },
    );
    const mac = "52:54:00:12:34:56";
    const vm = await startNetbootVm({
      httpPort: server.addr.port,
      bootPath: "/boot?mac=${net0/mac}",
      mac,
    });
    try {
      assert.deepEqual(await vmsWithMac(mac), [vm.pid]);
      assert.equal(await called.promise, mac);
    } finally {
      await vm.stop();
    }
    assert.deepEqual(await vmsWithMac(mac), [], "the VM is stopped");
  },
);

Deno.test(
  "startIpmiSim() in VM mode starts QEMU on power on and ends it on power off",
  SANITIZE,
  async () => {
    const mac = "52:54:00:ab:cd:01";
    await using server = bootServer();
    await using bmc = await startIpmiSim({
      vm: { httpPort: server.addr.port, bootPath: "/boot?mac=${net0/mac}", mac },
    });
    const target = {
      machineId: "machine-1",
      address: bmc.address,
      key: bmc.address,
      credential: { username: bmc.username, password: bmc.password },
    };
    const gate = { run: <T>(_k: string, _s: AbortSignal, action: () => Promise<T>) => action() };
    const driver = createIpmiDriver({ gate, pollIntervalMs: 50, retries: 1 });
    const call = testCall();
    assert.equal(await driver.powerState(call, target), "off");
    assert.deepEqual(await vmsWithMac(mac), []);

    // This BMC rejects boot devices: an error, unless the driver is told the VM boots by itself.
    const refused = await driver.setBootPxe(call, target).catch((e) => e);
    assert.ok(refused instanceof IpmiError, String(refused));
    assert.equal(refused.failure, "rejected");
    assert.equal(
      refused.message,
      `IPMI BMC ${bmc.address} refused "chassis bootdev pxe": Set Chassis Boot Parameter 4 failed: Invalid data field in request; Set Chassis Boot Parameter 5 failed: Invalid data field in request`,
    );
    await createIpmiDriver({ gate, pollIntervalMs: 50, retries: 1, allowBootDeviceRefused: true })
      .setBootPxe(call, target);
    assert.match(call.lines.at(-1)!, /network-boots by itself/);
    // The same per BMC, from its --bmc-credentials entry (allow_bootdev_refused: true).
    await driver.setBootPxe(call, {
      ...target,
      credential: { ...target.credential, allowBootDeviceRefused: true },
    });
    assert.match(call.lines.at(-1)!, /network-boots by itself \(allow_bootdev_refused\)/);

    await driver.powerOn(call, target);
    const [qemu] = await vmsWithMac(mac);
    assert.ok(qemu, `power on started QEMU: ${bmc.output()}`);
    assert.deepEqual((await bmc.processes()).sort(), [bmc.pid, qemu].sort());
    await driver.powerOff(call, target);
    assert.deepEqual(await vmsWithMac(mac), [], "power off ended QEMU");
    assert.deepEqual(await bmc.processes(), [bmc.pid]);
  },
);

Deno.test("startIpmiSim() in VM mode ends a running VM when it stops", SANITIZE, async () => {
  const mac = "52:54:00:ab:cd:02";
  await using server = bootServer();
  const bmc = await startIpmiSim({ vm: { httpPort: server.addr.port, bootPath: "/x", mac } });
  const gate = { run: <T>(_k: string, _s: AbortSignal, action: () => Promise<T>) => action() };
  await createIpmiDriver({ gate, pollIntervalMs: 50, retries: 1 }).powerOn(testCall(), {
    machineId: "machine-1",
    address: bmc.address,
    key: bmc.address,
    credential: { username: bmc.username, password: bmc.password },
  });
  assert.equal((await vmsWithMac(mac)).length, 1);
  await bmc.stop();
  assert.deepEqual(await vmsWithMac(mac), []);
  assert.deepEqual(await bmc.processes(), []);
});
