/**
 * The IPMI driver: a {@linkcode BmcDriver} over Debian's `ipmitool` (IPMI v2 over LAN, RMCP+,
 * cipher suite 3). Each action runs `ipmitool -I lanplus -C 3 -H host -p port -U user -E ...` as
 * a child process through the BMC gate; the password reaches it only through the child's
 * environment (`IPMI_PASSWORD`, read by `-E`), never its command line.
 *
 * What the verbs send (IPMI has no graceful restart; see {@linkcode createIpmiDriver}):
 * - `setBootPxe`: `raw 0x00 0x08 0x03 0x08` (stop the BMC clearing the boot flags 60 s after
 *   they are set, as Ironic does; tolerated when refused), then `chassis bootdev pxe` (next boot
 *   only);
 * - `restart` forced: `power cycle` (`power on` when off); graceful: `power soft` (ACPI
 *   shutdown), wait for off, `power off` if the OS ignored it, then `power on`;
 * - `powerOn` / `powerOff`: `power on` / `power off`;
 * then `power status` every `pollIntervalMs` until the BMC reports the wanted state, bounded by
 * the call's signal (the step timeout). An aborted call kills its `ipmitool`.
 *
 * May import: `lib/model/`, `lib/gen/` and this folder (see `mod.ts`).
 *
 * @module
 */

import { abortableDelay } from "../model/abort.ts";
import type { BmcDriver, BmcGate, BmcTarget, PowerState } from "./bmc.ts";
import { type ProviderCall, ProviderError } from "./mod.ts";

/** What went wrong in one `ipmitool` call; decides whether retrying can help. */
export type IpmiFailure =
  /** The BMC refused the user or password (RAKP): permanent until the credential is fixed. */
  | "auth"
  /** No RMCP+ answer from the address: transient (BMC rebooting, network). */
  | "unreachable"
  /** `ipmitool` did not finish within the per-call timeout: transient. */
  | "timeout"
  /** The BMC answered but refused the command (e.g. "Invalid data field in request"): permanent. */
  | "rejected"
  /** Bad address or `ipmitool` missing: permanent until the setup is fixed. */
  | "config"
  /** Anything else `ipmitool` reported: transient. */
  | "failed";

const PERMANENT: ReadonlySet<IpmiFailure> = new Set(["auth", "rejected", "config"]);

/**
 * A failed IPMI action: the message carries `ipmitool`'s answer (never the password).
 * `permanent` says a retry cannot help (wrong credential, refused command, bad setup); the
 * executor may retry the rest.
 */
export class IpmiError extends ProviderError {
  /** What kind of failure it is. */
  readonly failure: IpmiFailure;

  /**
   * @param failure What kind of failure it is.
   * @param message What happened and what to do about it.
   * @param options Cause.
   */
  constructor(failure: IpmiFailure, message: string, options?: ErrorOptions) {
    super(message, { ...options, permanent: PERMANENT.has(failure) });
    this.name = "IpmiError";
    this.failure = failure;
  }
}

/** Options of {@linkcode createIpmiDriver}. */
export interface IpmiDriverOptions {
  /** Bounds the `ipmitool` processes in flight per BMC (`--bmc-concurrency`). */
  gate: BmcGate;
  /** The `ipmitool` program. @default "ipmitool" */
  ipmitool?: string;
  /** Delay between `power status` polls while waiting for a power state. @default 1_000 */
  pollIntervalMs?: number;
  /** Longest one `ipmitool` process may run before it is killed (a transient failure). @default 30_000 */
  callTimeoutMs?: number;
  /** Seconds `ipmitool` waits for one RMCP+ answer (`-N`). @default 1 */
  packetTimeoutSeconds?: number;
  /**
   * Times `ipmitool` resends an unanswered request (`-R`); with `-N 1`, 1 gives up on an
   * unreachable BMC after ~2 s, 2 after ~6 s. @default 2
   */
  retries?: number;
  /**
   * How long a graceful restart waits for the OS to power off after `power soft` before it
   * powers off hard. @default 60_000
   */
  softOffTimeoutMs?: number;
  /**
   * Treat a BMC that refuses `chassis bootdev pxe` as one whose machine network-boots by itself
   * (logged, not an error): `ipmi_sim` driving a QEMU VM started with `-boot n`. A credential's
   * `allow_bootdev_refused: true` does the same for its BMCs. @default false
   */
  allowBootDeviceRefused?: boolean;
}

