/**
 * The one place that tells apart why a call failed before the server could answer it: the
 * network permission is missing, TLS failed (a certificate, or TLS on one side only), the
 * server speaks TLS to a plaintext client, it requires a client certificate none was sent, the
 * server is shutting down, or nothing listens at the address. Each gets its own message that
 * names the fix with the program as the user invoked it.
 *
 * @module
 */

import { ConnectError } from "@connectrpc/connect";
import { Code } from "../client/code.ts";
import type { ErrorInfo } from "../gen/google/rpc/error_details_pb.ts";
import type { TlsProbeResult } from "./tls_probe.ts";

/**
 * Why a call could not be answered; `undefined` when the server answered it. `tls-server` (a
 * plaintext client against a TLS server) and `client-certificate` (mutual TLS, and no
 * certificate sent) are only learnt by the active check of {@linkcode probedFailure}.
 */
export type ConnectionFailure =
  | "permission"
  | "tls"
  | "shutdown"
  | "unreachable"
  | "tls-server"
  | "client-certificate";

/** How the client connected: what the active check of a failure needs to know. */
export interface ClientSecurity {
  /** TLS was used (`--tls`, `--ca`, `--cert`). */
  tls: boolean;
  /** A client certificate was sent (`--cert` and `--key`). */
  clientCertificate: boolean;
}

/** Codes of a connection nobody accepted: no TLS check can learn more there. */
const NOT_ACCEPTED = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH)$/;

/** Node TLS error codes (certificate checks, handshake, TLS against plaintext). */
const TLS_CODE = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET|ALTNAME|HOSTNAME/i;

function causes(error: ConnectError): Error[] {
  const chain: Error[] = [];
  for (let cause = error.cause; cause instanceof Error; cause = cause.cause) chain.push(cause);
  return chain;
}

/**
 * Classifies a failed call.
 *
 * @param error The call's error.
 * @param info Its `ErrorInfo`, if the server sent one.
 * @returns The connection failure, or `undefined` for an answer of the server.
 */
export function connectionFailure(
  error: ConnectError,
  info: ErrorInfo | undefined,
): ConnectionFailure | undefined {
  if (info?.reason === "SHUTTING_DOWN") return "shutdown";
  if (info !== undefined) return undefined;
  const chain = causes(error);
  const permission = chain.some((cause) =>
    cause instanceof Deno.errors.NotCapable || cause instanceof Deno.errors.PermissionDenied ||
    (cause as { code?: unknown }).code === "EPERM"
  );
  if (permission) return "permission";
  if (chain.some((cause) => TLS_CODE.test(String((cause as { code?: unknown }).code ?? "")))) {
    return "tls";
  }
  return error.code === Code.Unavailable ? "unreachable" : undefined;
}

/**
 * Makes an ambiguous connection failure decisive with an active check (`probe`, a TLS handshake
 * with the address: `tls_probe.ts`), run only here, on the failure path: a plaintext client whose
 * server could not be reached learns that the server speaks TLS; a TLS client that sent no
 * certificate learns that the server requires one. Other failures are returned as they are.
 *
 * @param failure The failure read from the error ({@linkcode connectionFailure}).
 * @param context The error, whether the server answered it, how the client connected, and the
 * check.
 * @returns The failure, made precise when the check could.
 */
export async function probedFailure(
  failure: ConnectionFailure | undefined,
  context: {
    error: ConnectError;
    /** Whether the server sent an ErrorInfo (then it answered). */
    answered: boolean;
    security: ClientSecurity;
    probe(): Promise<TlsProbeResult>;
  },
): Promise<ConnectionFailure | undefined> {
  const { error, security } = context;
  // A session the server closes as it opens also ends our stream as CANCEL, which we did not ask
  // for (the caller checks only when not interrupted).
  const closed = failure === "unreachable" ||
    (failure === undefined && error.code === Code.Canceled && context.answered === false);
  const ambiguous = security.tls
    ? !security.clientCertificate && (closed || failure === "tls")
    : closed;
  const refused = causes(error).some((cause) =>
    NOT_ACCEPTED.test(String((cause as { code?: unknown }).code ?? ""))
  );
  if (!ambiguous || refused) return failure;
  const found = await context.probe();
  if (!security.tls) {
    return found === "tls" || found === "client-certificate-required" ? "tls-server" : failure;
  }
  return found === "client-certificate-required" ? "client-certificate" : failure;
}

