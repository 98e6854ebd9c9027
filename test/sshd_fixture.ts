/**
 * A throwaway OpenSSH server on a loopback port for the SSH driver's tests: its own host key, a
 * client key in a temporary authorized-keys file, a scripts directory, no PAM. It logs in the
 * current user (root here: sshd then needs its privilege-separation directory `/run/sshd`, which
 * is created when missing, as Debian's service unit would).
 *
 * @module
 */

/** A running test sshd, for `await using`. */
export interface TestSshd extends AsyncDisposable {
  /** Loopback port sshd listens on. */
  readonly port: number;
  /** `127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** User the client logs in as (the current user). */
  readonly user: string;
  /** Temporary directory holding keys, config and scripts. */
  readonly dir: string;
  /** Private key sshd accepts (mode 0600). */
  readonly clientKey: string;
  /** A known-hosts file path in `dir` (not created). */
  readonly knownHostsFile: string;
  /** Directory to write test scripts into (pass as the runner's `scriptsDir`). */
  readonly scriptsDir: string;
  /**
   * Writes an executable `#!/bin/sh` script into `scriptsDir`.
   *
   * @param name File name.
   * @param body Script body after the shebang line.
   */
  script(name: string, body: string): Promise<void>;
  /** Restarts sshd on the same port with a newly generated host key. */
  changeHostKey(): Promise<void>;
  /** sshd's last log lines (its `-e` stderr), for a failing assertion's message. */
  serverLog(): string;
}

/**
 * Starts sshd on a free loopback port and waits until it listens.
 *
 * @returns The server; dispose it to stop sshd and remove its files.
 */
export async function startSshd(): Promise<TestSshd> {
  const sshd = "/usr/sbin/sshd";
  await Deno.stat(sshd).catch(() => {
    throw new Error(`${sshd} is missing: apt-get install openssh-server (.ci/run does)`);
  });
  const root = Deno.uid() === 0;
  if (root) await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const user = root ? "root" : await output("id", ["-un"]);
  const dir = await Deno.makeTempDir({ prefix: "bmdemo_sshd_" });
  const scriptsDir = `${dir}/scripts`;
  await Deno.mkdir(scriptsDir);
  const clientKey = `${dir}/client_key`;
  await keygen(clientKey);
  await Deno.copyFile(`${clientKey}.pub`, `${dir}/authorized_keys`);
  await keygen(`${dir}/host_key`);
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/sshd_config`,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${dir}/host_key`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "UsePAM no",
      "StrictModes no",
      "PidFile none",
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PrintMotd no",
      "PrintLastLog no",
      "MaxStartups 50",
      "",
    ].join("\n"),
  );
  const seen: string[] = [];
  let server = await launch(sshd, dir, port, seen);

  return {
    port,
    endpoint: `127.0.0.1:${port}`,
    user,
    dir,
    clientKey,
    knownHostsFile: `${dir}/known_hosts`,
    scriptsDir,
    async script(name, body) {
      const path = `${scriptsDir}/${name}`;
      await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
      await Deno.chmod(path, 0o755);
    },
    async changeHostKey() {
      await server.stop();
      await Deno.remove(`${dir}/host_key`);
      await Deno.remove(`${dir}/host_key.pub`);
      await keygen(`${dir}/host_key`);
      server = await launch(sshd, dir, port, seen);
    },
    serverLog: () => seen.join(""),
    async [Symbol.asyncDispose]() {
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A running sshd process. */
interface SshdProcess {
  stop(): Promise<void>;
}

/** Starts `sshd -D -e` and resolves once it reports listening; its later stderr is drained. */
async function launch(
  sshd: string,
  dir: string,
  port: number,
  seen: string[],
): Promise<SshdProcess> {
  const child = new Deno.Command(sshd, {
    args: ["-D", "-e", "-f", `${dir}/sshd_config`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes(`Server listening on 127.0.0.1 port ${port}`)) {
    const { value, done } = await lines.read();
    if (done) {
      await child.status;
      throw new Error(`sshd did not start:\n${text}`);
    }
    text += value;
  }
  seen.push(text);
  // Kept for a failing test's message, bounded.
  const drained = (async () => {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) return;
      seen.push(value);
      if (seen.length > 200) seen.shift();
    }
  })();
  return {
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await drained;
    },
  };
}

async function keygen(path: string): Promise<void> {
  await output("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bmdemo-test", "-f", path]);
}

async function output(program: string, args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(program, { args }).output();
  if (code !== 0) {
    throw new Error(`${program} ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
  }
  return new TextDecoder().decode(stdout).trim();
}

/** A loopback port that was free a moment ago. */
export function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}
