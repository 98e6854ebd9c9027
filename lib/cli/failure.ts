/**
 * The one place that tells apart why a call failed before the server could answer it: the
 * network permission is missing, TLS failed (a certificate, or TLS on one side only), the
 * server is shutting down, or nothing listens at the address. Each gets its own message that
 * names the fix with the program as the user invoked it.
 *
 * @module
 */

import { ConnectError } from "@connectrpc/connect";
import { Code } from "../client/code.ts";
import type { ErrorInfo } from "../gen/google/rpc/error_details_pb.ts";

/** Why a call could not be answered; `undefined` when the server answered it. */
export type ConnectionFailure = "permission" | "tls" | "shutdown" | "unreachable";

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
}

/**
 * The message for a failure to reach the server, or to learn how a followed operation ended.
 *
 * @param error The thrown value.
 * @param context The address, the program and the ErrorInfo reader.
 * @returns The lines without a final newline, or `undefined` for any other error.
 */
export function formatFailure(error: unknown, context: FailureContext): string | undefined {
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
  const failure = connectionFailure(error, context.errorInfo(error));
  return failure === undefined ? undefined : formatConnectionFailure(failure, context);
}
