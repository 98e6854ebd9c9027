/**
 * An IPMI BMC on loopback for tests and the lab: OpenIPMI's `ipmi_sim` with a generated
 * configuration in a temporary state directory, answering RMCP+ (`ipmitool -I lanplus -C 3`) on a
 * free UDP port of 127.0.0.1.
 *
 * Two modes:
 * - chassis mode (default): a shell chassis-control hook keeps the power and boot device in files
 *   and appends every call `ipmi_sim` makes to a log ({@linkcode IpmiSim.calls}), which is how a
 *   test sees what a driver did;
 * - VM mode ({@linkcode IpmiSimOptions.vm}): `ipmi_sim` drives a QEMU VM through its VM serial
 *   codec; `power on` starts the VM (`startcmd`), `power off` ends it, `power reset` resets it.
 *   This BMC rejects `chassis bootdev pxe` ("Invalid data field in request"): the VM always
 *   network-boots (`-boot n`).
 *
 * Everything runs in one process group (`setsid`), so {@linkcode IpmiSim.stop} ends the BMC, its
 * hook and its VM together and removes the state directory.
 *
 * @example A BMC for one test (needs Debian's openipmi and ipmitool)
 * ```ts ignore
 * await using bmc = await startIpmiSim();
 * // ipmitool -I lanplus -C 3 -H 127.0.0.1 -p <bmc.port> -U admin -E power status
 * console.log(bmc.address, await bmc.calls());
 * ```
 *
 * @module
 */

import { ipmiDeviceArgs, netbootVmArgs, shellQuote, writeBootScript } from "./qemu.ts";

/** Options of VM mode: what the VM network-boots from. */
export interface IpmiSimVmOptions {
  /** Loopback port of the HTTP server the VM's boot script chains to. */
  httpPort: number;
  /** Path (and query) the boot script chains to; may use `${net0/mac}`. */
  bootPath: string;
  /** MAC of the VM. @default DEFAULT_VM_MAC of qemu.ts */
  mac?: string;
  /** QEMU binary. @default "qemu-system-x86_64" */
  qemu?: string;
  /**
   * The whole `boot.ipxe` QEMU's TFTP serves instead of a `chain` to `bootPath`, e.g. the
   * server's retrying `bootLoaderScript`.
   */
  script?: string;
}

/** Options of {@linkcode startIpmiSim}. */
export interface IpmiSimOptions {
  /** BMC user. @default "admin" */
  username?: string;
  /** BMC password (IPMI v2 allows at most 20 characters). @default "password" */
  password?: string;
  /** Power state at start (chassis mode). @default "off" */
  power?: "on" | "off";
  /**
   * Whether the simulated OS obeys an ACPI soft-off (`power soft`) by powering off (chassis
   * mode); `false` models an OS that ignores it. @default true
   */
  obeySoftOff?: boolean;
  /** Run a QEMU VM behind the BMC instead of the chassis-control hook. */
  vm?: IpmiSimVmOptions;
  /**
   * Chassis mode: called on every boot (a power-up or reset) with the boot device it used
   * (`pxe` once `chassis bootdev pxe` was set, else `default`), e.g. to make the machine
   * network-boot (the lab's stand-in, `netboot_stand_in.ts`).
   */
  onBoot?: (device: string) => void;
  /** How long to wait for the BMC to answer. @default 10_000 */
  startTimeoutMs?: number;
}

/** A running `ipmi_sim`. */
export interface IpmiSim extends AsyncDisposable {
  /** `127.0.0.1:<port>`, as `spec.bmc_address`. */
  readonly address: string;
  /** UDP port it answers IPMI on. */
  readonly port: number;
  /** Its process id, also its process group's. */
  readonly pid: number;
  /** BMC user. */
  readonly username: string;
  /** BMC password. */
  readonly password: string;
  /** Its state directory (configuration, hook state, logs, the VM's console). */
  readonly stateDir: string;
  /**
   * Every call of the chassis-control hook, in order, without the BMC address: `get power`,
   * `set boot pxe`, `set power 1`, `set reset 1`, `set shutdown 1`. Empty in VM mode.
   */
  calls(): Promise<string[]>;
  /**
   * Injects a fault (chassis mode): the BMC refuses the next `count` power changes (`power on`,
   * `off`, `cycle`, `soft`) with an error, as a broken one does; `0` clears it.
   */
  failPowerChanges(count: number): Promise<void>;
  /** Power state the hook holds (chassis mode). */
  power(): Promise<"on" | "off">;
  /** Boot device of every boot so far, in order (chassis mode): `pxe` or `default`. */
  boots(): Promise<string[]>;
  /** What the VM's serial console printed so far (VM mode; `""` before the first power on). */
  vmConsole(): Promise<string>;
  /** What `ipmi_sim` and the VM's QEMU printed (the last 16 KiB), for diagnosing a failure. */
  output(): string;
  /** Process ids of everything still running in its process group (the BMC, the VM). */
  processes(): Promise<number[]>;
  /** Ends the BMC and everything it started, and removes the state directory. */
  stop(): Promise<void>;
}

