import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  type Machine,
  MachineSchema,
  type TargetClusterRef,
  TargetClusterRefSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import {
  createFakeProvider,
  type FakeProvider,
  type FakeProviderOptions,
} from "../lib/provider/fake.ts";
import { TIMINGS } from "../lib/provider/fake_timing.ts";
import type { JoinMaterial, LogStream, ProviderCall, ProviderVerb } from "../lib/provider/mod.ts";
import { SANITIZE } from "./helpers.ts";

interface LogEntry {
  line: string;
  stream: LogStream | undefined;
}

interface RecordingCall {
  call: ProviderCall;
  entries: LogEntry[];
  /** The logged lines, without their streams. */
  lines(): string[];
  /** Resolves once a line equal to `line` has been logged. */
  logged(line: string): Promise<void>;
}

function recordingCall(signal: AbortSignal = new AbortController().signal): RecordingCall {
  const entries: LogEntry[] = [];
  const waiters: { line: string; resolve: () => void }[] = [];
  return {
    call: {
      operationId: "op-1",
      signal,
      log(line, stream) {
        entries.push({ line, stream });
        for (const waiter of waiters) if (waiter.line === line) waiter.resolve();
      },
    },
    entries,
    lines: () => entries.map((entry) => entry.line),
    logged(line) {
      if (entries.some((entry) => entry.line === line)) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ line, resolve });
      return promise;
    },
  };
}

const MACHINE: Machine = create(MachineSchema, {
  machineId: "m-1",
  spec: { sshEndpoint: "10.0.0.11:22" },
});
const CLUSTER: TargetClusterRef = create(TargetClusterRefSchema, { clusterId: "lab-cluster" });
const REPAVE = { imageRef: "ubuntu-2204-lab", cloudInitRef: "cloud-init/worker-node" };
const MATERIAL: JoinMaterial = {
  endpoint: "https://k8s-api.example.com:6443",
  token: "abcdef.123456",
  caHash: `sha256:${"0".repeat(64)}`,
  expiresAt: new Date("2026-01-02T00:00:00Z"),
  clusterId: "lab-cluster",
  certificate: "",
};

/** Calls `verb` with the fixtures above. */
function callVerb(
  provider: FakeProvider,
  verb: ProviderVerb,
  call: ProviderCall,
): Promise<unknown> {
  switch (verb) {
    case "setNetboot":
      return provider.setNetboot(call, MACHINE, "ubuntu-2204-lab");
    case "reboot":
      return provider.reboot(call, MACHINE, { force: false });
    case "repave":
      return provider.repave(call, MACHINE, REPAVE);
    case "mintJoinMaterial":
      return provider.mintJoinMaterial(call, CLUSTER);
    case "joinNode":
      return provider.joinNode(call, MACHINE, MATERIAL);
    case "verifyInCluster":
      return provider.verifyInCluster(call, MACHINE, CLUSTER);
    case "rma":
      return provider.rma(call, MACHINE, "bad disk");
    case "executeSshCommand":
      return provider.executeSshCommand(call, MACHINE, {
        scriptRef: "drain_node.sh",
        args: { timeout: "300" },
      });
  }
}

const VERBS: readonly ProviderVerb[] = [
  "setNetboot",
  "reboot",
  "repave",
  "mintJoinMaterial",
  "joinNode",
  "verifyInCluster",
  "rma",
  "executeSshCommand",
];

/** Runs every verb once and returns the waits each asked for, by verb. */
async function recordWaits(
  options: FakeProviderOptions,
): Promise<Record<ProviderVerb, number[]>> {
  const waits = Object.fromEntries(VERBS.map((verb) => [verb, []])) as unknown as Record<
    ProviderVerb,
    number[]
  >;
  let current: ProviderVerb = "setNetboot";
  const provider = createFakeProvider({
    ...options,
    delay(ms) {
      waits[current].push(ms);
      return Promise.resolve();
    },
  });
  for (const verb of VERBS) {
    current = verb;
    await callVerb(provider, verb, recordingCall().call);
  }
  return waits;
}

/**
 * Explicit, because Deno 2.9 does not check for leaked timers by default: with this, a wait that
 * is not cleared on abort, or a zero wait that starts a timer and is left behind, fails its test.
 */

