/**
 * The IPMI driver against OpenIPMI's `ipmi_sim` (scripts/lab/ipmi_sim.ts) over real `ipmitool`:
 * the chassis-control hook records what the BMC was asked to do.
 */
import assert from "node:assert/strict";
import type { BmcGate, BmcTarget } from "../lib/provider/bmc.ts";
import {
  createIpmiDriver,
  type IpmiDriverOptions,
  IpmiError,
  parseIpmiAddress,
} from "../lib/provider/ipmi.ts";
import type { ProviderCall } from "../lib/provider/mod.ts";
import { freePort, type IpmiSim, processList, startIpmiSim } from "../scripts/lab/ipmi_sim.ts";
import { SANITIZE } from "./helpers.ts";

/** A gate that lets everything through and counts what passed, per key. */
function countingGate(): BmcGate & { counts: Map<string, number> } {
  const counts = new Map<string, number>();
  return {
    counts,
    run(key, signal, action) {
      signal.throwIfAborted();
      counts.set(key, (counts.get(key) ?? 0) + 1);
      return action();
    },
  };
}

function testCall(signal = new AbortController().signal): ProviderCall & { lines: string[] } {
  const lines: string[] = [];
  return { operationId: "op-1", signal, lines, log: (line) => lines.push(line) };
}

function targetOf(bmc: { address: string; username: string; password: string }): BmcTarget {
  return {
    machineId: "machine-1",
    address: bmc.address,
    key: bmc.address,
    credential: { username: bmc.username, password: bmc.password },
  };
}

const FAST: Omit<IpmiDriverOptions, "gate"> = {
  pollIntervalMs: 20,
  packetTimeoutSeconds: 1,
  retries: 1,
};

/** The `ipmitool` commands a call ran, from its log, consecutive repeats folded. */
function commandsOf(lines: string[]): string[] {
  return fold(lines.flatMap((line) => line.match(/: ipmitool (.*)$/)?.[1] ?? []));
}

function fold(items: string[]): string[] {
  return items.filter((item, i) => item !== items[i - 1]);
}

async function withSim(
  options: Parameters<typeof startIpmiSim>[0],
  body: (bmc: IpmiSim) => Promise<void>,
): Promise<void> {
  await using bmc = await startIpmiSim(options);
  await body(bmc);
}

Deno.test(
  "createIpmiDriver() sets boot to PXE, power-cycles and polls until on, in order",
  SANITIZE,
  () =>
    withSim({ power: "on" }, async (bmc) => {
      const gate = countingGate();
      const driver = createIpmiDriver({ gate, ...FAST });
      const call = testCall();
      await driver.setBootPxe(call, targetOf(bmc));
      await driver.restart(call, targetOf(bmc), { force: true });
      assert.deepEqual(commandsOf(call.lines), [
        "raw 0x00 0x08 0x03 0x08",
        "chassis bootdev pxe",
        "power status",
        "power cycle",
        "power status",
      ]);
      // ipmi_sim powers back on ~1 s after the cycle's off; the driver polled through it.
      assert.match(
        fold(await bmc.calls()).join(", "),
        /^get boot, set boot pxe, get power, set power 0, (get power, )?set power 1, get power$/,
      );
      assert.equal(await bmc.power(), "on");
      const ipmitoolRuns = call.lines.filter((line) => line.includes(": ipmitool ")).length;
      assert.deepEqual([...gate.counts], [[bmc.address, ipmitoolRuns]]);
    }),
);

Deno.test(
  "createIpmiDriver() restarts gracefully with a soft shutdown, then powers on",
  SANITIZE,
  () =>
    withSim({ power: "on" }, async (bmc) => {
      const call = testCall();
      await createIpmiDriver({ gate: countingGate(), ...FAST }).restart(call, targetOf(bmc), {
        force: false,
      });
      assert.deepEqual(commandsOf(call.lines), [
        "power status",
        "power soft",
        "power status",
        "power on",
        "power status",
      ]);
      assert.deepEqual(fold(await bmc.calls()), [
        "get power",
        "set shutdown 1",
        "get power",
        "set power 1",
        "get power",
      ]);
    }),
);

