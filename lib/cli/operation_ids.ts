/**
 * Operation ids as the user types them: any unique prefix of an id (as git and docker take),
 * with or without its `op-`, resolved on the client by listing the operations, so the short
 * ids that `list`, `ops` and `watch` print can be pasted.
 *
 * @module
 */

import { Operation_OperationType, Operation_Phase } from "../gen/baremetal/v1/baremetal_pb.ts";
import { type Session, UsageError } from "./session.ts";

/** A whole server id, `op-<uuid>`: used as given, without listing. */
const FULL_ID = /^op-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Items per ListOperations page while resolving; the server clamps it to its maximum. */
const PAGE_SIZE = 1000;

/** Pages read at most: the server's history is bounded, and so is this look-up. */
const MAX_PAGES = 100;

/** Candidates an ambiguous prefix lists at most. */
const MAX_CANDIDATES = 10;

/**
 * The whole id an operation id or prefix names.
 *
 * @param session The session.
 * @param typed The id or prefix as typed.
 * @returns The whole id; the typed text itself when nothing matches, so that the server
 * answers NOT_FOUND (with its hint).
 * @throws {UsageError} When the prefix matches more than one operation (listing them).
 */
export async function resolveOperationId(session: Session, typed: string): Promise<string> {
  if (FULL_ID.test(typed)) return typed;
  const prefixes = typed.startsWith("op-") ? [typed] : [typed, `op-${typed}`];
  const matches: { id: string; line: string }[] = [];
  const deadline = Date.now() + 10_000;
  let pageToken = "";
  for (let page = 0; page < MAX_PAGES; page++) {
    const response = await session.operations.listOperations(
      { pageToken, pageSize: PAGE_SIZE },
      { timeoutMs: Math.max(1, deadline - Date.now()), signal: session.interrupt },
    );
    for (const op of response.operations) {
      if (op.operationId === typed) return typed;
      if (prefixes.some((p) => op.operationId.startsWith(p))) {
        matches.push({
          id: op.operationId,
          line: `${op.operationId}  ${op.machineId}  ${Operation_OperationType[op.type]}  ${
            Operation_Phase[op.phase]
          }`,
        });
      }
    }
    pageToken = response.nextPageToken;
    if (pageToken === "") break;
  }
  if (matches.length === 0) return typed;
  if (matches.length === 1) return matches[0].id;
  const shown = matches.slice(0, MAX_CANDIDATES).map((m) => `  ${m.line}`);
  const more = matches.length > MAX_CANDIDATES
    ? [`  ... and ${matches.length - MAX_CANDIDATES} more`]
    : [];
  throw new UsageError(
    `operation id prefix "${typed}" matches ${matches.length} operations; ` +
      `type more of the id:\n${[...shown, ...more].join("\n")}`,
  );
}
