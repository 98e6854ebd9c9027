/**
 * The hardware lab end to end, across processes: `deno task lab --vm` (its server with
 * `--http-port`, an `ipmi_sim` BMC with a QEMU VM, a Redfish mock) and `bmdemo-cli` processes.
 * The VM network-boots, fetches its iPXE script from the server and calls back; a cancel while
 * it boots powers it off; stopping the lab leaves no process. And 50 concurrent reimages through
 * a real server against one Redfish BMC never exceed `--bmc-concurrency`.
 *
 * Needs Debian's openipmi, ipmitool, qemu-system-x86, ipxe-qemu and procps (`.ci/run`).
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  MachineService,
  MachineStatus_Phase as MachinePhase,
  Operation_Phase as OperationPhase,
  OperationEvent_Kind as EventKind,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { connectClient } from "../lib/client/mod.ts";
import { labCredentials, labMac } from "../scripts/lab.ts";
import { processList } from "../scripts/lab/ipmi_sim.ts";
import { startRedfishMock } from "../scripts/lab/redfish_mock.ts";
import { netbootStandIn } from "../scripts/lab/netboot_stand_in.ts";
import { spawnServer } from "../scripts/server_process.ts";
import { nextEvent, SANITIZE } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLI = `${ROOT}cli.ts`;
const LAB = `${ROOT}scripts/lab.ts`;

async function cli(server: string, ...args: string[]): Promise<{ code: number; out: string }> {
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", CLI, "--server", server, ...args],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code: run.code, out: decoder.decode(run.stdout) + decoder.decode(run.stderr) };
}

/**
 * The `ipmi_sim` processes serving these UDP ports (found by the `lan.conf` of their state
 * directories; other tests may run BMCs of their own meanwhile).
 */
async function ipmiSimPids(ports: number[]): Promise<number[]> {
  const dirs: string[] = [];
  for await (const entry of Deno.readDir("/tmp")) {
    if (!entry.name.startsWith("bmdemo-ipmi-sim-")) continue;
    const conf = await Deno.readTextFile(`/tmp/${entry.name}/lan.conf`).catch(() => "");
    if (ports.some((port) => conf.includes(`addr 127.0.0.1 ${port}\n`))) {
      dirs.push(`/tmp/${entry.name}/`);
    }
  }
  return (await processList())
    .filter((p) => p.args.startsWith("ipmi_sim") && dirs.some((dir) => p.args.includes(dir)))
    .map((p) => p.pid);
}

/** Which of `pids`, and of the processes naming the MAC or the credentials file, still run. */
async function leftovers(pids: number[], mac: string, credentials: string): Promise<string[]> {
  return (await processList())
    .filter((p) =>
      pids.includes(p.pid) || p.args.includes(mac) ||
      (credentials !== "" && p.args.includes(credentials))
    )
    .map((p) => `${p.pid} ${p.args}`);
}