Deno.test(
  "createIpmiDriver() powers off hard when the OS ignores the soft shutdown",
  SANITIZE,
  () =>
    withSim({ power: "on", obeySoftOff: false }, async (bmc) => {
      const call = testCall();
      const driver = createIpmiDriver({ gate: countingGate(), ...FAST, softOffTimeoutMs: 100 });
      await driver.restart(call, targetOf(bmc), { force: false });
      assert.deepEqual(commandsOf(call.lines), [
        "power status",
        "power soft",
        "power status",
        "power off",
        "power status",
        "power on",
        "power status",
      ]);
      assert.ok(call.lines.some((line) => line.includes("powering off hard")));
      assert.equal(await bmc.power(), "on");
    }),
);

Deno.test(
  "createIpmiDriver() restart of a machine that is off powers it on",
  SANITIZE,
  () =>
    withSim({ power: "off" }, async (bmc) => {
      const call = testCall();
      await createIpmiDriver({ gate: countingGate(), ...FAST }).restart(call, targetOf(bmc), {
        force: true,
      });
      assert.deepEqual(commandsOf(call.lines), ["power status", "power on", "power status"]);
      assert.deepEqual(fold(await bmc.calls()), ["get power", "set power 1", "get power"]);
    }),
);

Deno.test(
  "createIpmiDriver() powers on and off and reads the power state",
  SANITIZE,
  () =>
    withSim({}, async (bmc) => {
      const driver = createIpmiDriver({ gate: countingGate(), ...FAST });
      const call = testCall();
      assert.equal(await driver.powerState(call, targetOf(bmc)), "off");
      await driver.powerOn(call, targetOf(bmc));
      assert.equal(await bmc.power(), "on");
      await driver.powerOff(call, targetOf(bmc));
      assert.equal(await driver.powerState(call, targetOf(bmc)), "off");
      assert.deepEqual(fold(await bmc.calls()), [
        "get power",
        "set power 1",
        "get power",
        "set power 0",
        "get power",
      ]);
    }),
);

Deno.test(
  "ipmi_sim's injected fault: the next N power changes fail as a transient driver error, then work",
  SANITIZE,
  () =>
    withSim({}, async (bmc) => {
      const driver = createIpmiDriver({ gate: countingGate(), ...FAST });
      const call = testCall();
      await bmc.failPowerChanges(2);
      for (let i = 0; i < 2; i++) {
        const error = await driver.powerOn(call, targetOf(bmc)).catch((e) => e);
        assert.ok(error instanceof IpmiError, String(error));
        assert.equal(error.failure, "failed");
        assert.equal(error.permanent, false, "the executor retries it");
        assert.equal(
          error.message,
          `IPMI BMC ${bmc.address} failed "power on": Set Chassis Power Control to Up/On failed: Unspecified error`,
        );
      }
      // A read is no power change: it still works; the fault is spent after 2.
      assert.equal(await driver.powerState(call, targetOf(bmc)), "off");
      await driver.powerOn(call, targetOf(bmc));
      assert.equal(await bmc.power(), "on");
      assert.deepEqual(fold(await bmc.calls()), [
        "set power 1",
        "injected fault: power change refused",
        "set power 1",
        "injected fault: power change refused",
        "get power",
        "set power 1",
        "get power",
      ]);
    }),
);

