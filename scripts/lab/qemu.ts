/**
 * A network-booting QEMU VM for tests and the lab: builds the command verified on these machines
 * (software emulation, QEMU's own DHCP and TFTP serving iPXE a `boot.ipxe` that chains to an HTTP
 * URL), returns it as an argv for `ipmi_sim`'s `startcmd`, or runs the VM directly.
 *
 * The guest sees only one network path: `restrict=on` cuts it off from everything but the
 * `guestfwd` port, which QEMU forwards from {@linkcode GUEST_HTTP_HOST}`:<port>` in the guest to
 * `127.0.0.1:<port>` on the host, where the caller's HTTP server listens.
 *
 * @example Run a VM that chains to a local server (needs qemu-system-x86 and ipxe-qemu)
 * ```ts ignore
 * await using vm = await startNetbootVm({ httpPort: 8080, bootPath: "/boot?mac=${net0/mac}" });
 * // the VM fetches http://10.0.2.100:8080/boot?mac=52%3A54%3A00%3A00%3A00%3A01 about 6 s later
 * await vm.stop();
 * ```
 *
 * @module
 */

/** Address the guest reaches the host's HTTP server at (forwarded to 127.0.0.1, same port). */
export const GUEST_HTTP_HOST = "10.0.2.100";

/** MAC of a VM when the caller names none (QEMU's locally administered prefix). */
export const DEFAULT_VM_MAC = "52:54:00:00:00:01";

/** Options of {@linkcode netbootVmArgs}. */
export interface NetbootVmArgsOptions {
  /** Directory QEMU's TFTP server serves; must hold `boot.ipxe` ({@linkcode writeBootScript}). */
  tftpDir: string;
  /** Loopback port of the HTTP server the guest reaches as `10.0.2.100:<httpPort>`. */
  httpPort: number;
  /** MAC of the VM's network card. @default DEFAULT_VM_MAC */
  mac?: string;
  /** Guest memory in MiB (iPXE needs little). @default 128 */
  memoryMb?: number;
  /** Where the serial console goes, as QEMU's `-serial` value, e.g. `file:/tmp/console.log`. @default "stdio" */
  serial?: string;
  /**
   * Exit instead of rebooting (`-no-reboot`). Off for a VM behind `ipmi_sim`, where an IPMI
   * `power reset` must reset the VM, not end it. @default true
   */
  noReboot?: boolean;
  /** More QEMU arguments, e.g. {@linkcode ipmiDeviceArgs}. */
  extraArgs?: readonly string[];
  /** QEMU binary. @default "qemu-system-x86_64" */
  qemu?: string;
}

/**
 * Builds the argv (binary first) of a VM that network-boots once: `-boot n`, TCG (iPXE fails
 * under KVM here: "KVM internal error. Suberror: 1"), no display, QEMU's user network restricted
 * to the forwarded HTTP port.
 *
 * @param options Where the boot script is, the HTTP port, the MAC.
 * @returns The command, binary first.
 * @throws {RangeError} when the port or the MAC is malformed.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const argv = netbootVmArgs({ tftpDir: "/tmp/tftp", httpPort: 8080 });
 * assert.equal(argv[0], "qemu-system-x86_64");
 * assert.ok(argv.includes("-boot") && argv.includes("n"));
 * ```
 */
export function netbootVmArgs(options: NetbootVmArgsOptions): string[] {
  const {
    tftpDir,
    httpPort,
    mac = DEFAULT_VM_MAC,
    memoryMb = 128,
    serial = "stdio",
    noReboot = true,
    extraArgs = [],
    qemu = "qemu-system-x86_64",
  } = options;
  if (!Number.isInteger(httpPort) || httpPort < 1 || httpPort > 65535) {
    throw new RangeError(`Cannot build the VM command: httpPort must be 1-65535, got ${httpPort}`);
  }
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) {
    throw new RangeError(
      `Cannot build the VM command: mac must look like 52:54:00:00:00:01, got "${mac}"`,
    );
  }
  const netdev = [
    "user,id=n0,restrict=on",
    `guestfwd=tcp:${GUEST_HTTP_HOST}:${httpPort}-tcp:127.0.0.1:${httpPort}`,
    `tftp=${tftpDir}`,
    "bootfile=boot.ipxe",
  ].join(",");
  return [
    qemu,
    ...["-accel", "tcg", "-m", String(memoryMb), "-nographic", "-nodefaults"],
    ...["-serial", serial, "-display", "none"],
    ...(noReboot ? ["-no-reboot"] : []),
    ...["-boot", "n", "-netdev", netdev, "-device", `virtio-net-pci,netdev=n0,mac=${mac}`],
    ...extraArgs,
  ];
}