const USER_PRIVILEGES = "none md2 md5 straight";

/** The `lan.conf` of one BMC. */
function lanConf(options: {
  port: number;
  username: string;
  password: string;
  chassisControl?: string;
  vm?: { serialPort: number; startcmd: string };
}): string {
  const lines = [
    `name "bmdemo-bmc"`,
    "set_working_mc 0x20",
    "  startlan 1",
    `    addr 127.0.0.1 ${options.port}`,
    "    priv_limit admin",
    ...["callback", "user", "operator", "admin"].map((p) =>
      `    allowed_auths_${p} ${USER_PRIVILEGES}`
    ),
    `    guid ${crypto.randomUUID().replaceAll("-", "")}`,
    "  endlan",
  ];
  if (options.chassisControl) lines.push(`  chassis_control "${options.chassisControl} 0x20"`);
  if (options.vm) {
    lines.push(`  serial 15 127.0.0.1 ${options.vm.serialPort} codec VM`);
    lines.push(`  startcmd "${options.vm.startcmd}"`);
  }
  lines.push(
    `  user 2 true "${options.username}" "${options.password}" admin 10 ${USER_PRIVILEGES}`,
  );
  return lines.join("\n") + "\n";
}

const SIM_EMU = [
  "mc_setbmc 0x20",
  "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr",
  "mc_enable 0x20",
  "",
].join("\n");

/**
 * The chassis-control hook. `ipmi_sim` runs it as `chassis.sh 0x20 get power boot` (it prints
 * `power:0|1` and `boot:<device>`) and `chassis.sh 0x20 set power 1 boot pxe ...` (pairs).
 */
function chassisScript(dir: string, obeySoftOff: boolean): string {
  return `#!/bin/sh
dir='${dir}'
shift
echo "$*" >> "$dir/calls.log"
op=$1
shift
case $op in
get)
  for item in "$@"; do
    case $item in
    power) echo "power:$(cat "$dir/power")" ;;
    boot) echo "boot:$(cat "$dir/boot")" ;;
    esac
  done
  ;;
set)
  # An injected fault (failPowerChanges): refuse the next N power changes, as a broken BMC does.
  case " $* " in
  *" power "*|*" reset "*|*" shutdown "*)
    left=$(cat "$dir/fail_power" 2>/dev/null || echo 0)
    if [ "$left" -gt 0 ]; then
      echo $((left - 1)) > "$dir/fail_power"
      echo "injected fault: power change refused" >> "$dir/calls.log"
      exit 1
    fi
    ;;
  esac
  booted=0
  while [ $# -ge 2 ]; do
    case $1 in
    power)
      if [ "$2" = 1 ] && [ "$(cat "$dir/power")" = 0 ]; then booted=1; fi
      echo "$2" > "$dir/power"
      ;;
    reset) [ "$2" = 1 ] && booted=1 ;;
    boot) echo "$2" > "$dir/boot" ;;
    shutdown) ${obeySoftOff ? `echo 0 > "$dir/power"` : ":"} ;;
    esac
    shift 2
  done
  # A power-up or reset boots the machine from the boot device, which applies once (next boot).
  if [ $booted = 1 ]; then
    cat "$dir/boot" >> "$dir/boots.log"
    echo default > "$dir/boot"
  fi
  ;;
esac
`;
}

/**
 * A port that was free on 127.0.0.1 a moment ago (the kernel's choice for a TCP listener; UDP
 * and TCP ports are separate, so a taken UDP port shows when `ipmi_sim` fails to bind it).
 *
 * @returns A port number.
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** One line of the process list. */
export interface ProcessInfo {
  /** Process id. */
  pid: number;
  /** Its process group. */
  pgid: number;
  /** Its command line. */
  args: string;
}

/**
 * The live (not zombie) processes of the machine, from `ps` (procps): Deno reads /proc only with
 * every permission.
 *
 * @returns One entry per process.
 */
