/**
 * The benchmark's `logs` scenario (`scripts/bench.ts`): StreamOperationLogs of every REIMAGE of
 * the burst, a few streams at a time; reports lines per second and whether every whole log came
 * back (each stream ended by the server, the same line count for every operation).
 *
 * @module
 */

import { figure, textFigure } from "./stats.ts";
import { type BenchContext, codeName, pool } from "./context.ts";

/** A log stream silent this long is stopped (a server whose log streams never end). */
const LOG_SILENCE_MS = 2000;
/** Log streams read at once. */
const LOG_IN_FLIGHT = 10;

/**
 * Runs the `logs` scenario.
 *
 * @param ctx The run.
 * @param reimageIds The burst's REIMAGE operations.
 */
export async function runLogs(ctx: BenchContext, reimageIds: readonly string[]): Promise<void> {
  const { figures, details, operations } = ctx;
  if (reimageIds.length === 0) throw new Error("no burst operations to read the logs of");
  const lines: number[] = [];
  const bytes: number[] = [];
  let ended = 0;
  let silent = 0;
  const errors: string[] = [];
  const t = performance.now();
  await pool(reimageIds.length, LOG_IN_FLIGHT, async (i) => {
    const stream = operations.streamOperationLogs({ operationId: reimageIds[i] });
    let n = 0;
    let size = 0;
    try {
      while (true) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const next = stream.next();
        next.catch(() => {});
        const result = await Promise.race([
          next,
          new Promise<"silence">((resolve) => {
            timer = setTimeout(() => resolve("silence"), LOG_SILENCE_MS);
          }),
        ]);
        clearTimeout(timer);
        if (result === "silence") {
          silent++;
          await stream.return?.().catch(() => {});
          break;
        }
        if (result.done) {
          ended++;
          break;
        }
        size += result.value.data.length;
        for (const byte of result.value.data) if (byte === 10) n++;
      }
    } catch (error) {
      errors.push(codeName(error));
    }
    lines.push(n);
    bytes.push(size);
  });
  const totalMs = performance.now() - t;
  const totalLines = lines.reduce((a, b) => a + b, 0);
  const count = reimageIds.length;
  figures.push(
    figure("logs", `lines/s (${LOG_IN_FLIGHT} streams in flight)`, "1/s", [
      totalLines / (totalMs / 1000),
    ]),
  );
  figures.push(figure("logs", "lines per operation", "", lines, `${count} ops`));
  figures.push(figure("logs", `all ${count} logs read`, "ms", [totalMs]));
  figures.push(textFigure("logs", "streams ended by the server", `${ended}/${count}`));
  if (silent > 0) {
    figures.push(
      textFigure(
        "logs",
        "log streams do not end",
        `${silent}/${count} stopped after ${LOG_SILENCE_MS} ms of silence`,
      ),
    );
  }
  const sameLength = Math.min(...lines) === Math.max(...lines);
  figures.push(
    textFigure(
      "logs",
      "whole log came back",
      ended === count && errors.length === 0 && sameLength
        ? "yes (every stream ended with OK, same line count for every op)"
        : `no: ${count - ended} not ended, ${errors.length} errors` +
          (sameLength ? "" : ", line counts differ"),
    ),
  );
  if (errors.length > 0) {
    figures.push(textFigure("logs", "errors", errors.slice(0, 5).join(", ")));
  }
  details.logs = { operations: count, totalLines, totalMs, ended, silent, errors, lines, bytes };
}
