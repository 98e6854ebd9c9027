/**
 * TLS for the server: credentials from PEM contents (server certificate and key, and an
 * optional client CA that turns on mutual TLS), and the reading of the PEM files named by the
 * server flags.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";

/** TLS settings of the server, as PEM contents (not paths). */
export interface TlsOptions {
  /** The server certificate chain (PEM). */
  cert: string;
  /** The server private key (PEM). */
  key: string;
  /**
   * CA certificates (PEM) that client certificates must chain to. When set, every client must
   * present a certificate signed by one of them (mutual TLS).
   *
   * @default no client certificates asked for
   */
  clientCa?: string;
}

/** Paths of the PEM files named by `--tls-cert`, `--tls-key` and `--client-ca`. */
export interface TlsPaths {
  /** `--tls-cert` / `BMDEMO_TLS_CERT`. */
  cert?: string;
  /** `--tls-key` / `BMDEMO_TLS_KEY`. */
  key?: string;
  /** `--client-ca` / `BMDEMO_CLIENT_CA`. */
  clientCa?: string;
}

/**
 * The server credentials for `tls`: TLS (mutual when `clientCa` is set), or plaintext.
 *
 * @param tls PEM contents, or `undefined` for plaintext.
 * @returns Credentials for `grpc.Server.bindAsync`.
 *
 * @example
 * ```ts ignore
 * serverCredentials({ cert, key, clientCa }); // mutual TLS
 * serverCredentials(undefined); // plaintext
 * ```
 */
export function serverCredentials(tls: TlsOptions | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const cert = Buffer.from(tls.cert);
  // Without a client CA, grpc-js would load the whole system root bundle as the server's `ca`;
  // Deno 2.9.3's node:tls server then sends a handshake message clients reject ("excessive
  // message size" / "wrong version number"). The server's own chain is a small stand-in that is
  // never consulted, since client certificates are not requested.
  const roots = tls.clientCa === undefined ? cert : Buffer.from(tls.clientCa);
  return grpc.ServerCredentials.createSsl(
    roots,
    [{ cert_chain: cert, private_key: Buffer.from(tls.key) }],
    tls.clientCa !== undefined,
  );
}

/**
 * Reads the PEM files named by the TLS flags.
 *
 * @param paths The flag values.
 * @returns The PEM contents, or `undefined` when no TLS flag is set.
 * @throws {TypeError} When only one of `cert` and `key` is set, or `clientCa` is set without
 * them; the message names the flags.
 * @throws {Deno.errors.NotFound} (and other file errors) when a file cannot be read.
 *
 * @example
 * ```ts ignore
 * const tls = await readTlsFiles({ cert: "server.pem", key: "server-key.pem" });
 * ```
 */
export async function readTlsFiles(paths: TlsPaths): Promise<TlsOptions | undefined> {
  const { cert, key, clientCa } = paths;
  if (cert === undefined && key === undefined) {
    if (clientCa !== undefined) {
      throw new TypeError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)");
    }
    return undefined;
  }
  if (cert === undefined || key === undefined) {
    throw new TypeError(
      `--tls-cert and --tls-key go together: got only ${
        cert === undefined ? "--tls-key" : "--tls-cert"
      }`,
    );
  }
  return {
    cert: await Deno.readTextFile(cert),
    key: await Deno.readTextFile(key),
    ...(clientCa === undefined ? {} : { clientCa: await Deno.readTextFile(clientCa) }),
  };
}