/** Waits (bounded) until `check` holds, re-checking on each process-list read. */
async function until(check: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test(
  "lab --vm: a reimage through bmdemo-cli network-boots the QEMU VM behind ipmi_sim and succeeds; a cancel mid-boot powers it off; Ctrl+C leaves nothing running",
  SANITIZE,
  async () => {
    const mac = labMac(2);
    // Its own process group, so a failing test can end the lab and everything it started.
    const lab = new Deno.Command("setsid", {
      args: [Deno.execPath(), "run", "-A", LAB, "--machines", "2", "--vm"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const reader = lab.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    const errText = new Response(lab.stderr).text();
    let credentials = "";
    let bmcs: number[] = [];
    let stopped = false;
    try {
      while (!out.includes("Lab ready")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the lab exited before it was ready:\n${out}\n${await errText}`);
        out += value;
      }
      const server = /^Server: (\S+)/m.exec(out)![1];
      credentials = /credentials: (\S+)/.exec(out)![1];
      const port = Number(/machine-2 +ipmi +127\.0\.0\.1:(\d+)/.exec(out)![1]);
      bmcs = await ipmiSimPids([port]);
      assert.equal(bmcs.length, 1, "the lab's BMC runs");
      assert.equal((await Deno.stat(credentials)).mode! & 0o777, 0o600);
      assert.match(out, new RegExp(`machine-2 +ipmi +127\\.0\\.0\\.1:\\d+ +${mac} +\\(QEMU VM\\)`));
      const drain = (async () => {
        while (!(await reader.read()).done) { /* keep the pipe flowing */ }
      })();

      assert.equal((await cli(server, "enter-maintenance", "machine-2")).code, 0);
      // Cancel while the VM boots: the repave waits, the VM is in its firmware.
      using operations = connectClient(OperationService, server);
      const watch = new AbortController();
      const events = operations.watchOperations(
        { filter: "machine_id=machine-2", sendInitialSnapshot: true },
        { signal: watch.signal },
      )[Symbol.asyncIterator]();
      await nextEvent(events, (e) => e.kind === EventKind.SNAPSHOT_COMPLETE);
      const canceled = cli(server, "reimage", "machine-2", "--request-id", "lab-cancel");
      const repave = await nextEvent(
        events,
        (e) => e.kind === EventKind.STEP_STARTED && e.step === "repave-image",
      );
      watch.abort();
      const operationId = repave.snapshot!.operationId;
      const vms = async () =>
        (await processList()).filter((p) => p.args.includes("qemu-system") && p.args.includes(mac));
      assert.equal((await vms()).length, 1, "the VM runs: the reboot powered it on");
      assert.equal((await cli(server, "cancel", operationId)).code, 0);
      const result = await canceled;
      assert.equal(result.code, 5, result.out); // EXIT.CANCELED
      await until(async () => (await vms()).length === 0, "the cancel powered the VM off");
      const canceledLog = await cli(server, "logs", operationId);
      assert.match(canceledLog.out, /A cancel while the machine network-boots powers it off/);

      const reimage = await cli(server, "reimage", "machine-2", "-v");
      assert.equal(reimage.code, 0, reimage.out);
      for (
        const line of [
          /ipmi 127\.0\.0\.1:\d+: ipmitool chassis bootdev pxe/,
          /network-boots by itself \(allow_bootdev_refused\)/,
          /ipmi 127\.0\.0\.1:\d+: Chassis Power Control: Up\/On/,
          /ipmi 127\.0\.0\.1:\d+: Chassis Power is on/,
          new RegExp(`\\[repave\\] ${mac} fetched its iPXE script`),
          // The VM's own iPXE expanded its version and MAC: no stand-in answered for it.
          new RegExp(`\\[repave\\] image writer: iPXE 1\\..* on ${mac}`),
          /\[repave\] Image writer reported success/,
          /✓ SUCCEEDED/,
        ]
      ) {
        assert.match(reimage.out, line);
      }

      Deno.kill(-lab.pid, "SIGINT");
      stopped = true;
      assert.equal((await lab.status).code, 130);
      await drain;
      assert.deepEqual(await leftovers(bmcs, mac, credentials), [], "the lab left nothing running");
      await assert.rejects(Deno.stat(credentials), Deno.errors.NotFound);
    } finally {
      if (!stopped) {
        try {
          Deno.kill(-lab.pid, "SIGKILL");
        } catch { /* gone */ }
        // ipmi_sim and QEMU run in process groups of their own: end what names the lab's MAC.
        for (const line of await leftovers(bmcs, mac, credentials)) {
          try {
            Deno.kill(-Number(line.split(" ")[0]), "SIGKILL");
          } catch { /* gone */ }
        }
        await reader.cancel().catch(() => {});
      }
      await lab.status;
      await errText;
    }
  },
);

Deno.test(
  "50 concurrent reimages through the server against one Redfish BMC never exceed --bmc-concurrency",
  SANITIZE,
  async () => {
    const count = 50;
    const limit = 3;
    const password = "lab-pass";
    const boots = new AbortController();
    const standIns: Promise<unknown>[] = [];
    let httpUrl = "";
    await using mock = startRedfishMock({
      systems: count,
      password,
      powerDelayMs: 20,
      onBoot: (id, { source }) => {
        if (source !== "Pxe") return;
        standIns.push(netbootStandIn({
          server: httpUrl,
          mac: labMac(Number(id)),
          detail: "stand-in",
          log: () => {},
          signal: boots.signal,
          retryMs: 50,
        }));
      },
    });
    // A BMC that takes its time: without the gate, the reimages' requests would pile up in it.
    mock.inject({ kind: "slow", delayMs: 20 });
    const credentials = await Deno.makeTempFile({ suffix: ".yaml" });
    try {
      await Deno.writeTextFile(credentials, labCredentials(password));
      await using server = await spawnServer([
        ...["--timing", "zero", "--http-port", "0", "--bmc-credentials", credentials],
        ...["--bmc-concurrency", String(limit)],
      ]);
      httpUrl = server.dashboard!;
      using machines = connectClient(MachineService, server.address);
      using operations = connectClient(OperationService, server.address);
      const ids = Array.from({ length: count }, (_, i) => `machine-${i + 1}`);
      await Promise.all(ids.map((machineId, i) =>
        machines.registerMachine({
          machine: create(MachineSchema, {
            machineId,
            spec: {
              provider: "redfish",
              bmcAddress: `${mock.url}/redfish/v1/Systems/${i + 1}`,
              macAddresses: [labMac(i + 1)],
            },
            status: { phase: MachinePhase.READY },
            labels: { lab: "bmdemo" },
          }),
        })
      ));
      const finish = async (operationId: string) => {
        for await (const _ of operations.streamOperationLogs({ operationId })) {
          // Ends when the operation does.
        }
        return await operations.getOperation({ operationId });
      };
      await Promise.all(ids.map(async (machineId) => {
        const op = await machines.enterMaintenance({ machineId, requestId: `m-${machineId}` });
        await finish(op.operationId);
      }));
      const started = await Promise.all(
        ids.map((machineId) => machines.reimageMachine({ machineId, requestId: machineId })),
      );
      const finished = await Promise.all(started.map((op) => finish(op.operationId)));
      for (const op of finished) {
        assert.equal(op.phase, OperationPhase.SUCCEEDED, op.error?.message ?? "");
      }
      assert.ok(mock.peakInFlight <= limit, `peak ${mock.peakInFlight} > ${limit}`);
      assert.ok(mock.peakInFlight >= 2, `the reimages overlapped: peak ${mock.peakInFlight}`);
      await server.stop();
    } finally {
      boots.abort();
      await Promise.allSettled(standIns);
      await Deno.remove(credentials);
    }
  },
);

Deno.test(
  "deno task demo --lab runs the tour on machines driven by the real drivers and leaves nothing running",
  SANITIZE,
  async () => {
    const demo = new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "demo", "--lab"],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const reader = demo.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const errText = new Response(demo.stderr).text();
    let out = "";
    let bmcs: number[] = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
      if (bmcs.length === 0 && out.includes("Live dashboard")) {
        const ports = [...out.matchAll(/machine-\d: ipmi 127\.0\.0\.1:(\d+)/g)].map((m) =>
          Number(m[1])
        );
        assert.equal(ports.length, 2, out);
        bmcs = await ipmiSimPids(ports);
      }
    }
    const status = await demo.status;
    assert.equal(status.code, 0, `${out}\n${await errText}`);
    await errText;
    assert.equal(bmcs.length, 2, "both IPMI BMCs ran during the tour");
    for (
      const expected of [
        /Not importing: machine-1 \(redfish\),\s+machine-2 \(ipmi\),\s+machine-3 \(redfish\)\s+are\s+driven\s+by\s+real\s+BMC\s+drivers/,
        /\$ bmdemo-cli reimage machine-1 -v\n[^$]*Redfish POST \/redfish\/v1\/Systems\/1\/Actions\/ComputerSystem\.Reset/,
        /image writer: bmdemo lab stand-in for Redfish system 1: no image written/,
        // "When Hardware Fails" on the lab: machine-4's BMC refuses 2 power changes, so both
        // attempts of reboot-to-netboot fail with the IPMI driver's error; a second reimage works.
        /fault: machine-4's BMC refuses its next 2 power changes/,
        /machine-4 is driven by the real ipmi driver/,
        /\$ bmdemo-cli reimage machine-4 -v\n[^$]*ipmitool power on\n[^$]*Step failed: IPMI BMC 127\.0\.0\.1:\d+ failed "power on": Set Chassis Power Control to Up\/On failed: Unspecified error\n[^$]*Retry 1\/1[^$]*ipmitool power on\n[^$]*✗ reboot-to-netboot\n[^$]*✗ FAILED: IPMI BMC/,
        /\$ bmdemo-cli list\n[^$]*machine-4 +MAINT +⚠ATTN/,
        /\$ bmdemo-cli reimage machine-4\n[^$]*lab: 52:54:00:1a:00:04: report answered HTTP 200[^$]*✓ SUCCEEDED\n\n\$ bmdemo-cli list\n[^$]*machine-4 +MAINT +MAINT +✓ +✓/,
        /Demo Complete/,
      ]
    ) {
      assert.match(out, expected);
    }
    assert.deepEqual(await leftovers(bmcs, labMac(2), ""), [], "the lab left nothing running");
  },
);