/**
 * How the server is started, as the CLI was: `deno task server` beside `deno task cli`, the
 * server's binary or bundle beside the CLI's (`bmdemo-cli` → `bmdemo-server`).
 *
 * @param program The CLI as invoked.
 * @returns The server's command.
 *
 * @example
 * ```ts
 * import { serverProgram } from "./failure.ts";
 * serverProgram("deno task cli"); // "deno task server"
 * serverProgram("bmdemo-cli"); // "bmdemo-server"
 * ```
 */
export function serverProgram(program: string): string {
  if (program === "deno task cli") return "deno task server";
  return /cli/.test(program) ? program.replace(/cli(?!.*cli)/, "server") : "bmdemo-server";
}

/**
 * The message for a connection failure, naming its fix.
 *
 * @param failure The failure.
 * @param context The address dialled and the program as invoked.
 * @returns The lines, without a final newline.
 */
export function formatConnectionFailure(
  failure: ConnectionFailure,
  context: { address: string; program: string },
): string {
  const { address, program } = context;
  switch (failure) {
    case "permission":
      return `error: ${program} may not use the network: run it with --allow-net ` +
        `(deno run --allow-net …)`;
    case "tls":
      return `error: TLS with the bmdemo server at ${address} failed (a certificate problem, ` +
        `or TLS on one side only)\nhint: pass --ca <file> with the CA that signed the server's ` +
        `certificate, --tls for a certificate the system trusts, or neither for a plaintext server`;
    case "shutdown":
      return `error: the bmdemo server at ${address} is shutting down\n` +
        `hint: run the command again once it has restarted`;
    case "tls-server":
      return `error: the bmdemo server at ${address} speaks TLS; ${program} connected in ` +
        `plaintext\nhint: pass --tls (or --ca <file> for a private CA)`;
    case "client-certificate":
      return `error: the bmdemo server at ${address} requires a client certificate (mutual TLS)` +
        `\nhint: pass --cert <file> and --key <file>, a certificate signed by the server's ` +
        `client CA`;
    case "unreachable":
      return `error: cannot reach the bmdemo server at ${address}\n` +
        `hint: start it with ${serverProgram(program)}, or point ${program} at it with ` +
        `--server host:port; if it serves TLS, add --tls or --ca <file>`;
  }
}

/** The connection was lost while following an operation, and its outcome could not be read. */
export class OutcomeUnknownError extends Error {
  /** The operation that was followed. */
  readonly operationId: string;

  /**
   * @param operationId The operation.
   * @param cause Why the stream failed.
   */
  constructor(operationId: string, cause: unknown) {
    super(`lost the server while following operation ${operationId}`, { cause });
    this.name = "OutcomeUnknownError";
    this.operationId = operationId;
  }
}

/** What {@linkcode formatFailure} needs besides the error. */
export interface FailureContext {
  /** `host:port` dialled. */
  address: string;
  /** The program as invoked. */
  program: string;
  /** Reads a call error's `ErrorInfo` (lib/client's `errorInfo`). */
  errorInfo(error: unknown): ErrorInfo | undefined;
  /** How the client connected, and the active check of an ambiguous failure. @default none */
  check?: { security: ClientSecurity; probe(): Promise<TlsProbeResult> };
}

/**
 * The message for a failure to reach the server, or to learn how a followed operation ended.
 *
 * @param error The thrown value.
 * @param context The address, the program and the ErrorInfo reader.
 * @returns The lines without a final newline, or `undefined` for any other error.
 */
export async function formatFailure(
  error: unknown,
  context: FailureContext,
): Promise<string | undefined> {
  if (error instanceof OutcomeUnknownError) {
    const cause = error.cause;
    const failure = cause instanceof ConnectError
      ? connectionFailure(cause, context.errorInfo(cause))
      : undefined;
    const why = failure === "shutdown"
      ? `the bmdemo server at ${context.address} shut down`
      : `the connection to the bmdemo server at ${context.address} was lost`;
    return `error: ${why} while operation ${error.operationId} ran; its outcome is unknown\n` +
      `hint: ${context.program} op ${error.operationId} shows how it ended once the server is back`;
  }
  if (!(error instanceof ConnectError)) return undefined;
  const info = context.errorInfo(error);
  let failure = connectionFailure(error, info);
  if (context.check) {
    failure = await probedFailure(failure, {
      error,
      answered: info !== undefined,
      ...context.check,
    });
  }
  return failure === undefined ? undefined : formatConnectionFailure(failure, context);
}