Deno.test(
  "createIpmiDriver() reports a wrong password as a permanent auth error",
  SANITIZE,
  () =>
    withSim({}, async (bmc) => {
      const call = testCall();
      const driver = createIpmiDriver({ gate: countingGate(), ...FAST });
      const wrong = { ...targetOf(bmc), credential: { username: "admin", password: "hunter2" } };
      const error = await driver.powerState(call, wrong).catch((e) => e);
      assert.ok(error instanceof IpmiError, String(error));
      assert.equal(error.failure, "auth");
      assert.equal(error.permanent, true);
      assert.equal(
        error.message,
        `IPMI BMC ${bmc.address} refused the password of user "admin" (RAKP 2 HMAC is invalid; Error: Unable to establish IPMI v2 / RMCP+ session): fix the password in --bmc-credentials`,
      );
      assert.ok(!call.lines.join("\n").includes("hunter2"));
      const unknown = { ...targetOf(bmc), credential: { username: "nobody", password: "x" } };
      const error2 = await driver.powerState(call, unknown).catch((e) => e);
      assert.equal(error2.failure, "auth");
      assert.match(
        error2.message,
        /does not know user "nobody" .*fix the user in --bmc-credentials/,
      );
      assert.deepEqual(await bmc.calls(), []);
    }),
);

Deno.test(
  "createIpmiDriver() reports an unreachable BMC as a transient error",
  SANITIZE,
  async () => {
    const call = testCall();
    const driver = createIpmiDriver({ gate: countingGate(), ...FAST });
    const address = `127.0.0.1:${freePort()}`;
    const target = { ...targetOf({ address, username: "admin", password: "password" }) };
    const error = await driver.powerOn(call, target).catch((e) => e);
    assert.ok(error instanceof IpmiError, String(error));
    assert.equal(error.failure, "unreachable");
    assert.equal(error.permanent, false);
    assert.match(
      error.message,
      new RegExp(
        `^IPMI BMC ${address} does not answer \\(.*Get Auth Capabilities error.*\\): check spec.bmc_address and that IPMI over LAN is enabled on the BMC$`,
      ),
    );
  },
);

Deno.test(
  "createIpmiDriver() kills ipmitool after callTimeoutMs (transient)",
  SANITIZE,
  async () => {
    const driver = createIpmiDriver({
      gate: countingGate(),
      ...FAST,
      retries: 4,
      callTimeoutMs: 200,
    });
    const target = targetOf({ address: `127.0.0.1:${freePort()}`, username: "a", password: "b" });
    const error = await driver.powerState(testCall(), target).catch((e) => e);
    assert.ok(error instanceof IpmiError, String(error));
    assert.equal(error.failure, "timeout");
    assert.equal(error.permanent, false);
    assert.match(error.message, /did not complete "power status" within 200 ms: killed ipmitool/);
  },
);

/**
 * An `ipmitool` wrapper that records its argv, command line and environment, then writes its
 * process id to a FIFO (blocking until the test reads it) and becomes the real `ipmitool`.
 */
async function recordingIpmitool(
  dir: string,
): Promise<{ path: string; fifo: string; record: string }> {
  const path = `${dir}/ipmitool`;
  const fifo = `${dir}/pid.fifo`;
  const record = `${dir}/record.log`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  await Deno.writeTextFile(
    path,
    `#!/bin/sh
{ echo "argv: $*"; echo "cmdline: $(tr '\\0' ' ' < /proc/$$/cmdline)"; \
  [ -n "$IPMI_PASSWORD" ] && echo "env: IPMI_PASSWORD=$IPMI_PASSWORD"; } >> '${record}'
[ -n "$PID_FIFO" ] && echo $$ > "$PID_FIFO"
exec ipmitool "$@"
`,
    { mode: 0o755 },
  );
  return { path, fifo, record };
}