/** Rounds to whole microseconds, so thirds and sixths compare exactly. */
function rounded(values: number[]): number[] {
  return values.map((value) => Math.round(value * 1000) / 1000);
}

function sum(values: number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

Deno.test("createFakeProvider() setNetboot logs the profile and success", SANITIZE, async () => {
  const { call, entries } = recordingCall();
  await createFakeProvider({ timing: "zero" }).setNetboot(call, MACHINE, "ubuntu-2204-lab");
  assert.deepEqual(entries, [
    { line: "[netboot] Setting netboot profile: ubuntu-2204-lab", stream: "stdout" },
    { line: "[netboot] Machine: m-1", stream: "stdout" },
    { line: "[netboot] IPXE configuration updated", stream: "stdout" },
    { line: "[netboot] Netboot profile set successfully", stream: "stdout" },
  ]);
});

Deno.test(
  "createFakeProvider() setNetboot logs an ERROR line and rejects when faulted",
  SANITIZE,
  async () => {
    const { call, entries } = recordingCall();
    const provider = createFakeProvider({
      timing: "zero",
      faults: { setNetboot: { kind: "fail" } },
    });
    await assert.rejects(
      provider.setNetboot(call, MACHINE, "ubuntu-2204-lab"),
      new Error("simulated netboot failure"),
    );
    assert.deepEqual(entries, [
      { line: "[netboot] Setting netboot profile: ubuntu-2204-lab", stream: "stdout" },
      { line: "[netboot] Machine: m-1", stream: "stdout" },
      { line: "[netboot] ERROR: Failed to set netboot profile", stream: "stderr" },
    ]);
  },
);

Deno.test("createFakeProvider() reboot words graceful and forced reboots", SANITIZE, async (t) => {
  const provider = createFakeProvider({ timing: "zero" });
  for (const [force, wording] of [[false, "graceful"], [true, "forced"]] as const) {
    await t.step(`force: ${force} logs a ${wording} reboot`, async () => {
      const recording = recordingCall();
      await provider.reboot(recording.call, MACHINE, { force });
      assert.deepEqual(recording.lines(), [
        `[reboot] Initiating ${wording} reboot`,
        "[reboot] Machine: m-1",
        "[reboot] Sending reboot command via BMC...",
        "[reboot] Machine is rebooting...",
        "[reboot] Reboot completed, machine coming back online",
      ]);
    });
  }
});

Deno.test(
  "createFakeProvider() repave logs the image, cloud-init and every sub-step",
  SANITIZE,
  async () => {
    const recording = recordingCall();
    await createFakeProvider({ timing: "zero" }).repave(recording.call, MACHINE, REPAVE);
    assert.deepEqual(recording.lines(), [
      "[repave] Starting repave operation",
      "[repave] Machine: m-1",
      "[repave] Image: ubuntu-2204-lab",
      "[repave] Cloud-init: cloud-init/worker-node",
      "[repave] Downloading image...",
      "[repave] Verifying image checksum...",
      "[repave] Preparing cloud-init configuration...",
      "[repave] Writing image to disk...",
      "[repave] Configuring bootloader...",
      "[repave] Finalizing installation...",
      "[repave] Repave completed successfully",
    ]);
  },
);

Deno.test(
  "createFakeProvider() mintJoinMaterial returns join material for the cluster",
  SANITIZE,
  async (t) => {
    const now = new Date("2026-01-01T12:00:00.250Z");
    const provider = createFakeProvider({ timing: "zero", now: () => now });

    await t.step("for the requested cluster", async () => {
      const recording = recordingCall();
      const material = await provider.mintJoinMaterial(recording.call, CLUSTER);
      assert.match(material.token, /^abcdef\.\d{6}$/);
      assert.match(material.caHash, /^sha256:[0-9a-f]{64}$/);
      assert.deepEqual(material, {
        endpoint: "https://k8s-api.example.com:6443",
        token: material.token,
        caHash: material.caHash,
        expiresAt: new Date("2026-01-02T12:00:00.250Z"),
        clusterId: "lab-cluster",
        certificate: "",
      });
      assert.deepEqual(recording.lines(), [
        "[join-material] Generating join material for cluster: lab-cluster",
        "[join-material] Join token generated (expires: 2026-01-02T12:00:00Z)",
      ]);
    });

    await t.step("for default-cluster when the cluster id is empty", async () => {
      const recording = recordingCall();
      const material = await provider.mintJoinMaterial(
        recording.call,
        create(TargetClusterRefSchema, {}),
      );
      assert.equal(material.clusterId, "default-cluster");
      assert.equal(
        recording.lines()[0],
        "[join-material] Generating join material for cluster: default-cluster",
      );
    });
  },
);

Deno.test(
  "createFakeProvider() joinNode logs the cluster, endpoint and success",
  SANITIZE,
  async () => {
    const recording = recordingCall();
    await createFakeProvider({ timing: "zero" }).joinNode(recording.call, MACHINE, MATERIAL);
    assert.deepEqual(recording.lines(), [
      "[join] Joining node to cluster: lab-cluster",
      "[join] Machine: m-1",
      "[join] API endpoint: https://k8s-api.example.com:6443",
      "[join] Configuring kubelet...",
      "[join] Downloading cluster CA...",
      "[join] Initializing node registration...",
      "[join] Waiting for kubelet to start...",
      "[join] Node registered with control plane...",
      "[join] Node successfully joined cluster",
    ]);
  },
);

Deno.test(
  "createFakeProvider() verifyInCluster logs a Ready node and success",
  SANITIZE,
  async () => {
    const recording = recordingCall();
    await createFakeProvider({ timing: "zero" }).verifyInCluster(recording.call, MACHINE, CLUSTER);
    assert.deepEqual(recording.lines(), [
      "[verify] Verifying node membership in cluster: lab-cluster",
      "[verify] Machine: m-1",
      "[verify] Checking node registration...",
      "[verify] Node status: Ready",
      "[verify] Kubelet version: v1.33.0",
      "[verify] Pod CIDR assigned: 10.244.1.0/24",
      "[verify] Verification passed - node is healthy",
    ]);
  },
);

Deno.test("createFakeProvider() rma logs the reason and a ticket", SANITIZE, async () => {
  const recording = recordingCall();
  await createFakeProvider({ timing: "zero" }).rma(recording.call, MACHINE, "bad disk");
  const lines = recording.lines();
  assert.match(lines[4], /^\[rma\] Ticket created: RMA-\d{5}$/);
  assert.deepEqual(lines, [
    "[rma] Initiating RMA process",
    "[rma] Machine: m-1",
    "[rma] Reason: bad disk",
    "[rma] Machine marked for RMA",
    lines[4],
    "[rma] RMA process initiated successfully",
  ]);
});

Deno.test(
  "createFakeProvider() executeSshCommand logs the script, sorted args and exit code 0",
  SANITIZE,
  async (t) => {
    const provider = createFakeProvider({ timing: "zero" });

    await t.step("with arguments", async () => {
      const recording = recordingCall();
      await provider.executeSshCommand(recording.call, MACHINE, {
        scriptRef: "upgrade_k8s.sh",
        args: { version: "1.33.0", drain: "true" },
      });
      assert.deepEqual(recording.lines(), [
        "[ssh] Executing script: upgrade_k8s.sh",
        "[ssh] Machine: m-1 (endpoint: 10.0.0.11:22)",
        "[ssh] Arguments:",
        "[ssh]   drain=true",
        "[ssh]   version=1.33.0",
        "[ssh] Connecting to 10.0.0.11:22...",
        "[ssh] Running upgrade_k8s.sh...",
        "[ssh] + apt-get update",
        "[ssh] + apt-get install -y containerd",
        "[ssh] Script completed with exit code 0",
      ]);
    });

    await t.step("without arguments", async () => {
      const recording = recordingCall();
      await provider.executeSshCommand(recording.call, MACHINE, { scriptRef: "cordon_node.sh" });
      assert.equal(recording.lines().includes("[ssh] Arguments:"), false);
    });
  },
);

Deno.test("createFakeProvider() accepts a log that discards lines", SANITIZE, async (t) => {
  for (const verb of VERBS) {
    await t.step(verb, async () => {
      let discarded = 0;
      const call: ProviderCall = {
        operationId: "op-1",
        signal: new AbortController().signal,
        log() {
          discarded++;
        },
      };
      const recording = recordingCall();
      const expected = await callVerb(createFakeProvider({ timing: "zero" }), verb, recording.call);
      const result = await callVerb(createFakeProvider({ timing: "zero" }), verb, call);
      // Join material differs per mint only in its token and expiry.
      const unique = verb === "mintJoinMaterial" ? { token: "", expiresAt: undefined } : {};
      assert.deepEqual({ ...result as object, ...unique }, { ...expected as object, ...unique });
      assert.equal(discarded, recording.lines().length);
      assert.ok(discarded > 0, "the verb logs lines to discard");
    });
  }
});

Deno.test("createFakeProvider() fails each verb where the reference does", SANITIZE, async (t) => {
  const cases: Record<ProviderVerb, { before: string; error: string; message: string }> = {
    setNetboot: {
      before: "[netboot] Machine: m-1",
      error: "[netboot] ERROR: Failed to set netboot profile",
      message: "simulated netboot failure",
    },
    reboot: {
      before: "[reboot] Machine: m-1",
      error: "[reboot] ERROR: Failed to reboot machine",
      message: "simulated reboot failure",
    },
    repave: {
      before: "[repave] Finalizing installation...",
      error: "[repave] ERROR: Repave failed during finalization",
      message: "simulated repave failure",
    },
    mintJoinMaterial: {
      before: "[join-material] Generating join material for cluster: lab-cluster",
      error: "[join-material] ERROR: Failed to generate join material",
      message: "simulated mint-join failure",
    },
    joinNode: {
      before: "[join] Node registered with control plane...",
      error: "[join] ERROR: Failed to join cluster - connection refused",
      message: "simulated join failure",
    },
    verifyInCluster: {
      before: "[verify] Checking node registration...",
      error: "[verify] ERROR: Node not found in cluster",
      message: "simulated verify failure: node not in cluster",
    },
    rma: {
      before: "[rma] Reason: bad disk",
      error: "[rma] ERROR: Failed to initiate RMA",
      message: "simulated RMA failure",
    },
    executeSshCommand: {
      before: "[ssh] + apt-get install -y containerd",
      error: "[ssh] ERROR: Script failed with exit code 1",
      message: "simulated ssh failure",
    },
  };
  for (const verb of VERBS) {
    const { before, error, message } = cases[verb];
    await t.step(`${verb} rejects with "${message}" after "${before}"`, async () => {
      const provider = createFakeProvider({ timing: "zero", faults: { [verb]: { kind: "fail" } } });
      const { call, entries } = recordingCall();
      await assert.rejects(callVerb(provider, verb, call), new Error(message));
      assert.deepEqual(entries.slice(-2), [
        { line: before, stream: "stdout" },
        { line: error, stream: "stderr" },
      ]);
    });
  }
});

Deno.test(
  "createFakeProvider() fail fault rejects with its own message when given one",
  SANITIZE,
  async () => {
    const provider = createFakeProvider({
      timing: "zero",
      faults: { reboot: { kind: "fail", message: "BMC unreachable" } },
    });
    await assert.rejects(
      provider.reboot(recordingCall().call, MACHINE, { force: true }),
      new Error("BMC unreachable"),
    );
  },
);

Deno.test(
  "createFakeProvider() fail fault with times: 2 fails twice then succeeds",
  SANITIZE,
  async () => {
    const provider = createFakeProvider({
      timing: "zero",
      faults: { repave: { kind: "fail", times: 2 } },
    });
    const failure = new Error("simulated repave failure");
    await assert.rejects(provider.repave(recordingCall().call, MACHINE, REPAVE), failure);
    await assert.rejects(provider.repave(recordingCall().call, MACHINE, REPAVE), failure);
    const recording = recordingCall();
    await provider.repave(recording.call, MACHINE, REPAVE);
    assert.equal(recording.lines().at(-1), "[repave] Repave completed successfully");
    assert.equal(provider.attempts("repave"), 3);
  },
);

Deno.test(
  "createFakeProvider() fail fault without times fails every attempt",
  SANITIZE,
  async () => {
    const provider = createFakeProvider({ timing: "zero", faults: { rma: { kind: "fail" } } });
    for (let attempt = 1; attempt <= 3; attempt++) {
      await assert.rejects(
        provider.rma(recordingCall().call, MACHINE, "bad disk"),
        new Error("simulated RMA failure"),
      );
    }
  },
);

Deno.test(
  "createFakeProvider() hang fault logs the first lines and rejects with the signal's reason on abort",
  SANITIZE,
  async () => {
    const controller = new AbortController();
    const recording = recordingCall(controller.signal);
    const provider = createFakeProvider({ timing: "zero", faults: { reboot: { kind: "hang" } } });
    const pending = provider.reboot(recording.call, MACHINE, { force: false });
    await recording.logged("[reboot] Machine: m-1");
    const reason = new DOMException("step timed out", "TimeoutError");
    controller.abort(reason);
    await assert.rejects(pending, (error) => error === reason);
    assert.deepEqual(recording.lines(), [
      "[reboot] Initiating graceful reboot",
      "[reboot] Machine: m-1",
    ]);
  },
);

Deno.test(
  "createFakeProvider() repave rejects with the abort reason when aborted mid-wait",
  SANITIZE,
  async () => {
    const controller = new AbortController();
    const recording = recordingCall(controller.signal);
    const pending = createFakeProvider({ timing: "normal" }).repave(
      recording.call,
      MACHINE,
      REPAVE,
    );
    // The first sub-step's timer is running once its line is out; the sanitizers then prove the
    // abort cleared it.
    await recording.logged("[repave] Downloading image...");
    const reason = new Error("user canceled");
    controller.abort(reason);
    await assert.rejects(pending, (error) => error === reason);
    assert.equal(recording.lines().at(-1), "[repave] Downloading image...");
  },
);

Deno.test(
  "createFakeProvider() rejects before logging when the signal is already aborted",
  SANITIZE,
  async () => {
    const controller = new AbortController();
    const reason = new Error("shutting down");
    controller.abort(reason);
    const recording = recordingCall(controller.signal);
    const provider = createFakeProvider({ timing: "normal" });
    for (const verb of VERBS) {
      await assert.rejects(callVerb(provider, verb, recording.call), (error) => error === reason);
    }
    assert.deepEqual(recording.lines(), []);
  },
);

Deno.test(
  "createFakeProvider() awaits a verb's hook before its first line",
  SANITIZE,
  async () => {
    const entered = Promise.withResolvers<ProviderCall>();
    const hold = Promise.withResolvers<void>();
    const provider = createFakeProvider({
      timing: "zero",
      hooks: {
        setNetboot(call) {
          entered.resolve(call);
          return hold.promise;
        },
      },
    });
    const recording = recordingCall();
    const pending = provider.setNetboot(recording.call, MACHINE, "ubuntu-2204-lab");
    assert.equal(await entered.promise, recording.call);
    assert.deepEqual(recording.lines(), []);
    hold.resolve();
    await pending;
    assert.equal(recording.lines().at(-1), "[netboot] Netboot profile set successfully");
  },
);

Deno.test(
  "createFakeProvider() stops waiting for a hook when the signal aborts",
  SANITIZE,
  async () => {
    const entered = Promise.withResolvers<void>();
    const provider = createFakeProvider({
      timing: "zero",
      hooks: {
        joinNode() {
          entered.resolve();
          return new Promise<void>(() => {});
        },
      },
    });
    const controller = new AbortController();
    const recording = recordingCall(controller.signal);
    const pending = provider.joinNode(recording.call, MACHINE, MATERIAL);
    await entered.promise;
    const reason = new Error("user canceled");
    controller.abort(reason);
    await assert.rejects(pending, (error) => error === reason);
    assert.deepEqual(recording.lines(), []);
  },
);

Deno.test("createFakeProvider() attempts() counts the calls of each verb", SANITIZE, async () => {
  const provider = createFakeProvider({ timing: "zero" });
  await provider.reboot(recordingCall().call, MACHINE, { force: false });
  await provider.reboot(recordingCall().call, MACHINE, { force: true });
  await provider.rma(recordingCall().call, MACHINE, "bad disk");
  assert.deepEqual(
    Object.fromEntries(VERBS.map((verb) => [verb, provider.attempts(verb)])),
    {
      setNetboot: 0,
      reboot: 2,
      repave: 0,
      mintJoinMaterial: 0,
      joinNode: 0,
      verifyInCluster: 0,
      rma: 1,
      executeSshCommand: 0,
    },
  );
});

Deno.test("TIMINGS has the reference's durations", SANITIZE, async (t) => {
  await t.step("normal", () => {
    assert.deepEqual(TIMINGS.normal, {
      netbootMs: 250,
      rebootMs: 500,
      repaveMs: 1000,
      mintJoinMs: 100,
      joinNodeMs: 1000,
      verifyMs: 500,
      rmaMs: 250,
      sshMs: 1000,
    });
  });

  await t.step("slow", () => {
    assert.deepEqual(TIMINGS.slow, {
      netbootMs: 2000,
      rebootMs: 5000,
      repaveMs: 10000,
      mintJoinMs: 500,
      joinNodeMs: 8000,
      verifyMs: 3000,
      rmaMs: 2000,
      sshMs: 1000,
    });
  });

  await t.step("zero", () => {
    assert.deepEqual(Object.values(TIMINGS.zero), [0, 0, 0, 0, 0, 0, 0, 0]);
  });
});

Deno.test(
  "createFakeProvider() splits each verb's time as the reference does",
  SANITIZE,
  async (t) => {
    await t.step("normal profile (the default)", async () => {
      const waits = await recordWaits({});
      assert.deepEqual(
        Object.fromEntries(VERBS.map((verb) => [verb, rounded(waits[verb])])),
        {
          setNetboot: [125, 125],
          reboot: [166.667, 166.667, 166.667],
          repave: [166.667, 166.667, 166.667, 166.667, 166.667, 166.667],
          mintJoinMaterial: [100],
          joinNode: [200, 200, 200, 200, 200],
          verifyInCluster: [166.667, 166.667, 166.667],
          rma: [125, 125],
          executeSshCommand: [200, 300, 200, 300],
        },
      );
    });

    await t.step("slow profile: repave and join take at least 5 s", async () => {
      const waits = await recordWaits({ timing: "slow" });
      assert.equal(Math.round(sum(waits.repave)), 10000);
      assert.equal(Math.round(sum(waits.joinNode)), 8000);
      assert.deepEqual(rounded(waits.executeSshCommand), [200, 300, 200, 300]);
    });

    await t.step("explicit timings", async () => {
      const waits = await recordWaits({ timing: { ...TIMINGS.zero, rebootMs: 30 } });
      assert.deepEqual(waits.reboot, [10, 10, 10]);
      assert.deepEqual(waits.repave, []);
    });
  },
);

Deno.test("createFakeProvider() zero profile starts no timer", SANITIZE, async () => {
  const waits = await recordWaits({ timing: "zero" });
  assert.deepEqual(Object.values(waits).flat(), []);
  // And with the real delay, the sanitizers find no timer left behind.
  const provider = createFakeProvider({ timing: "zero" });
  for (const verb of VERBS) await callVerb(provider, verb, recordingCall().call);
});

Deno.test("createFakeProvider() rejects bad options with a RangeError", SANITIZE, async (t) => {
  const cases: [string, FakeProviderOptions, RegExp][] = [
    ["an unknown profile", { timing: "fast" as "normal" }, /"timing".*current value is "fast"/],
    [
      "a negative timing",
      { timing: { ...TIMINGS.zero, repaveMs: -1 } },
      /"timing\.repaveMs".*current value is -1/,
    ],
    [
      "a fractional times",
      { faults: { reboot: { kind: "fail", times: 1.5 } } },
      /"faults\.reboot\.times".*current value is 1\.5/,
    ],
  ];
  for (const [what, options, message] of cases) {
    await t.step(what, () => {
      assert.throws(() => createFakeProvider(options), (error) => {
        assert.ok(error instanceof RangeError);
        assert.match(error.message, message);
        return true;
      });
    });
  }
});
