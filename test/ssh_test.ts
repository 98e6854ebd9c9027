/**
 * The SSH driver against a throwaway sshd on loopback (test/sshd_fixture.ts): output streamed
 * line by line, exit codes, argument quoting, abort, and each connection failure as its own
 * kind of error.
 */
import assert from "node:assert/strict";
import type { LogStream, ProviderCall } from "../lib/provider/mod.ts";
import {
  createSshRunner,
  SshError,
  type SshErrorKind,
  type SshRunner,
  type SshRunnerOptions,
  type SshTarget,
} from "../lib/provider/ssh.ts";
import {
  parseSshEndpoint,
  remoteCommand,
  shellQuote,
  sshArguments,
} from "../lib/provider/ssh_command.ts";
import { SANITIZE } from "./helpers.ts";
import { freePort, startSshd, type TestSshd } from "./sshd_fixture.ts";

/** A provider call that records its log lines and runs `onLine` as each arrives. */
function recordingCall(
  onLine: (line: string, stream: LogStream) => void = () => {},
  signal: AbortSignal = new AbortController().signal,
): ProviderCall & { lines: [LogStream, string][] } {
  const lines: [LogStream, string][] = [];
  return {
    operationId: "op-1",
    signal,
    lines,
    log(line, stream = "stdout") {
      lines.push([stream, line]);
      onLine(line, stream);
    },
  };
}

function runnerFor(sshd: TestSshd, options: Partial<SshRunnerOptions> = {}): SshRunner {
  return createSshRunner({
    knownHostsFile: sshd.knownHostsFile,
    scriptsDir: sshd.scriptsDir,
    connectTimeoutSeconds: 5,
    ...options,
  });
}

function targetOf(sshd: TestSshd, overrides: Partial<SshTarget> = {}): SshTarget {
  return {
    endpoint: sshd.endpoint,
    user: sshd.user,
    keyFile: sshd.clientKey,
    machineId: "machine-1",
    ...overrides,
  };
}

/**
 * The script's own output lines, without the driver's `[ssh] ` prefix, ssh's own messages
 * (`[ssh] ssh: `) and the driver's closing line (starting with `last`).
 */
function scriptLines(lines: [LogStream, string][], last: string): [LogStream, string][] {
  const start = lines.findIndex(([, line]) => line.startsWith("[ssh] Running "));
  return lines.slice(start + 1)
    .filter(([, line]) => !line.startsWith(`[ssh] ${last}`) && !line.startsWith("[ssh] ssh: "))
    .map(([stream, line]) => [stream, line.replace(/^\[ssh\] /, "")]);
}

/** Asserts `promise` rejects with an SshError of `kind`, message matching, and returns it. */
async function rejectsWithKind(
  promise: Promise<unknown>,
  kind: SshErrorKind,
  message: RegExp,
): Promise<SshError> {
  let caught: unknown;
  await assert.rejects(promise, (error) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof SshError, `expected an SshError, got ${String(caught)}`);
  assert.equal(caught.kind, kind, caught.message);
  assert.match(caught.message, message);
  return caught;
}

