/**
 * The hidden `__complete machines|operations [prefix]` command the completion scripts run to
 * complete ids, the way kubectl asks its server: the ids that start with the prefix, one a line.
 * A shell waits for it on every Tab, so it gives up after a short time and prints nothing at all
 * on any failure (an unreachable server, a bad flag): no error text ever lands on the prompt.
 *
 * @module
 */

import { EXIT, type Session } from "./session.ts";

/** The hidden command's name; `--help` and the completion scripts' command lists omit it. */
export const COMPLETE_COMMAND = "__complete";

/** What `__complete` lists. */
export const ID_KINDS = ["machines", "operations"] as const;

/** One of {@linkcode ID_KINDS}. */
export type IdKind = typeof ID_KINDS[number];

/** How long a Tab may wait for the server, in total over every page. */
export const COMPLETE_TIMEOUT_MS = 2_000;

/** At most this many ids are printed: more is no help in a shell's candidate list. */
export const MAX_COMPLETIONS = 500;

const PAGE_SIZE = 1000;

/**
 * The command line of the main CLI that `__complete <kind> [prefix] [flags...]` stands for: a
 * `list` with the same global flags, so `--server`, TLS and token flags connect as usual.
 *
 * @param args The arguments after `__complete`.
 * @returns The kind, the prefix and the arguments to parse, or `undefined` for an unknown kind.
 *
 * @example
 * ```ts
 * import { completeRequest } from "./complete_ids.ts";
 * completeRequest(["machines", "mach", "--server", "h:1"]);
 * // { kind: "machines", prefix: "mach", args: ["list", "--server", "h:1"] }
 * ```
 */
export function completeRequest(
  args: readonly string[],
): { kind: IdKind; prefix: string; args: string[] } | undefined {
  const [kind, prefix = "", ...flags] = args;
  if (!(ID_KINDS as readonly string[]).includes(kind)) return undefined;
  return { kind: kind as IdKind, prefix, args: ["list", ...flags] };
}

/**
 * Prints the ids of `kind` that start with `prefix`, one a line, and nothing on any failure.
 *
 * @param session The session (its io's err is never written).
 * @param request The kind and prefix.
 * @returns 0, or 1 when the server could not be asked in time.
 */
export async function completeIds(
  session: Session,
  request: { kind: IdKind; prefix: string },
): Promise<number> {
  const deadline = Date.now() + COMPLETE_TIMEOUT_MS;
  const ids: string[] = [];
  try {
    let pageToken = "";
    do {
      const call = { timeoutMs: Math.max(1, deadline - Date.now()), signal: session.interrupt };
      const page = request.kind === "machines"
        ? await session.machines.listMachines({ pageToken, pageSize: PAGE_SIZE }, call)
        : await session.operations.listOperations({ pageToken, pageSize: PAGE_SIZE }, call);
      const pageIds = "machines" in page
        ? page.machines.map((m) => m.machineId)
        : page.operations.map((o) => o.operationId);
      ids.push(...pageIds.filter((id) => id.startsWith(request.prefix)));
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && ids.length < MAX_COMPLETIONS);
  } catch {
    return EXIT.RPC;
  }
  const shown = ids.slice(0, MAX_COMPLETIONS);
  if (shown.length > 0) session.io.out(shown.join("\n") + "\n");
  return EXIT.OK;
}