export async function processList(): Promise<ProcessInfo[]> {
  const out = await new Deno.Command("ps", {
    args: ["-e", "-o", "pid=,pgid=,stat=,args="],
    stdin: "null",
    stderr: "inherit",
  }).output();
  const list: ProcessInfo[] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const match = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (match && !match[3].startsWith("Z")) {
      list.push({ pid: Number(match[1]), pgid: Number(match[2]), args: match[4] });
    }
  }
  return list;
}

/**
 * Process ids of the live processes in process group `pgid`.
 *
 * @param pgid Process group id.
 * @returns Their ids.
 */
export async function processGroup(pgid: number): Promise<number[]> {
  return (await processList()).filter((p) => p.pgid === pgid).map((p) => p.pid);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Starts `ipmi_sim` on a free loopback UDP port and resolves once it answers `power status`.
 *
 * @param options Credentials, initial power, VM mode.
 * @returns The running BMC; stop it (or `await using`) so nothing is left running.
 * @throws {Error} when `ipmi_sim` is not installed, exits, or does not answer in time (with its
 * output).
 */
export async function startIpmiSim(options: IpmiSimOptions = {}): Promise<IpmiSim> {
  const {
    username = "admin",
    password = "password",
    power = "off",
    obeySoftOff = true,
    startTimeoutMs = 10_000,
  } = options;
  if (/["\s]/.test(username) || /["\n]/.test(password) || password.length > 20) {
    throw new RangeError(
      "Cannot start ipmi_sim: username must hold no spaces or quotes, password no quotes and at most 20 characters",
    );
  }
  const stateDir = await Deno.makeTempDir({ prefix: "bmdemo-ipmi-sim-" });
  try {
    await Deno.writeTextFile(`${stateDir}/sim.emu`, SIM_EMU);
    await Deno.mkdir(`${stateDir}/state`);
    let chassisControl: string | undefined;
    let vm: { serialPort: number; startcmd: string } | undefined;
    if (options.vm) {
      const tftpDir = `${stateDir}/tftp`;
      await Deno.mkdir(tftpDir);
      if (options.vm.script === undefined) await writeBootScript(tftpDir, options.vm);
      else await Deno.writeTextFile(`${tftpDir}/boot.ipxe`, options.vm.script);
      const serialPort = freePort();
      const argv = netbootVmArgs({
        ...options.vm,
        tftpDir,
        serial: `file:${stateDir}/console.log`,
        noReboot: false,
        extraArgs: ipmiDeviceArgs(serialPort),
      });
      if (argv.some((arg) => arg.includes('"'))) {
        throw new RangeError(`Cannot start ipmi_sim: the VM command holds a double quote`);
      }
      // ipmi_sim runs it as `sh -c "exec <startcmd>"`: QEMU replaces the shell, in our group.
      vm = { serialPort, startcmd: shellQuote(argv) };
    } else {
      chassisControl = `${stateDir}/chassis.sh`;
      await Deno.writeTextFile(chassisControl, chassisScript(stateDir, obeySoftOff), {
        mode: 0o755,
      });
      await Deno.writeTextFile(`${stateDir}/power`, power === "on" ? "1\n" : "0\n");
      await Deno.writeTextFile(`${stateDir}/boot`, "default\n");
      await Deno.writeTextFile(`${stateDir}/calls.log`, "");
      await Deno.writeTextFile(`${stateDir}/boots.log`, "");
    }
    for (let attempt = 1;; attempt++) {
      const port = freePort();
      await Deno.writeTextFile(
        `${stateDir}/lan.conf`,
        lanConf({ port, username, password, chassisControl, vm }),
      );
      const started = await launch(stateDir, port, startTimeoutMs);
      if (started.ok) {
        return simHandle({
          ...started,
          stateDir,
          port,
          username,
          password,
          onBoot: options.onBoot,
        });
      }
      // Another process took the port between freePort() and the bind: try another one.
      if (!started.portTaken || attempt === 3) {
        throw new Error(`Cannot start ipmi_sim: ${started.reason}`);
      }
    }
  } catch (error) {
    await Deno.remove(stateDir, { recursive: true });
    throw error;
  }
}

type Launched =
  | { ok: true; child: Deno.ChildProcess; output: () => string; drained: Promise<unknown> }
  | { ok: false; portTaken: boolean; reason: string };

/** Starts `ipmi_sim` in its own process group and waits until it binds its port and answers. */
async function launch(stateDir: string, port: number, timeoutMs: number): Promise<Launched> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("setsid", {
      args: [
        ...["ipmi_sim", "-c", `${stateDir}/lan.conf`, "-f", `${stateDir}/sim.emu`],
        ...["-s", `${stateDir}/state`, "-n"],
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return {
        ok: false,
        portTaken: false,
        reason: "setsid (util-linux) is missing: install util-linux",
      };
    }
    throw error;
  }
  let output = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
    for await (const chunk of stream) {
      output = (output + decoder.decode(chunk, { stream: true })).slice(-16_384);
    }
  };
  const drained = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const deadline = Date.now() + timeoutMs;
  // ipmi_sim prints nothing when it is ready: ask until it answers (ipmitool resends after 1 s).
  while (!exited && Date.now() < deadline) {
    const answer = await new Deno.Command("ipmitool", {
      args: [
        ...["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", String(port)],
        ...["-U", "probe", "-P", "", "-N", "1", "-R", "1", "-v", "power", "status"],
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output().catch(() => undefined);
    if (!answer) {
      output += "\nipmitool is missing: install Debian's ipmitool";
      break;
    }
    // Any RMCP+ answer (here: the unknown probe user refused) proves the BMC serves requests.
    if (!/Get Auth Capabilities error|No response/.test(decoder.decode(answer.stderr))) {
      return { ok: true, child, output: () => output, drained };
    }
  }
  if (!exited) Deno.kill(-child.pid, "SIGKILL");
  await status;
  await drained;
  if (/not found|No such file/.test(output) && !output.includes("ipmitool")) {
    output += "\n(is Debian's openipmi installed? it provides ipmi_sim)";
  }
  return {
    ok: false,
    portTaken: /in use|bind/i.test(output),
    reason: exited
      ? `it exited: ${output.trim() || "(no output)"}`
      : `no answer on 127.0.0.1:${port} within ${timeoutMs} ms: ${output.trim()}`,
  };
}

function simHandle(
  sim: {
    child: Deno.ChildProcess;
    output: () => string;
    drained: Promise<unknown>;
    stateDir: string;
    port: number;
    username: string;
    password: string;
    onBoot?: (device: string) => void;
  },
): IpmiSim {
  const { child, stateDir } = sim;
  const watching = sim.onBoot ? watchBoots(`${stateDir}/boots.log`, sim.onBoot) : undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    stopping ??= (async () => {
      await watching?.close();
      try {
        Deno.kill(-child.pid, "SIGTERM");
      } catch {
        // The group is gone already.
      }
      await child.status;
      // QEMU is not our child: wait until the group is empty, then force what is left.
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline && (await processGroup(child.pid)).length > 0) await delay(20);
      for (const pid of await processGroup(child.pid)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Ended meanwhile.
        }
      }
      // The VM held the BMC's output pipes too: they close once every process is gone.
      await sim.drained;
      await Deno.remove(stateDir, { recursive: true });
    })();
  const readOr = async (path: string, fallback: string): Promise<string> => {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return fallback;
      throw error;
    }
  };
  return {
    address: `127.0.0.1:${sim.port}`,
    port: sim.port,
    pid: child.pid,
    username: sim.username,
    password: sim.password,
    stateDir,
    calls: async () =>
      (await readOr(`${stateDir}/calls.log`, "")).split("\n").filter((line) => line !== ""),
    power: async () => (await readOr(`${stateDir}/power`, "0")).trim() === "1" ? "on" : "off",
    boots: async () =>
      (await readOr(`${stateDir}/boots.log`, "")).split("\n").filter((line) => line !== ""),
    failPowerChanges: (count) => Deno.writeTextFile(`${stateDir}/fail_power`, `${count}\n`),
    vmConsole: () => readOr(`${stateDir}/console.log`, ""),
    output: sim.output,
    processes: () => processGroup(child.pid),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * Calls `onBoot` for each line the chassis-control hook appends to `boots.log` (one per boot),
 * woken by the file system's change events rather than a poll.
 */
function watchBoots(
  file: string,
  onBoot: (device: string) => void,
): { close(): Promise<void> } {
  const watcher = Deno.watchFs(file, { recursive: false });
  let seen = 0;
  const read = async (): Promise<void> => {
    const lines = (await Deno.readTextFile(file)).split("\n").filter((line) => line !== "");
    for (const device of lines.slice(seen)) onBoot(device.trim());
    seen = Math.max(seen, lines.length);
  };
  const loop = (async () => {
    for await (const event of watcher) {
      if (event.kind === "modify" || event.kind === "create") await read().catch(() => {});
    }
  })();
  return {
    async close() {
      watcher.close();
      await loop;
    },
  };
}