Deno.test(
  "run() streams stdout and stderr lines into the log in order as they arrive",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    // Each line is written only after the test saw the previous one in the log: the order holds
    // across the two streams and every line arrived while the script was still running.
    await sshd.script(
      "interleave.sh",
      [
        'dir="${1#dir=}"',
        // Bounded, so that a driver that buffers output fails the test instead of hanging it.
        'wait_for() { i=0; while [ ! -e "$dir/$1" ]; do',
        '  i=$((i + 1)); [ $i -gt 1000 ] && { echo "gate $1 never opened" >&2; exit 9; }',
        "  sleep 0.01",
        "done; }",
        "echo 'out 1'",
        "wait_for go1",
        "echo 'err 2' >&2",
        "wait_for go2",
        "echo 'out 3'",
        "wait_for go3",
        "echo 'err 4' >&2",
      ].join("\n"),
    );
    const gates: Record<string, string> = { "out 1": "go1", "err 2": "go2", "out 3": "go3" };
    const call = recordingCall((line) => {
      const gate = gates[line.replace(/^\[ssh\] /, "")];
      if (gate) Deno.writeTextFileSync(`${sshd.dir}/${gate}`, "");
    });
    await runnerFor(sshd).run(call, targetOf(sshd), {
      scriptRef: "interleave.sh",
      args: { dir: sshd.dir },
    });
    assert.deepEqual(scriptLines(call.lines, "Script completed"), [
      ["stdout", "out 1"],
      ["stderr", "err 2"],
      ["stdout", "out 3"],
      ["stderr", "err 4"],
    ]);
    assert.deepEqual(call.lines.slice(0, 4).map(([, line]) => line), [
      "[ssh] Executing script: interleave.sh",
      `[ssh] Machine: machine-1 (endpoint: ${sshd.endpoint})`,
      "[ssh] Arguments:",
      `[ssh]   dir=${sshd.dir}`,
    ]);
    assert.deepEqual(call.lines.slice(-2), [
      [
        "stderr",
        `[ssh] ssh: Warning: Permanently added '[127.0.0.1]:${sshd.port}' (ED25519) to the list of known hosts.`,
      ],
      ["stdout", "[ssh] Script completed with exit code 0"],
    ]);
  },
);

Deno.test("run() fails with the exit code and the last stderr line", SANITIZE, async () => {
  await using sshd = await startSshd();
  await sshd.script(
    "fail.sh",
    "echo working\necho 'first problem' >&2\necho 'disk full' >&2\nexit 3",
  );
  const call = recordingCall();
  const error = await rejectsWithKind(
    runnerFor(sshd).run(call, targetOf(sshd), { scriptRef: "fail.sh" }),
    "exit",
    /^Script fail\.sh failed on 127\.0\.0\.1:\d+ \(machine machine-1\) with exit code 3: disk full$/,
  );
  assert.equal(error.exitCode, 3);
  assert.equal(error.permanent, false);
  assert.deepEqual(call.lines.at(-1), ["stderr", "[ssh] ERROR: Script failed with exit code 3"]);
});

Deno.test(
  "run() reports a script's own exit code 255 as a script failure, not ssh's",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    // ssh exits 255 for its own failures too; its messages go to a separate log, so words on the
    // script's stderr cannot pass for them.
    await sshd.script(
      "mimic.sh",
      "echo 'ssh: connect to host x port 22: Connection refused' >&2\nexit 255",
    );
    const error = await rejectsWithKind(
      runnerFor(sshd).run(recordingCall(), targetOf(sshd), { scriptRef: "mimic.sh" }),
      "exit",
      /with exit code 255 \(or was killed by a signal\): ssh: connect to host x port 22: Connection refused$/,
    );
    assert.equal(error.exitCode, 255);
  },
);

Deno.test(
  "run() reports a connection lost while the script runs as a transient error",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    // The script's parent is sshd's process for this connection.
    await sshd.script("drop.sh", "kill -9 $PPID");
    const call = recordingCall();
    const error = await rejectsWithKind(
      runnerFor(sshd).run(call, targetOf(sshd), { scriptRef: "drop.sh" }),
      "disconnected",
      /^Lost the connection to 127\.0\.0\.1:\d+ \(machine machine-1\) \(the script may have started\): Connection to 127\.0\.0\.1 closed by remote host\.$/,
    );
    assert.equal(error.permanent, false);
    assert.ok(
      call.lines.some(([stream, line]) =>
        stream === "stderr" && line === "[ssh] Connection to 127.0.0.1 closed by remote host."
      ),
      "ssh's message is in the log",
    );
  },
);

