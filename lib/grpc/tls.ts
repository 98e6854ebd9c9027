/**
 * TLS for the server: credentials from PEM contents (server certificate and key, and an
 * optional client CA that turns on mutual TLS), and the reading of the PEM files named by the
 * server flags.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { EventEmitter } from "node:events";
import type { TLSSocket } from "node:tls";
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

/**
 * Makes a mutual-TLS grpc-js server close every TLS connection whose client certificate was not
 * verified, before HTTP/2 reads a request from it. Call it once the server is bound.
 *
 * Why: Deno 2.9.3's node:tls servers share TLS session state within a process, and a resumed
 * session skips the client-certificate check. A client that got a session from ANOTHER node:tls
 * listener in the same process (one that asks for no certificate) resumed it here and had calls
 * answered: `authorized` is false on such a socket, but grpc-js only reads it for auth context.
 * A session this listener issued to a verified client resumes with `authorized` true and its
 * certificate, so resumption keeps working for real clients.
 *
 * @param server A bound grpc-js server serving mutual TLS.
 * @param onRefused Told about each refused connection (for the log).
 * @throws {Error} When no HTTP/2 server is found on `server` (grpc-js keeps them in a private
 * field; the version is pinned): starting without the check would be silent.
 *
 * @example
 * ```ts ignore
 * server.bindAsync(address, serverCredentials(tls), () => {
 *   refuseUnverifiedPeers(server, (socket) => console.warn(socket.authorizationError));
 * });
 * ```
 */
export function refuseUnverifiedPeers(
  server: grpc.Server,
  onRefused: (socket: TLSSocket) => void,
): void {
  const listeners = (server as unknown as { http2Servers?: Map<EventEmitter, unknown> })
    .http2Servers;
  if (!(listeners instanceof Map) || listeners.size === 0) {
    throw new Error(
      "mutual TLS: grpc-js has no HTTP/2 server to check client certificates on " +
        "(its private http2Servers field changed): refusing to serve without the check",
    );
  }
  for (const listener of listeners.keys()) {
    // Prepended: runs before node:http2 starts a session on the socket.
    listener.prependListener("secureConnection", (socket: TLSSocket) => {
      if (socket.authorized) return;
      onRefused(socket);
      socket.destroy();
    });
  }
}
