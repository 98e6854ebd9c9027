/**
 * One `hint:` line per RPC error, chosen from the `google.rpc.ErrorInfo` reason the server sent
 * (never from the message text).
 *
 * @module
 */

import type { ErrorInfo } from "../gen/google/rpc/error_details_pb.ts";
import { DEFAULT_PROGRAM } from "./program.ts";

/** What a hint may name besides the error. */
export interface HintContext {
  /** The command's arguments (the machine or operation id first). */
  positionals?: readonly string[];
  /** The program as the user invoked it. @default "${cli}" */
  program?: string;
  /** Whether the call carried a token (a refused token needs another fix than a missing one). */
  tokenSent?: boolean;
}

/**
 * The hint for an error, if its reason has one.
 *
 * @param info The error's `ErrorInfo` (reason and metadata).
 * @param command The command that failed.
 * @param context Its arguments, the program name and whether a token was sent.
 * @returns `hint: …` without a newline, or `undefined`.
 */
export function hintFor(
  info: ErrorInfo | undefined,
  command: string | undefined,
  context: HintContext = {},
): string | undefined {
  if (!info) return undefined;
  const { positionals = [], program: cli = DEFAULT_PROGRAM } = context;
  const meta = info.metadata;
  const target = positionals[0] ?? "<id>";
  switch (info.reason) {
    case "PHASE_PRECONDITION": {
      const machineId = meta.machineId || target;
      if (command === "exit-maintenance") {
        return `hint: the machine is not in maintenance; ${cli} get ${machineId} shows its phase`;
      }
      if (meta.phase !== "MAINTENANCE") {
        return `hint: run ${cli} enter-maintenance ${machineId} first`;
      }
      return `hint: ${cli} get ${machineId} shows its phase`;
    }
    case "MACHINE_BUSY": {
      const active = meta.activeOperationId || "<operation-id>";
      return `hint: wait with ${cli} wait ${active}, or cancel it with ${cli} cancel ${active}`;
    }
    case "MACHINE_NOT_FOUND":
      return `hint: ${cli} list shows the registered machines`;
    case "OPERATION_NOT_FOUND":
      return `hint: ${cli} ops shows the operations`;
    case "REQUEST_ID_REUSED":
      return "hint: omit --request-id to use a fresh one";
    case "UNAUTHENTICATED":
      return context.tokenSent
        ? "hint: the server refused the token: check the --token-file or BMDEMO_TOKEN value " +
          "against the server's --auth-token-file"
        : "hint: pass --token-file <file> or set BMDEMO_TOKEN";
    case "OPERATION_FINISHED":
      return `hint: ${cli} op ${meta.operationId || target} shows how it ended`;
    case "INVALID_FILTER":
      return command === "ops"
        ? "hint: operations filter by machine_id=, phase= and type=, joined with AND"
        : "hint: machines filter by phase=, effective_state= and label.<key>=, joined with AND";
    default:
      return undefined;
  }
}
