/**
 * The `--bmc-credentials` file: which BMC user, password, TLS trust and SSH key each machine's
 * hardware is driven with. The file is YAML, read and checked once at server start (a mistake
 * stops the start with the file, entry and field named); the passwords it resolves stay in this
 * process's memory: never logged, never sent over the API, never written to the store.
 *
 * ```yaml
 * credentials:
 *   - bmc: https://10.0.0.5/redfish/v1/Systems/1   # exact spec.bmc_address
 *     username: admin
 *     password_env: BMC_R1_PASSWORD
 *     ca_file: /etc/bmdemo/bmc-ca.pem
 *   - bmc: 10.0.0.6                                # the BMC's host, any port or system
 *     username: ADMIN
 *     password_file: /etc/bmdemo/ipmi-password
 *   - selector: { rack: r1 }                       # machines whose labels include these
 *     username: admin
 *     password: secret
 *     insecure: true
 *     ssh_user: root
 *     ssh_key_file: /etc/bmdemo/id_ed25519
 *   - selector: { bmc-kind: ipmi-vm }              # BMCs that refuse `chassis bootdev pxe`
 *     username: admin
 *     password: secret
 *     allow_bootdev_refused: true
 * ```
 *
 * A machine gets the first entry whose `bmc` equals its `spec.bmc_address`, else the first whose
 * `bmc` is its BMC's host, else the first whose `selector` its labels match.
 *
 * @module
 */

import { parse } from "yaml";
import type { BmcCredential } from "./bmc.ts";

/** Most entries a credentials file may hold. */
export const MAX_CREDENTIAL_ENTRIES = 10_000;
/** Largest credentials file, in bytes. */
export const MAX_CREDENTIALS_FILE_BYTES = 1024 * 1024;

/** A credentials file that cannot be used; the message names the file, the entry and the field. */
export class CredentialsFileError extends Error {
  /** @param message What is wrong and how to fix it. */
  constructor(message: string) {
    super(message);
    this.name = "CredentialsFileError";
  }
}

/** What a machine's credential is looked up by. */
export interface CredentialQuery {
  /** `spec.bmc_address` as registered. */
  readonly address: string;
  /** The BMC's host, lower case (from the parsed address). */
  readonly host: string;
  /** The machine's labels. */
  readonly labels: Readonly<Record<string, string>>;
}

/** The parsed credentials file. */
export interface CredentialBook {
  /** The file it was read from, for error messages. */
  readonly file: string;
  /** How many entries it holds. */
  readonly size: number;
  /**
   * The credential for a machine's BMC.
   *
   * @param query The machine's BMC address, host and labels.
   * @returns The first matching entry's credential (exact address, then host, then selector).
   */
  find(query: CredentialQuery): BmcCredential | undefined;
}

/** Options of {@linkcode loadCredentials}. */
export interface LoadCredentialsOptions {
  /** Reads an environment variable (`password_env`). @default Deno.env.get */
  env?: (name: string) => string | undefined;
}

interface Entry {
  readonly bmc?: string;
  readonly selector?: Readonly<Record<string, string>>;
  readonly credential: BmcCredential;
}

const FIELDS = [
  "bmc",
  "selector",
  "username",
  "password",
  "password_file",
  "password_env",
  "ca_file",
  "insecure",
  "ssh_user",
  "ssh_key_file",
  "allow_bootdev_refused",
];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Reads and checks a credentials file, resolving `password_file` and `password_env` and checking
 * that `ca_file` and `ssh_key_file` are readable.
 *
 * @param file Path of the YAML file.
 * @param options How environment variables are read.
 * @returns The entries, ready for lookups.
 * @throws {CredentialsFileError} The file is unreadable, not YAML, or an entry is wrong; the
 * message names the file, the entry (1-based, with its `bmc` or `selector`) and the field.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const file = await Deno.makeTempFile({ suffix: ".yaml" });
 * await Deno.writeTextFile(file, "credentials:\n  - bmc: 10.0.0.5\n    username: admin\n    password: pw\n");
 * const book = await loadCredentials(file);
 * assert.equal(book.find({ address: "10.0.0.5:623", host: "10.0.0.5", labels: {} })?.username, "admin");
 * await Deno.remove(file);
 * ```
 */
export async function loadCredentials(
  file: string,
  options: LoadCredentialsOptions = {},
): Promise<CredentialBook> {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const fail = (text: string): never => {
    throw new CredentialsFileError(`--bmc-credentials ${file}: ${text}`);
  };
  let text = "";
  try {
    const info = await Deno.stat(file);
    if (info.size > MAX_CREDENTIALS_FILE_BYTES) {
      fail(`the file is ${info.size} bytes; the limit is ${MAX_CREDENTIALS_FILE_BYTES}`);
    }
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof CredentialsFileError) throw error;
    fail(`cannot read the file: ${message(error)}`);
  }
  let document: unknown;
  try {
    document = parse(text, { prettyErrors: true });
  } catch (error) {
    fail(`not valid YAML: ${message(error)}`);
  }
  if (!isRecord(document) || !Array.isArray(document.credentials)) {
    fail("the file must be a mapping with a `credentials:` list of entries (see docs/hardware.md)");
  }
  const root = document as Record<string, unknown>;
  for (const key of Object.keys(root)) {
    if (key !== "credentials") fail(`unknown top-level key "${key}": only \`credentials:\``);
  }
  const list = root.credentials as unknown[];
  if (list.length > MAX_CREDENTIAL_ENTRIES) {
    fail(
      `${list.length} entries; the limit is ${MAX_CREDENTIAL_ENTRIES}: match by host or selector`,
    );
  }
  const entries: Entry[] = [];
  for (const [index, raw] of list.entries()) {
    entries.push(await readEntry(raw, `entry ${index + 1}`, { fail, env }));
  }
  return createBook(file, entries);
}

