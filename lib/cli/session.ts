/**
 * What every CLI command receives: the injected io, the two typed clients, the palette, the
 * interrupt signal; plus the CLI's exit codes and its usage error.
 *
 * @module
 */

import { ConnectError } from "@connectrpc/connect";
import type { Client } from "../client/mod.ts";
import type { MachineService, OperationService } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { Palette } from "./format.ts";
import type { ClientSecurity } from "./failure.ts";

/** Exit codes, as documented in `--help`. */
export const EXIT = Object.freeze({
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  RPC: 3,
  FAILED: 4,
  CANCELED: 5,
  /** `--timeout` passed before the operation ended; it continues on the server. */
  TIMEOUT: 6,
  INTERRUPTED: 130,
});

/** Where the CLI writes and what it knows of its environment. */
export interface CliIo {
  /** Writes text to stdout as is (callers add newlines). */
  out(text: string): void;
  /** Writes text to stderr as is. */
  err(text: string): void;
  /**
   * Environment variables (BMDEMO_SERVER, NO_COLOR, BMDEMO_TOKEN, BMDEMO_TLS, BMDEMO_CA,
   * COLUMNS, TERM).
   */
  env?: Readonly<Record<string, string | undefined>>;
  /** Whether stdout is a terminal; colour and the spinner are only used on one. @default false */
  isTerminal?: boolean;
  /**
   * The terminal's width now, in columns; `undefined` or 0 when unknown. Read at every write, so
   * a resized window is followed. @default unknown (80 columns are used, see `layout.ts`)
   */
  columns?: () => number | undefined;
  /** Aborted on Ctrl+C (SIGINT). */
  interrupt?: AbortSignal;
  /**
   * Reads a file (`--ca`, `--cert`, `--key`). @default Deno.readFileSync
   */
  readFile?: (path: string) => Uint8Array;
  /** Waits for the user to press Enter; only given when stdin is a terminal. */
  pause?: () => Promise<void>;
}

/** A command line that cannot be run; exits with {@linkcode EXIT.USAGE}. */
export class UsageError extends Error {
  /** The command whose usage to show, if any. */
  readonly command: string | undefined;

  /**
   * @param message What is wrong.
   * @param command The command whose usage applies.
   */
  constructor(message: string, command?: string) {
    super(message);
    this.name = "UsageError";
    this.command = command;
  }
}

/** What a command runs with. */
export interface Session {
  readonly io: CliIo;
  /** `host:port` of the server. */
  readonly address: string;
  readonly machines: Client<typeof MachineService>;
  readonly operations: Client<typeof OperationService>;
  readonly colors: Palette;
  /** Aborted on Ctrl+C; never aborted when the io has no interrupt. */
  readonly interrupt: AbortSignal;
  /** The program as the user invoked it (`program.ts`), for pasteable hints. @default "bmdemo-cli" */
  readonly program?: string;
  /** Whether calls carry a token, so an UNAUTHENTICATED hint can tell missing from refused. */
  readonly tokenSent?: boolean;
  /**
   * Whether calls use TLS and send a client certificate, so a connection failure can be checked
   * (`failure.ts`). @default unknown: no check
   */
  readonly security?: ClientSecurity;
  /** The widest a line may be now (`layout.ts`); `Infinity`: no limit. @default no limit */
  readonly width?: () => number;
  /** Whether a running step may show a spinner with its elapsed time (a terminal). @default false */
  readonly live?: boolean;
}

/**
 * Whether a thrown value is a failed call (a connect-es `ConnectError`: `code` is a `Code`,
 * `rawMessage` the status message).
 *
 * @param error The thrown value.
 * @returns `true` for a call error.
 */
export function isServiceError(error: unknown): error is ConnectError {
  return error instanceof ConnectError;
}
