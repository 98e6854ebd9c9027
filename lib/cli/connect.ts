/**
 * How the CLI reaches the server: plaintext, TLS with the system roots (`--tls`), TLS with a
 * given CA (`--ca`), mutual TLS (`--cert` + `--key`), and a bearer token (`--token-file`, or
 * `--token`, which shows in the process list and in what `deno task` prints), each with its
 * environment variable (BMDEMO_TLS=1, BMDEMO_CA, BMDEMO_TOKEN).
 *
 * @module
 */

import { createSecureContext } from "node:tls";
import type { ClientOptions as CreateClientOptions } from "../client/mod.ts";
import { UsageError } from "./session.ts";

/** The connection options of a command line. */
export interface ConnectionFlags {
  tls?: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  token?: string;
  /** A file holding the token (surrounding whitespace and a final newline are ignored). */
  tokenFile?: string;
}

function tokenFromFile(
  flags: ConnectionFlags,
  read: (path: string, what: string) => Uint8Array,
): string {
  if (flags.token !== undefined) {
    throw new UsageError("--token and --token-file cannot be combined; keep --token-file");
  }
  const path = flags.tokenFile as string;
  const token = new TextDecoder().decode(read(path, "token")).trim();
  if (token === "") throw new UsageError(`the token file ${path} is empty`);
  return token;
}

function truthy(value: string | undefined): boolean {
  return value !== undefined && /^(1|true|yes|on)$/i.test(value.trim());
}

/**
 * The client options for the flags and environment.
 *
 * @param flags The parsed options.
 * @param env The environment.
 * @param readFile Reads a file (certificates and keys).
 * @returns Credentials (insecure unless TLS is asked for) and the token, if any.
 * @throws {UsageError} For `--cert` without `--key` (or the reverse), `--token` with
 * `--token-file`, an empty token file, or a file that cannot be read (naming it, never showing
 * its content).
 */
export function connectionOptions(
  flags: ConnectionFlags,
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => Uint8Array,
): CreateClientOptions {
  const ca = flags.ca || env.BMDEMO_CA || undefined;
  const { cert, key } = flags;
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError(cert === undefined ? "--key needs --cert" : "--cert needs --key");
  }
  const tls = !!flags.tls || truthy(env.BMDEMO_TLS) || ca !== undefined || cert !== undefined;
  const read = (path: string, what: string): Uint8Array => {
    try {
      return readFile(path);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new UsageError(`cannot read ${what} file ${path}: ${reason}`);
    }
  };
  const token = flags.tokenFile === undefined
    ? flags.token || env.BMDEMO_TOKEN || undefined
    : tokenFromFile(flags, read);
  if (!tls) return { token };
  const files = {
    ca: ca === undefined ? undefined : read(ca, "CA"),
    key: key === undefined ? undefined : read(key, "key"),
    cert: cert === undefined ? undefined : read(cert, "certificate"),
  };
  if (files.ca === undefined && files.cert === undefined) return { tls: true, token };
  const pem = (bytes: Uint8Array | undefined): string | undefined =>
    bytes === undefined ? undefined : new TextDecoder().decode(bytes);
  const tlsFiles = { ca: pem(files.ca), cert: pem(files.cert), key: pem(files.key) };
  try {
    // Only to reject unusable files now, naming them, rather than as a failed connection later.
    createSecureContext(tlsFiles);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UsageError(
      `invalid TLS files (${[ca, cert, key].filter(Boolean).join(", ")}): ${reason}`,
    );
  }
  return { tls: tlsFiles, token };
}