/** Host and UDP port of an IPMI BMC. */
export interface IpmiAddress {
  /** Host name or IP address (IPv6 without brackets). */
  host: string;
  /** UDP port. */
  port: number;
}

/** The IPMI port when an address names none (RMCP, UDP 623). */
export const IPMI_DEFAULT_PORT = 623;

/**
 * Parses `spec.bmc_address` of an IPMI machine: `host[:port]`, `[v6]:port`.
 *
 * @param address As registered.
 * @returns Host and port (default 623).
 * @throws {IpmiError} `config` when it is not `host[:port]`.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseIpmiAddress("10.0.0.5"), { host: "10.0.0.5", port: 623 });
 * assert.deepEqual(parseIpmiAddress("[fd00::5]:6230"), { host: "fd00::5", port: 6230 });
 * ```
 */
export function parseIpmiAddress(address: string): IpmiAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(address);
  const port = match?.[3] === undefined ? IPMI_DEFAULT_PORT : Number(match[3]);
  if (!match || port < 1 || port > 65535) {
    throw new IpmiError(
      "config",
      `Cannot use IPMI BMC address "${address}": expected host[:port] (port 1-65535, default 623), e.g. 10.0.0.5:623`,
    );
  }
  return { host: match[1] ?? match[2], port };
}

// Lines `-v` adds to every call; the rest of stderr is the BMC's answer.
const NOISE =
  /^(Loading IANA PEN Registry|Running Get VSO Capabilities|Discovered IPMB address|Invalid completion code received: Invalid command$)/;

/** What a failed `ipmitool` reported, without `-v`'s chatter. */
function answerOf(stderr: string, stdout: string): string {
  const lines = `${stderr}\n${stdout}`.split("\n").map((l) => l.replace(/^>\s*/, "").trim())
    .filter((l) => l !== "" && !NOISE.test(l));
  const text = lines.join("; ");
  return text.length > 600 ? `${text.slice(0, 600)}...` : text || "(no output)";
}

/**
 * Classifies a failed `ipmitool` call from its answer (verbose stderr).
 *
 * @param answer What `ipmitool -v` printed.
 * @returns The kind of failure.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(classifyIpmiFailure("RAKP 2 HMAC is invalid"), "auth");
 * assert.equal(classifyIpmiFailure("Get Auth Capabilities error"), "unreachable");
 * ```
 */
export function classifyIpmiFailure(answer: string): IpmiFailure {
  if (
    /RAKP 2 HMAC is invalid|unauthorized name|invalid integrity check|invalid role/i.test(answer)
  ) {
    return "auth";
  }
  if (/Get Auth Capabilities error|No response from remote controller/i.test(answer)) {
    return "unreachable";
  }
  if (/Invalid data field|Invalid command|not supported|Invalid completion code/i.test(answer)) {
    return "rejected";
  }
  return "failed";
}

function failureMessage(
  failure: IpmiFailure,
  where: string,
  request: { user: string; command: string },
  answer: string,
): string {
  const { user, command } = request;
  switch (failure) {
    case "auth":
      return /unauthorized name/i.test(answer)
        ? `IPMI BMC ${where} does not know user "${user}" (${answer}): fix the user in --bmc-credentials`
        : `IPMI BMC ${where} refused the password of user "${user}" (${answer}): fix the password in --bmc-credentials`;
    case "unreachable":
      return `IPMI BMC ${where} does not answer (${answer}): check spec.bmc_address and that IPMI over LAN is enabled on the BMC`;
    case "rejected":
      return `IPMI BMC ${where} refused "${command}": ${answer}`;
    default:
      return `IPMI BMC ${where} failed "${command}": ${answer}`;
  }
}

