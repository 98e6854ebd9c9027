/**
 * The two Server-Sent Event streams of the HTTP surface: the dashboard's change feed
 * (`/events`) and one operation's log (`/operations/{id}/logs`, StreamOperationLogs semantics:
 * replay, live, end). Both are pulled: nothing is read until the connection takes the previous
 * chunk, so a slow browser costs a cursor, never a queue. A comment line every heartbeat keeps
 * idle connections alive through proxies and lets a dead one be noticed.
 *
 * @module
 */

import type { Engine } from "../engine/mod.ts";
import type { LogChunk } from "../gen/baremetal/v1/baremetal_pb.ts";
import { type DashboardFeed, dashboardOperation, sseEvent } from "./dashboard_feed.ts";

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/** Options of the stream builders. */
export interface StreamOptions {
  /** Ends the stream (the surface is shutting down). */
  signal: AbortSignal;
  /** Milliseconds between keep-alive comments on an idle stream. */
  heartbeatMs: number;
  /** Called once when the stream ends, whoever ends it. */
  onEnd: () => void;
}

/** What a pull waits for: the next item, the end signal, or the heartbeat. */
async function waitFor<T>(
  pending: Promise<T>,
  signal: AbortSignal,
  heartbeatMs: number,
): Promise<{ value: T } | "heartbeat" | "aborted"> {
  if (signal.aborted) return "aborted";
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      pending.then((value) => ({ value })),
      new Promise<"heartbeat">((resolve) =>
        timer = setTimeout(() => resolve("heartbeat"), heartbeatMs)
      ),
      new Promise<"aborted">((resolve) => {
        onAbort = () => resolve("aborted");
        signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort!);
  }
}

/**
 * A pulled byte stream that calls `onEnd` exactly once, however it ends. `pull` gets a signal
 * that fires at the surface's end or when the browser goes away (so no wait outlives it), and
 * resolves `false` to end the stream.
 */
function pulledStream(
  signal: AbortSignal,
  pull: (enqueue: (text: string) => void, signal: AbortSignal) => Promise<boolean>,
  onEnd: () => void,
): ReadableStream<Uint8Array> {
  const gone = new AbortController();
  const any = AbortSignal.any([signal, gone.signal]);
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    gone.abort();
    onEnd();
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const more = await pull((text) => controller.enqueue(ENCODER.encode(text)), any);
        if (!more) {
          end();
          controller.close();
        }
      } catch (error) {
        end();
        controller.error(error);
      }
    },
    cancel() {
      end();
    },
  }, { highWaterMark: 1 });
}

/**
 * The dashboard's change feed as an SSE body: a snapshot (unless `cursor` resumes inside the
 * window), then every change, with a fresh snapshot whenever the reader fell out of the window.
 *
 * @param feed The feed.
 * @param cursor Where a resuming browser continues (from `feed.resume`); `undefined` for a snapshot.
 * @param options End signal, heartbeat, end callback.
 * @returns The body.
 */
export function feedStream(
  feed: DashboardFeed,
  cursor: number | undefined,
  options: StreamOptions,
): ReadableStream<Uint8Array> {
  const { heartbeatMs } = options;
  let position = cursor;
  let first = true;
  return pulledStream(options.signal, async (enqueue, signal) => {
    if (first) {
      first = false;
      // Browsers reconnect after this long when the connection drops.
      enqueue("retry: 1000\n\n");
    }
    while (true) {
      if (signal.aborted) return false;
      if (position === undefined) {
        const snapshot = feed.snapshot();
        position = snapshot.cursor;
        enqueue(snapshot.text);
        return true;
      }
      const batch = feed.read(position);
      if (batch === undefined) {
        // Fell out of the window: resynchronise rather than send a stream with a gap.
        position = undefined;
        continue;
      }
      if (batch.text !== "") {
        position = batch.cursor;
        enqueue(batch.text);
        return true;
      }
      const waited = await waitFor(feed.changed(), signal, heartbeatMs);
      if (waited === "aborted") return false;
      if (waited === "heartbeat") {
        enqueue(": keep-alive\n\n");
        return true;
      }
    }
  }, options.onEnd);
}

/**
 * One operation's log as an SSE body: `log` events (retained lines, then live ones; `id:` is the
 * line's sequence number, so lines up to `afterSeq` are skipped on a resume), then one `end`
 * event with the operation once it is terminal and every line was sent.
 *
 * @param engine The engine.
 * @param operationId The operation (checked to exist by the caller).
 * @param options End signal, heartbeat, end callback, and the last line a resuming reader has.
 * @returns The body.
 */
export function logStream(
  engine: Engine,
  operationId: string,
  options: StreamOptions & { afterSeq: number },
): ReadableStream<Uint8Array> {
  const { heartbeatMs, afterSeq } = options;
  const stop = new AbortController();
  const lines = engine.streamLogs(operationId, { signal: stop.signal })[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<LogChunk>> | undefined;
  const end = () => {
    // Ends the journal reader too, whoever ended the stream.
    stop.abort();
    options.onEnd();
  };
  return pulledStream(options.signal, async (enqueue, signal) => {
    while (true) {
      pending ??= lines.next();
      const waited = await waitFor(pending, signal, heartbeatMs);
      if (waited === "aborted") return false;
      if (waited === "heartbeat") {
        enqueue(": keep-alive\n\n");
        return true;
      }
      pending = undefined;
      const result = waited.value;
      if (result.done) {
        if (signal.aborted) return false;
        let operation;
        try {
          operation = dashboardOperation(engine.getOperation(operationId));
        } catch {
          // Pruned by retention right after it ended: the end needs no details.
        }
        enqueue(sseEvent("end", { operation }));
        return false;
      }
      const chunk = result.value;
      const seq = Number(chunk.seq);
      if (seq !== 0 && seq <= afterSeq) continue;
      enqueue(sseEvent("log", {
        seq,
        stream: chunk.stream,
        text: DECODER.decode(chunk.data).replace(/\n$/, ""),
      }, seq === 0 ? undefined : String(seq)));
      return true;
    }
  }, end);
}