Deno.test("run() passes each argument as one word that cannot inject shell", SANITIZE, async () => {
  await using sshd = await startSshd();
  await sshd.script("args.sh", `for a in "$@"; do printf '<%s>\\n' "$a"; done`);
  const marker = `${sshd.dir}/injected`;
  const args = {
    a: `'; touch ${marker}; echo '`,
    b: `$(touch ${marker})`,
    c: `\`touch ${marker}\``,
    d: `x" ; touch ${marker} ; "`,
    e: "two  spaces\tand a tab, * and ~ and $HOME",
    f: "",
  };
  const call = recordingCall();
  await runnerFor(sshd).run(call, targetOf(sshd), { scriptRef: "args.sh", args });
  assert.deepEqual(
    scriptLines(call.lines, "Script completed").map(([, line]) => line),
    Object.entries(args).map(([key, value]) => `<${key}=${value}>`),
  );
  await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
});

Deno.test(
  "run() kills ssh when the call aborts and rejects with the reason",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    await sshd.script(
      "forever.sh",
      // Ends by itself after about 10 s, so that a driver that does not kill ssh fails the test.
      `echo $$ > "${sshd.dir}/pid"\necho started\nfor i in $(seq 200); do sleep 0.05; echo tick; done\necho finished`,
    );
    const controller = new AbortController();
    const reason = new Error("cancelled by test");
    const call = recordingCall((line) => {
      if (line === "[ssh] started") controller.abort(reason);
    }, controller.signal);
    await assert.rejects(
      runnerFor(sshd).run(call, targetOf(sshd), { scriptRef: "forever.sh" }),
      (error) => error === reason,
    );
    assert.ok(
      !call.lines.some(([, line]) => line === "[ssh] finished"),
      "ssh must not outlive the abort",
    );
    // Without a tty the remote script gets no signal: it ends at its next write to the closed
    // connection (SIGPIPE). Waiting for that is waiting on an event, bounded by the test timeout.
    const pid = (await Deno.readTextFile(`${sshd.dir}/pid`)).trim();
    while (
      (await new Deno.Command("kill", { args: ["-0", pid], stderr: "null" }).output()).success
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  },
);

Deno.test("run() does not start ssh when the call aborts while it prepares", SANITIZE, async () => {
  await using sshd = await startSshd();
  await sshd.script("mark.sh", `touch "${sshd.dir}/ran"`);
  const controller = new AbortController();
  const call = recordingCall((line) => {
    if (line.startsWith("[ssh] Connecting to ")) controller.abort(new Error("cancelled early"));
  }, controller.signal);
  await assert.rejects(
    runnerFor(sshd).run(call, targetOf(sshd), { scriptRef: "mark.sh" }),
    /cancelled early/,
  );
  await assert.rejects(Deno.stat(`${sshd.dir}/ran`), Deno.errors.NotFound);
});

Deno.test("run() rejects at once when the call is already aborted", SANITIZE, async () => {
  await using sshd = await startSshd();
  const call = recordingCall(() => {}, AbortSignal.abort(new Error("gone")));
  await assert.rejects(
    runnerFor(sshd).run(call, targetOf(sshd), { scriptRef: "x.sh" }),
    /gone/,
  );
  assert.deepEqual(call.lines, []);
});

Deno.test(
  "run() reports a key the machine does not accept as a permanent auth error",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    await sshd.script("ok.sh", "echo ok");
    const wrongKey = `${sshd.dir}/wrong_key`;
    await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", wrongKey],
    }).output();
    const error = await rejectsWithKind(
      runnerFor(sshd).run(recordingCall(), targetOf(sshd, { keyFile: wrongKey }), {
        scriptRef: "ok.sh",
      }),
      "auth",
      /refused user \S+ with key .*wrong_key \(.*Permission denied \(publickey\)\.\): add the public key/,
    );
    assert.equal(error.permanent, true);
  },
);