async function readEntry(
  raw: unknown,
  position: string,
  context: { fail: (text: string) => never; env: (name: string) => string | undefined },
): Promise<Entry> {
  if (!isRecord(raw)) {
    return context.fail(
      `${position}: an entry is a mapping with bmc or selector, username, password`,
    );
  }
  const where = raw.bmc !== undefined
    ? `${position} (bmc ${JSON.stringify(raw.bmc)})`
    : raw.selector !== undefined
    ? `${position} (selector ${JSON.stringify(raw.selector)})`
    : position;
  const fail = (field: string, text: string): never => context.fail(`${where}: ${field}: ${text}`);
  for (const key of Object.keys(raw)) {
    if (!FIELDS.includes(key)) fail(key, `unknown field; the fields are ${FIELDS.join(", ")}`);
  }
  const text = (field: string): string | undefined => {
    const value = raw[field];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "string" && typeof value !== "number") fail(field, "must be text");
    const string = String(value);
    if (string.trim() === "") fail(field, "is empty");
    return string;
  };
  const bmc = text("bmc");
  let selector: Record<string, string> | undefined;
  if (raw.selector !== undefined) {
    if (!isRecord(raw.selector) || Object.keys(raw.selector).length === 0) {
      fail("selector", "must be a non-empty mapping of label to value, e.g. { rack: r1 }");
    }
    selector = {};
    for (const [key, value] of Object.entries(raw.selector as Record<string, unknown>)) {
      if (typeof value !== "string" && typeof value !== "number") {
        fail("selector", `label "${key}" must map to a text value`);
      }
      selector[key] = String(value);
    }
  }
  if ((bmc === undefined) === (selector === undefined)) {
    fail("bmc", "give exactly one of bmc (a BMC address or host) and selector (machine labels)");
  }
  const username = text("username") ?? fail("username", "is required");
  const sources = ["password", "password_file", "password_env"].filter((f) => raw[f] !== undefined);
  if (sources.length !== 1) {
    fail("password", "give exactly one of password, password_file and password_env");
  }
  let password = "";
  if (sources[0] === "password") password = text("password")!;
  if (sources[0] === "password_file") {
    const path = text("password_file")!;
    try {
      password = (await Deno.readTextFile(path)).replace(/\r?\n$/, "");
    } catch (error) {
      fail("password_file", `cannot read "${path}": ${message(error)}`);
    }
    if (password === "") fail("password_file", `"${path}" is empty`);
  }
  if (sources[0] === "password_env") {
    const name = text("password_env")!;
    password = context.env(name) ?? "";
    if (password === "") fail("password_env", `environment variable ${name} is not set or empty`);
  }
  if (raw.insecure !== undefined && typeof raw.insecure !== "boolean") {
    fail("insecure", "must be true or false");
  }
  const caFile = text("ca_file");
  if (caFile !== undefined && raw.insecure === true) {
    fail("insecure", "contradicts ca_file: trust the CA or accept any certificate, not both");
  }
  const sshKeyFile = text("ssh_key_file");
  for (const [field, path] of [["ca_file", caFile], ["ssh_key_file", sshKeyFile]] as const) {
    if (path === undefined) continue;
    try {
      await Deno.readFile(path);
    } catch (error) {
      fail(field, `cannot read "${path}": ${message(error)}`);
    }
  }
  if (raw.allow_bootdev_refused !== undefined && typeof raw.allow_bootdev_refused !== "boolean") {
    fail("allow_bootdev_refused", "must be true or false");
  }
  const sshUser = text("ssh_user");
  return {
    bmc,
    selector,
    credential: Object.freeze({
      username,
      password,
      ...(caFile === undefined ? {} : { caFile }),
      ...(raw.insecure === true ? { insecure: true } : {}),
      ...(sshUser === undefined ? {} : { sshUser }),
      ...(sshKeyFile === undefined ? {} : { sshKeyFile }),
      ...(raw.allow_bootdev_refused === true ? { allowBootDeviceRefused: true } : {}),
    }),
  };
}

function createBook(file: string, entries: readonly Entry[]): CredentialBook {
  return {
    file,
    size: entries.length,
    find({ address, host, labels }) {
      const exact = entries.find((entry) => entry.bmc === address);
      const byHost = exact ?? entries.find((entry) => entry.bmc?.toLowerCase() === host);
      const bySelector = byHost ?? entries.find((entry) =>
        entry.selector !== undefined &&
        Object.entries(entry.selector).every(([key, value]) => labels[key] === value)
      );
      return bySelector?.credential;
    },
  };
}
