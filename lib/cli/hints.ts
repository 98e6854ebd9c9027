/**
 * One `hint:` line per RPC error, chosen from the `google.rpc.ErrorInfo` reason the server sent
 * (never from the message text).
 *
 * @module
 */

import type { ErrorInfo } from "../gen/google/rpc/error_details_pb.ts";

/**
 * The hint for an error, if its reason has one.
 *
 * @param info The error's `ErrorInfo` (reason and metadata).
 * @param command The command that failed.
 * @param positionals Its arguments (the machine or operation id first).
 * @returns `hint: …` without a newline, or `undefined`.
 */
export function hintFor(
  info: ErrorInfo | undefined,
  command: string | undefined,
  positionals: readonly string[] = [],
): string | undefined {
  if (!info) return undefined;
  const meta = info.metadata;
  const target = positionals[0] ?? "<id>";
  switch (info.reason) {
    case "PHASE_PRECONDITION": {
      const machineId = meta.machineId || target;
      if (command === "exit-maintenance") {
        return `hint: the machine is not in maintenance; bmdemo-cli get ${machineId} shows its phase`;
      }
      if (meta.phase !== "MAINTENANCE") {
        return `hint: run bmdemo-cli enter-maintenance ${machineId} first`;
      }
      return `hint: bmdemo-cli get ${machineId} shows its phase`;
    }
    case "MACHINE_BUSY": {
      const active = meta.activeOperationId || "<operation-id>";
      return `hint: wait with bmdemo-cli wait ${active}, or cancel it with bmdemo-cli cancel ${active}`;
    }
    case "MACHINE_NOT_FOUND":
      return "hint: bmdemo-cli list shows the registered machines";
    case "OPERATION_NOT_FOUND":
      return "hint: bmdemo-cli ops shows the operations";
    case "REQUEST_ID_REUSED":
      return "hint: omit --request-id to use a fresh one";
    case "UNAUTHENTICATED":
      return "hint: pass --token or set BMDEMO_TOKEN";
    case "OPERATION_FINISHED":
      return `hint: bmdemo-cli op ${meta.operationId || target} shows how it ended`;
    case "INVALID_FILTER":
      return command === "ops"
        ? "hint: operations filter by machine_id=, phase= and type=, joined with AND"
        : "hint: machines filter by phase=, effective_state= and label.<key>=, joined with AND";
    default:
      return undefined;
  }
}