Deno.test(
  "run() reports a key file readable by others as a permanent config error",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    await sshd.script("ok.sh", "echo ok");
    await Deno.chmod(sshd.clientKey, 0o644);
    const error = await rejectsWithKind(
      runnerFor(sshd).run(recordingCall(), targetOf(sshd), { scriptRef: "ok.sh" }),
      "config",
      /group or others can read it; run chmod 600 /,
    );
    assert.equal(error.permanent, true);
  },
);

Deno.test(
  "run() records a new host key, then refuses a changed one as a permanent host-key error",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    await sshd.script("ok.sh", "echo ok");
    const runner = runnerFor(sshd);
    await runner.run(recordingCall(), targetOf(sshd), { scriptRef: "ok.sh" });
    const recorded = await Deno.readTextFile(sshd.knownHostsFile);
    assert.match(recorded, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${sshd.port} ssh-ed25519 `));
    await sshd.changeHostKey();
    const call = recordingCall();
    const error = await rejectsWithKind(
      runner.run(call, targetOf(sshd), { scriptRef: "ok.sh" }),
      "host_key",
      /differs from the one recorded in .*known_hosts: .*ssh-keygen -f \S+ -R '\[127\.0\.0\.1\]:\d+'/,
    );
    assert.equal(error.permanent, true);
    assert.equal(await Deno.readTextFile(sshd.knownHostsFile), recorded);
    assert.ok(!call.lines.some(([, line]) => line === "[ssh] ok"), "the script must not run");
  },
);

Deno.test(
  "run() with hostKeyPolicy strict refuses a host missing from the known-hosts file",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    await sshd.script("ok.sh", "echo ok");
    await Deno.writeTextFile(sshd.knownHostsFile, "");
    const error = await rejectsWithKind(
      runnerFor(sshd, { hostKeyPolicy: "strict" }).run(recordingCall(), targetOf(sshd), {
        scriptRef: "ok.sh",
      }),
      "host_key",
      /is not in .*known_hosts and hostKeyPolicy is strict: add it \(ssh-keyscan -p \d+ 127\.0\.0\.1/,
    );
    assert.equal(error.permanent, true);
    assert.equal(await Deno.readTextFile(sshd.knownHostsFile), "");
  },
);

Deno.test("run() reports a closed port as a transient refused error", SANITIZE, async () => {
  await using sshd = await startSshd();
  const error = await rejectsWithKind(
    runnerFor(sshd).run(recordingCall(), targetOf(sshd, { endpoint: `127.0.0.1:${freePort()}` }), {
      scriptRef: "ok.sh",
    }),
    "refused",
    /^Cannot connect to 127\.0\.0\.1:\d+ \(machine machine-1\): the connection was refused/,
  );
  assert.equal(error.permanent, false);
});

Deno.test(
  "run() reports a server that never answers as a transient timeout",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    // Accepts TCP connections and never speaks SSH: ssh gives up after ConnectTimeout.
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) held.push(conn);
    })();
    const error = await rejectsWithKind(
      runnerFor(sshd, { connectTimeoutSeconds: 1 }).run(
        recordingCall(),
        targetOf(sshd, { endpoint: `127.0.0.1:${listener.addr.port}` }),
        { scriptRef: "ok.sh" },
      ),
      "timeout",
      /^Cannot reach 127\.0\.0\.1:\d+ \(machine machine-1\): .*timed out/,
    );
    assert.equal(error.permanent, false);
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  },
);

Deno.test(
  "run() cuts long lines and stops logging after maxLines, saying so",
  SANITIZE,
  async () => {
    await using sshd = await startSshd();
    await sshd.script(
      "noisy.sh",
      `head -c 500 /dev/zero | tr '\\0' x; echo\nfor i in $(seq 1 30); do echo "line $i"; done\necho 'last words' >&2\nexit 1`,
    );
    const call = recordingCall();
    const error = await rejectsWithKind(
      runnerFor(sshd, { maxLineLength: 100, maxLines: 10 }).run(call, targetOf(sshd), {
        scriptRef: "noisy.sh",
      }),
      "exit",
      /with exit code 1: last words$/,
    );
    assert.equal(error.exitCode, 1);
    const output = scriptLines(call.lines, "ERROR").map(([, line]) => line);
    assert.deepEqual(output, [
      `${"x".repeat(100)} [line cut: 400 more characters]`,
      ...Array.from({ length: 9 }, (_, i) => `line ${i + 1}`),
      "Output cut: only the first 10 lines are logged",
      "22 more output lines were not logged",
    ]);
  },
);

Deno.test("run() refuses bad input before running ssh and logs nothing", SANITIZE, async (t) => {
  const runner = createSshRunner({ knownHostsFile: "/nonexistent/known_hosts" });
  const target: SshTarget = {
    endpoint: "127.0.0.1:22",
    user: "root",
    keyFile: "/nonexistent/key",
    machineId: "machine-1",
  };
  const cases: [
    string,
    Partial<SshTarget>,
    { scriptRef: string; args?: Record<string, string> },
    RegExp,
  ][] = [
    [
      "a script reference leaving the scripts directory",
      {},
      { scriptRef: "../x.sh" },
      /a script reference is a relative path/,
    ],
    ["an option-like script reference", {}, { scriptRef: "-oProxyCommand=x" }, /Cannot run script/],
    [
      "an argument name with shell characters",
      {},
      { scriptRef: "x.sh", args: { "a;b": "1" } },
      /argument names match/,
    ],
    [
      "a value with a newline",
      {},
      { scriptRef: "x.sh", args: { a: "1\n2" } },
      /without control characters/,
    ],
    [
      "an option-like endpoint",
      { endpoint: "-oProxyCommand=x" },
      { scriptRef: "x.sh" },
      /spec\.ssh_endpoint/,
    ],
    [
      "a port out of range",
      { endpoint: "h:70000" },
      { scriptRef: "x.sh" },
      /port is not a number from 1 to 65535/,
    ],
    [
      "an option-like user",
      { user: "-oProxyCommand=x" },
      { scriptRef: "x.sh" },
      /ssh_user must match/,
    ],
    [
      "a relative key file",
      { keyFile: "id_ed25519" },
      { scriptRef: "x.sh" },
      /ssh_key_file "id_ed25519": it must be an absolute path/,
    ],
  ];
  for (const [name, override, command, message] of cases) {
    await t.step(name, async () => {
      const call = recordingCall();
      const error = await rejectsWithKind(
        runner.run(call, { ...target, ...override }, command),
        "invalid",
        message,
      );
      assert.match(error.message, /\(machine machine-1\)$/);
      assert.equal(error.permanent, true);
      assert.deepEqual(call.lines, []);
    });
  }
});

Deno.test(
  "run() names a missing key file, known-hosts directory or ssh client as config errors",
  SANITIZE,
  async (t) => {
    await using sshd = await startSshd();
    await t.step("missing key file", async () => {
      await rejectsWithKind(
        runnerFor(sshd).run(recordingCall(), targetOf(sshd, { keyFile: `${sshd.dir}/nope` }), {
          scriptRef: "x.sh",
        }),
        "config",
        /key file \S+nope for machine machine-1: does not exist; fix ssh_key_file/,
      );
    });
    await t.step("missing known-hosts directory", async () => {
      await rejectsWithKind(
        runnerFor(sshd, { knownHostsFile: `${sshd.dir}/missing/known_hosts` }).run(
          recordingCall(),
          targetOf(sshd),
          { scriptRef: "x.sh" },
        ),
        "config",
        /the directory \S+missing of the known-hosts file does not exist; create it/,
      );
    });
    await t.step("missing known-hosts file with hostKeyPolicy strict", async () => {
      await rejectsWithKind(
        runnerFor(sshd, { hostKeyPolicy: "strict" }).run(recordingCall(), targetOf(sshd), {
          scriptRef: "x.sh",
        }),
        "config",
        /known-hosts file \S+known_hosts does not exist and hostKeyPolicy is strict; seed it/,
      );
    });
    await t.step("missing ssh client", async () => {
      await rejectsWithKind(
        runnerFor(sshd, { sshPath: `${sshd.dir}/no-ssh` }).run(recordingCall(), targetOf(sshd), {
          scriptRef: "x.sh",
        }),
        "config",
        /Cannot run \S+no-ssh: it is not installed; install the OpenSSH client/,
      );
    });
  },
);

Deno.test("createSshRunner() rejects out-of-range options naming them", SANITIZE, () => {
  assert.throws(() => createSshRunner({ knownHostsFile: "known_hosts" }), /knownHostsFile/);
  assert.throws(() => createSshRunner({ knownHostsFile: "/a b" }), /knownHostsFile/);
  assert.throws(
    () => createSshRunner({ knownHostsFile: "/kh", scriptsDir: "/opt/$(x)" }),
    /scriptsDir/,
  );
  assert.throws(() => createSshRunner({ knownHostsFile: "/kh", maxLines: 0 }), /maxLines 0/);
  assert.throws(
    // @ts-expect-error: an unknown policy from untyped configuration
    () => createSshRunner({ knownHostsFile: "/kh", hostKeyPolicy: "no" }),
    /hostKeyPolicy/,
  );
});

Deno.test("parseSshEndpoint() reads host:port, bare hosts and bracketed IPv6", SANITIZE, () => {
  assert.deepEqual(parseSshEndpoint("10.0.0.11:22"), { host: "10.0.0.11", port: 22 });
  assert.deepEqual(parseSshEndpoint("node-1.lab"), { host: "node-1.lab", port: 22 });
  assert.deepEqual(parseSshEndpoint("[fd00::11]:2222"), { host: "fd00::11", port: 2222 });
  for (
    const bad of ["", ":22", "h:", "h:0", "h:x", "[fd00::11", "[fd00::11]x", "[h]:22", "a b:22"]
  ) {
    assert.throws(() => parseSshEndpoint(bad), RangeError, bad);
  }
});

Deno.test("remoteCommand() quotes every word and sorts arguments", SANITIZE, () => {
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(
    remoteCommand("/s", { scriptRef: "k8s/drain.sh", args: { z: "1", a: "$x" } }),
    `'/s/k8s/drain.sh' 'a=$x' 'z=1'`,
  );
  assert.throws(() => remoteCommand("/s", { scriptRef: "a/../b" }), RangeError);
  assert.throws(() => remoteCommand("/s", { scriptRef: ".hidden" }), RangeError);
  const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
  assert.throws(() => remoteCommand("/s", { scriptRef: "x", args: many }), /65 arguments/);
});

Deno.test(
  "sshArguments() turns off every prompt, agent, forwarding and other configuration",
  SANITIZE,
  () => {
    const args = sshArguments({
      endpoint: { host: "::1", port: 2222 },
      user: "root",
      keyFile: "/k",
      knownHostsFile: "/kh",
      hostKeyPolicy: "strict",
      connectTimeoutSeconds: 7,
      serverAliveIntervalSeconds: 9,
      command: "'/s/x'",
    });
    assert.deepEqual(args.slice(0, 10), [
      "-F",
      "/dev/null",
      "-T",
      "-i",
      "/k",
      "-p",
      "2222",
      "-l",
      "root",
      "-o",
    ]);
    const options = args.filter((_, i) => args[i - 1] === "-o");
    for (
      const expected of [
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/kh",
        "GlobalKnownHostsFile=/dev/null",
        "ConnectTimeout=7",
        "ServerAliveInterval=9",
        "ForwardAgent=no",
        "ClearAllForwardings=yes",
        "RequestTTY=no",
      ]
    ) assert.ok(options.includes(expected), expected);
    assert.deepEqual(args.slice(-3), ["--", "::1", "'/s/x'"]);
  },
);