// What `ipmitool power on|off|cycle|soft` prints once the BMC accepted the request.
const POWER_CONTROL = /^Chassis Power Control: /m;

/**
 * Creates the IPMI driver.
 *
 * IPMI's chassis control has power up, power down (hard), power cycle (down, then up after at
 * least 1 s; refused by many BMCs while off), hard reset (the reset line, no power loss) and soft
 * shutdown (an ACPI power-button press; the OS decides). There is no graceful restart, so a
 * graceful `restart` is soft shutdown, wait for off (`softOffTimeoutMs`, then hard off), power
 * on; a forced one is `power cycle`, which cuts power like Redfish's ForceRestart/PowerCycle.
 * `power reset` is not used: it keeps power on and some BMCs ignore it while the OS hangs.
 *
 * @param options The gate, polling, timeouts.
 * @returns The driver, named `ipmi`.
 * @throws {RangeError} when a number option is not positive.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const driver = createIpmiDriver({
 *   gate: { run: (_key, _signal, action) => action() },
 * });
 * assert.equal(driver.name, "ipmi");
 * ```
 */
export function createIpmiDriver(options: IpmiDriverOptions): BmcDriver {
  const {
    gate,
    ipmitool = "ipmitool",
    pollIntervalMs = 1_000,
    callTimeoutMs = 30_000,
    packetTimeoutSeconds = 1,
    retries = 2,
    softOffTimeoutMs = 60_000,
    allowBootDeviceRefused = false,
  } = options;
  for (const [name, value] of Object.entries({ pollIntervalMs, callTimeoutMs, softOffTimeoutMs })) {
    if (!(value >= 0)) {
      throw new RangeError(`Cannot create the IPMI driver: ${name} must be >= 0, got ${value}`);
    }
  }
  for (const [name, value] of Object.entries({ packetTimeoutSeconds, retries })) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(
        `Cannot create the IPMI driver: ${name} must be an integer >= 1, got ${value}`,
      );
    }
  }

  /**
   * Runs one `ipmitool` command through the gate; resolves with its stdout. `expect` is what a
   * success prints: `chassis bootdev` exits 0 even when the BMC refused the boot device.
   */
  function run(
    call: ProviderCall,
    target: BmcTarget,
    command: string[],
    expect?: RegExp,
  ): Promise<string> {
    const { host, port } = parseIpmiAddress(target.address);
    const where = `${host}:${port}`;
    const user = target.credential.username;
    return gate.run(target.key, call.signal, async () => {
      call.signal.throwIfAborted();
      const args = [
        ...["-I", "lanplus", "-C", "3", "-H", host, "-p", String(port), "-U", user, "-E"],
        ...["-N", String(packetTimeoutSeconds), "-R", String(retries), "-v", ...command],
      ];
      call.log(`ipmi ${where}: ipmitool ${command.join(" ")}`);
      let child: Deno.ChildProcess;
      try {
        child = new Deno.Command(ipmitool, {
          args,
          env: { IPMI_PASSWORD: target.credential.password },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) {
          throw new IpmiError(
            "config",
            `Cannot run "${ipmitool}": not found; install Debian's ipmitool (apt-get install ipmitool)`,
            { cause: error },
          );
        }
        throw error;
      }
      let timedOut = false;
      const kill = (): void => {
        try {
          child.kill("SIGKILL");
        } catch {
          // It exited just now.
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, callTimeoutMs);
      let aborted = false;
      const onAbort = (): void => {
        aborted = true;
        kill();
      };
      call.signal.addEventListener("abort", onAbort, { once: true });
      let output: Deno.CommandOutput;
      try {
        output = await child.output();
      } finally {
        clearTimeout(timer);
        call.signal.removeEventListener("abort", onAbort);
      }
      if (aborted) {
        const end = output.signal ?? `exit code ${output.code}`;
        call.log(
          `ipmi ${where}: aborted "${command.join(" ")}": ipmitool ended by ${end}`,
          "stderr",
        );
        throw call.signal.reason;
      }
      const decoder = new TextDecoder();
      const stdout = decoder.decode(output.stdout).trim();
      if (timedOut) {
        throw new IpmiError(
          "timeout",
          `IPMI BMC ${where} did not complete "${
            command.join(" ")
          }" within ${callTimeoutMs} ms: killed ipmitool`,
        );
      }
      if (!output.success || (expect && !expect.test(stdout))) {
        const answer = answerOf(decoder.decode(output.stderr), stdout);
        const failure = classifyIpmiFailure(answer);
        call.log(`ipmi ${where}: ${answer}`, "stderr");
        throw new IpmiError(
          failure,
          failureMessage(failure, where, { user, command: command.join(" ") }, answer),
        );
      }
      call.log(`ipmi ${where}: ${stdout.split("\n").at(-1) || "ok"}`);
      return stdout;
    });
  }

  async function powerState(call: ProviderCall, target: BmcTarget): Promise<PowerState> {
    const stdout = await run(call, target, ["power", "status"]);
    const match = /Chassis Power is (on|off)/.exec(stdout);
    if (!match) {
      throw new IpmiError(
        "failed",
        `IPMI BMC ${target.address} answered "power status" with "${stdout}"`,
      );
    }
    return match[1] as PowerState;
  }

  /** Polls `power status` until `want`; resolves true, or false when `withinMs` passed first. */
  async function waitFor(
    call: ProviderCall,
    target: BmcTarget,
    want: PowerState,
    withinMs = Infinity,
  ): Promise<boolean> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      if ((await powerState(call, target)) === want) return true;
      if (Date.now() + pollIntervalMs > deadline) return false;
      await abortableDelay(pollIntervalMs, call.signal);
    }
  }

  async function powerOn(call: ProviderCall, target: BmcTarget): Promise<void> {
    await run(call, target, ["power", "on"], POWER_CONTROL);
    await waitFor(call, target, "on");
  }

  async function powerOff(call: ProviderCall, target: BmcTarget): Promise<void> {
    await run(call, target, ["power", "off"], POWER_CONTROL);
    await waitFor(call, target, "off");
  }

  return {
    name: "ipmi",
    async setBootPxe(call, target) {
      try {
        await run(call, target, ["raw", "0x00", "0x08", "0x03", "0x08"]);
      } catch (error) {
        if (!(error instanceof IpmiError && error.failure === "rejected")) throw error;
        call.log(
          `ipmi ${target.address}: BMC keeps its 60 s boot-flag timeout; restart follows now`,
        );
      }
      try {
        await run(call, target, ["chassis", "bootdev", "pxe"], /^Set Boot Device to pxe$/m);
      } catch (error) {
        const allowed = allowBootDeviceRefused || target.credential.allowBootDeviceRefused;
        if (!(allowed && error instanceof IpmiError && error.failure === "rejected")) throw error;
        call.log(
          `ipmi ${target.address}: BMC refused a boot device; the machine network-boots by itself (allow_bootdev_refused)`,
        );
      }
    },
    async restart(call, target, { force }) {
      if ((await powerState(call, target)) === "off") {
        await powerOn(call, target);
        return;
      }
      if (force) {
        await run(call, target, ["power", "cycle"], POWER_CONTROL);
      } else {
        await run(call, target, ["power", "soft"], POWER_CONTROL);
        if (!(await waitFor(call, target, "off", softOffTimeoutMs))) {
          call.log(
            `ipmi ${target.address}: still on ${softOffTimeoutMs} ms after the soft shutdown: powering off hard`,
          );
          await powerOff(call, target);
        }
        await run(call, target, ["power", "on"], POWER_CONTROL);
      }
      await waitFor(call, target, "on");
    },
    powerOn,
    powerOff,
    powerState,
  };
}