Deno.test(
  "createIpmiDriver() passes the password only through the environment",
  SANITIZE,
  () =>
    withSim({ password: "s3cret-Pass" }, async (bmc) => {
      const dir = await Deno.makeTempDir();
      try {
        const wrapper = await recordingIpmitool(dir);
        const driver = createIpmiDriver({ gate: countingGate(), ...FAST, ipmitool: wrapper.path });
        assert.equal(await driver.powerState(testCall(), targetOf(bmc)), "off");
        const record = await Deno.readTextFile(wrapper.record);
        const argv = record.split("\n").filter((l) => !l.startsWith("env: "));
        assert.ok(argv.some((l) => l.startsWith("argv: -I lanplus -C 3 -H 127.0.0.1 -p ")));
        assert.ok(argv.some((l) => l.includes(" -U admin -E ")));
        assert.ok(!argv.join("\n").includes("s3cret-Pass"), record);
        assert.ok(record.includes("env: IPMI_PASSWORD=s3cret-Pass"));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
);

Deno.test("createIpmiDriver() kills ipmitool when the call aborts", SANITIZE, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const wrapper = await recordingIpmitool(dir);
    Deno.env.set("PID_FIFO", wrapper.fifo);
    const driver = createIpmiDriver({
      gate: countingGate(),
      ...FAST,
      retries: 10,
      callTimeoutMs: 600_000,
      ipmitool: wrapper.path,
    });
    const controller = new AbortController();
    const target = targetOf({ address: `127.0.0.1:${freePort()}`, username: "a", password: "b" });
    const call = testCall(controller.signal);
    const pending = driver.powerOn(call, target);
    const pid = Number((await Deno.readTextFile(wrapper.fifo)).trim());
    assert.ok(await running(pid), "ipmitool runs");
    const reason = new Error("step timed out");
    controller.abort(reason);
    await assert.rejects(pending, (error) => error === reason);
    assert.equal(await running(pid), false, "ipmitool was killed");
    assert.match(call.lines.at(-1)!, /: aborted "power on": ipmitool ended by SIGKILL$/);
  } finally {
    Deno.env.delete("PID_FIFO");
    await Deno.remove(dir, { recursive: true });
  }
});

async function running(pid: number): Promise<boolean> {
  return (await processList()).some((p) => p.pid === pid);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test(
  "createIpmiDriver() waits for power on until the call's signal aborts",
  SANITIZE,
  () =>
    withSim({ power: "off" }, async (bmc) => {
      // The BMC accepts "power on" but the machine never comes up (its hook ignores the request).
      const hook = `${bmc.stateDir}/chassis.sh`;
      const script = await Deno.readTextFile(hook);
      const ignoring = script.replace(`      echo "$2" > "$dir/power"\n`, "      :\n");
      assert.notEqual(ignoring, script, "the hook's power line changed");
      await Deno.writeTextFile(hook, ignoring);
      const controller = new AbortController();
      const call = testCall(controller.signal);
      const driver = createIpmiDriver({ gate: countingGate(), ...FAST });
      const pending = driver.powerOn(call, targetOf(bmc));
      const polled = Promise.withResolvers<void>();
      call.log = (line) => {
        call.lines.push(line);
        if (call.lines.filter((l) => l.endsWith("Chassis Power is off")).length === 3) {
          polled.resolve();
        }
      };
      await polled.promise;
      const reason = new Error("step timed out");
      controller.abort(reason);
      await assert.rejects(pending, (error) => error === reason);
    }),
);

Deno.test("parseIpmiAddress() refuses what is not host[:port] as a permanent error", () => {
  for (const bad of ["", "http://10.0.0.5", "10.0.0.5:0", "10.0.0.5:70000", "a b", "[::1"]) {
    assert.throws(
      () => parseIpmiAddress(bad),
      (e) => e instanceof IpmiError && e.permanent && e.message.includes("expected host[:port]"),
    );
  }
  assert.deepEqual(parseIpmiAddress("bmc-7.lab:6230"), { host: "bmc-7.lab", port: 6230 });
});

Deno.test("startIpmiSim() stops everything it started", SANITIZE, async () => {
  const bmc = await startIpmiSim();
  assert.deepEqual(await bmc.processes(), [bmc.pid]);
  await bmc.stop();
  assert.deepEqual(await bmc.processes(), []);
  assert.equal(await exists(bmc.stateDir), false);
});