/**
 * QEMU devices that connect the VM to an external BMC (`ipmi_sim` with `serial ... codec VM`
 * listening on `port`): the BMC then powers the VM off, resets it and sees it power on.
 *
 * @param port Loopback TCP port of the BMC's VM serial interface.
 * @returns QEMU arguments.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.ok(ipmiDeviceArgs(9002).some((a) => a.includes("port=9002")));
 * ```
 */
export function ipmiDeviceArgs(port: number): string[] {
  return [
    ...["-chardev", `socket,id=ipmi0,host=127.0.0.1,port=${port},reconnect=10`],
    ...["-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0"],
    ...["-device", "isa-ipmi-bt,bmc=bmc0"],
  ];
}

/**
 * The iPXE script QEMU's TFTP server hands the VM: chains to `http://10.0.2.100:<port><path>`.
 *
 * @param httpPort Loopback port of the HTTP server.
 * @param bootPath Path and query; may use iPXE settings such as `${net0/mac}` (iPXE
 * percent-encodes the value: `52%3A54%3A...`).
 * @returns The script text.
 * @throws {RangeError} when the path does not start with `/` or spans lines.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(
 *   bootScript(8080, "/boot?mac=${net0/mac}"),
 *   "#!ipxe\nchain http://10.0.2.100:8080/boot?mac=${net0/mac}\n",
 * );
 * ```
 */
export function bootScript(httpPort: number, bootPath: string): string {
  if (!bootPath.startsWith("/") || /\s/.test(bootPath)) {
    throw new RangeError(
      `Cannot write the boot script: bootPath must start with "/" and hold no spaces, got "${bootPath}"`,
    );
  }
  return `#!ipxe\nchain http://${GUEST_HTTP_HOST}:${httpPort}${bootPath}\n`;
}

/**
 * Writes `boot.ipxe` ({@linkcode bootScript}) into `tftpDir`.
 *
 * @param tftpDir Directory QEMU's TFTP server serves.
 * @param options The HTTP port and path the script chains to.
 */
export async function writeBootScript(
  tftpDir: string,
  options: { httpPort: number; bootPath: string },
): Promise<void> {
  await Deno.writeTextFile(`${tftpDir}/boot.ipxe`, bootScript(options.httpPort, options.bootPath));
}

/**
 * Quotes an argv for `/bin/sh` (what `ipmi_sim` runs a `startcmd` with).
 *
 * @param argv The command.
 * @returns One shell line.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(shellQuote(["echo", "a b", "it's"]), "'echo' 'a b' 'it'\\''s'");
 * ```
 */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((arg) => `'${arg.replaceAll("'", `'\\''`)}'`).join(" ");
}

/** Options of {@linkcode startNetbootVm}. */
export interface StartNetbootVmOptions
  extends Omit<NetbootVmArgsOptions, "tftpDir" | "serial" | "noReboot"> {
  /** Path (and query) the boot script chains to; may use `${net0/mac}`. */
  bootPath: string;
}

/** A VM started by {@linkcode startNetbootVm}. */
export interface NetbootVm extends AsyncDisposable {
  /** QEMU's process id. */
  readonly pid: number;
  /** The command it runs. */
  readonly argv: readonly string[];
  /** What the serial console printed so far (the last 64 KiB). */
  console(): string;
  /** Ends QEMU (iPXE's `poweroff` does not work in Debian's build) and removes its files. */
  stop(): Promise<void>;
}

const CONSOLE_TAIL = 64 * 1024;

/**
 * Runs a network-booting VM directly (no BMC): writes the boot script into a temporary TFTP
 * directory and starts QEMU, its serial console on a pipe.
 *
 * @param options The HTTP port and path the VM chains to, its MAC.
 * @returns The running VM; stop it (or `await using`) so nothing is left running.
 */
export async function startNetbootVm(options: StartNetbootVmOptions): Promise<NetbootVm> {
  const tftpDir = await Deno.makeTempDir({ prefix: "bmdemo-vm-" });
  try {
    await writeBootScript(tftpDir, options);
    const argv = netbootVmArgs({ ...options, tftpDir, serial: "stdio", noReboot: true });
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let output = "";
    const decoder = new TextDecoder();
    const collect = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
      for await (const chunk of stream) {
        output = (output + decoder.decode(chunk, { stream: true })).slice(-CONSOLE_TAIL);
      }
    };
    const drained = Promise.all([collect(child.stdout), collect(child.stderr)]);
    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> =>
      stopping ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited by itself.
        }
        await child.status;
        await drained;
        await Deno.remove(tftpDir, { recursive: true });
      })();
    return {
      pid: child.pid,
      argv,
      console: () => output,
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    await Deno.remove(tftpDir, { recursive: true });
    throw error;
  }
}
