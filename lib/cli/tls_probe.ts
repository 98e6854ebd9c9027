/**
 * An active check, run only after a call failed to connect, for the two failures a connection
 * error alone cannot tell apart from "nothing there" (the client sees EPIPE, a closed HTTP/2
 * stream, or sometimes the server's alert): a plaintext client against a TLS server, and a TLS
 * client without a certificate against a server that requires one (mutual TLS).
 *
 * One TLS connection to the address, with a short timeout: ALPN h2, no certificate check (it
 * only asks whether the server speaks TLS, nothing is trusted or sent but the HTTP/2 preface),
 * no client certificate. Loaded on the failure path only: node:tls costs startup time.
 *
 * @module
 */

import { connect } from "node:tls";

/** What the probe learnt of the server at an address. */
export type TlsProbeResult =
  /** It completed a TLS handshake and answered HTTP/2 over it without a client certificate. */
  | "tls"
  /** It completed a TLS handshake, then refused us or closed at once: we sent no certificate. */
  | "client-certificate-required"
  /** It answered the handshake with something that is not TLS. */
  | "not-tls"
  /** No answer in time, or no connection: nothing learnt. */
  | "unknown";

/** How long the probe may take; it only runs on a failure path, before the error is printed. */
export const PROBE_TIMEOUT_MS = 2_000;

/** The HTTP/2 client preface and an empty SETTINGS frame: a server that accepted us answers. */
const H2_PREFACE = new Uint8Array([
  ...new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
  ...[0, 0, 0, 4, 0, 0, 0, 0, 0],
]);

/** The peer's refusal of a client without a certificate (TLS 1.3 alert 116, or 1.2's). */
const CERTIFICATE_REQUIRED =
  /^ERR_SSL_(TLSV13_ALERT_CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN_A_CERTIFICATE)$/;

/** The connection ended under us (the server closed it). */
const CLOSED = /^(EPIPE|ECONNRESET|ECONNABORTED|ERR_STREAM_PREMATURE_CLOSE)$/;

/**
 * Connects with TLS to `host:port` and reports what the server did.
 *
 * @param address `host:port` (a host name, an IPv4 address, or `[IPv6]`).
 * @param options `timeoutMs` bounds the probe. @default {@linkcode PROBE_TIMEOUT_MS}
 * @returns What was learnt; never throws.
 */
export function probeTls(
  address: string,
  options: { timeoutMs?: number } = {},
): Promise<TlsProbeResult> {
  const { timeoutMs = PROBE_TIMEOUT_MS } = options;
  const match = /^\[?(.*?)\]?:(\d+)$/.exec(address);
  if (!match) return Promise.resolve("unknown");
  const [, host, port] = match;
  return new Promise((resolve) => {
    let handshaken = false;
    let settled = false;
    const socket = connect({
      host,
      port: Number(port),
      // An IP address is no server name (and node:tls refuses it as one).
      servername: /^[\d.]+$|:/.test(host) ? undefined : host,
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false,
    });
    const finish = (result: TlsProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish("unknown"), timeoutMs);
    socket.on("secureConnect", () => {
      handshaken = true;
      socket.write(H2_PREFACE);
    });
    socket.on("data", () => finish("tls"));
    socket.on("error", (error: Error & { code?: string }) => {
      const code = String(error.code ?? "");
      if (CERTIFICATE_REQUIRED.test(code)) return finish("client-certificate-required");
      if (handshaken && CLOSED.test(code)) return finish("client-certificate-required");
      if (handshaken) return finish("unknown");
      if (/^ERR_SSL_/.test(code)) return finish("not-tls");
      finish("unknown");
    });
    socket.on("close", () => finish(handshaken ? "client-certificate-required" : "unknown"));
  });
}
