/**
 * The per-operation log journal (StreamOperationLogs): appending never waits for a reader; every
 * journal is bounded, and a reader that falls behind the retained window is told how many lines
 * it missed rather than being fed a stream with gaps.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { freezeSnapshot } from "../model/immutable.ts";
import { type LogChunk, LogChunkSchema } from "../gen/baremetal/v1/baremetal_pb.ts";
import type { LogStream } from "../provider/mod.ts";
import type { LogJournalBacking } from "../store/mod.ts";

const ENCODER = new TextEncoder();

/** Options of {@linkcode LogJournal}. */
export interface LogJournalOptions {
  /** Lines kept per operation; older lines are dropped first. @default 2000 */
  maxLinesPerOperation?: number;
  /** Journals of finished operations kept; the oldest finished ones are forgotten first. @default 10000 */
  maxFinishedOperations?: number;
  /** Clock for line timestamps. @default () => new Date() */
  now?: () => Date;
  /**
   * Durable copy of the journals (e.g. the SQLite store's `log_lines`). Every line is appended
   * to it, lines dropped by the per-operation bound are trimmed from it too, and a journal the
   * journal does not hold (after a restart, or evicted) is loaded from it on first use.
   * @default none: logs live in memory only
   */
  backing?: LogJournalBacking;
}

/**
 * One operation's retained lines, stored compactly: a frozen `LogChunk` (with its `Timestamp`,
 * its `Uint8Array` and their backing store) costs ~400 bytes of heap, the three entries below
 * ~80 with the line's text. Chunks are built again when a reader asks for them (and shared by the
 * readers of the journal while any is reading).
 */
interface Journal {
  /** Per retained line: its text (without the newline), or the chunk loaded from the backing. */
  texts: (string | LogChunk)[];
  /** Per retained line: its time in milliseconds since the epoch (unused for a loaded chunk). */
  times: number[];
  /** Per retained line: its stream (unused for a loaded chunk). */
  streams: LogStream[];
  /** Chunks built for readers, index-aligned with `texts`; present while a reader is active. */
  built?: (LogChunk | undefined)[];
  /** Readers currently reading the journal. */
  readers: number;
  /** Sequence number of texts[0]. */
  firstSeq: number;
  /** Sequence number the next line gets. */
  nextSeq: number;
  ended: boolean;
  waiters: Set<() => void>;
}

/** Options of {@linkcode LogJournal.read}. */
export interface ReadLogOptions {
  /** Stops reading (the iterator finishes) when aborted. */
  signal?: AbortSignal;
}

/**
 * Keeps every operation's log lines (bounded) with gap-free sequence numbers. A reader gets the
 * retained lines, then new ones as they are appended, and finishes once the operation's journal
 * is ended and drained. Readers pull by sequence number, so a slow reader costs no memory and
 * never slows a writer; a reader that falls behind the retained window is told how many lines it
 * missed in a notice line (seq 0) instead of silently skipping them.
 *
 * @example
 * ```ts
 * const journal = new LogJournal();
 * journal.append("op-1", "hello");
 * journal.end("op-1");
 * for await (const chunk of journal.read("op-1")) console.log(chunk.seq);
 * ```
 */
export class LogJournal {
  readonly #maxLines: number;
  readonly #maxFinished: number;
  readonly #now: () => Date;
  readonly #journals = new Map<string, Journal>();
  // Finished journals in the order they ended, for eviction.
  readonly #finished = new Set<string>();
  readonly #forgotten = new Set<string>();
  readonly #backing?: LogJournalBacking;
  #droppedAfterEnd = 0;

  /**
   * @param options Bounds and clock.
   */
  constructor(options: LogJournalOptions = {}) {
    this.#maxLines = options.maxLinesPerOperation ?? 2000;
    this.#maxFinished = options.maxFinishedOperations ?? 10_000;
    this.#now = options.now ?? (() => new Date());
    this.#backing = options.backing;
    for (
      const [name, value] of [["maxLinesPerOperation", this.#maxLines], [
        "maxFinishedOperations",
        this.#maxFinished,
      ]] as const
    ) {
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(`LogJournal ${name} must be a positive integer: got ${value}`);
      }
    }
  }

  /** Lines appended after their operation's journal ended (a bug indicator; should stay 0). */
  get droppedAfterEnd(): number {
    return this.#droppedAfterEnd;
  }

  #journal(operationId: string): Journal {
    let journal = this.#journals.get(operationId);
    if (!journal) {
      const chunks = this.#backing?.load(operationId) ?? [];
      const firstSeq = chunks.length > 0 ? Number(chunks[0].seq) : 1;
      journal = {
        texts: chunks,
        times: chunks.map(() => 0),
        streams: chunks.map((): LogStream => "stdout"),
        readers: 0,
        firstSeq,
        nextSeq: firstSeq + chunks.length,
        ended: false,
        waiters: new Set(),
      };
      this.#journals.set(operationId, journal);
    }
    return journal;
  }

  /**
   * Appends one line to an operation's log.
   *
   * @param operationId The operation.
   * @param line The line, without trailing newline.
   * @param stream `stdout` (default) or `stderr`.
   * @returns The chunk, or `undefined` when the journal already ended.
   */
  append(operationId: string, line: string, stream: LogStream = "stdout"): LogChunk | undefined {
    const journal = this.#journal(operationId);
    if (journal.ended) {
      this.#droppedAfterEnd++;
      return undefined;
    }
    const ms = this.#now().getTime();
    const text = `${line}`;
    const chunk = buildChunk(operationId, journal.nextSeq, ms, stream, text);
    journal.nextSeq++;
    journal.texts.push(text);
    journal.times.push(ms);
    journal.streams.push(stream);
    journal.built?.push(chunk);
    this.#backing?.append(chunk);
    if (journal.texts.length > this.#maxLines) {
      // Drop in batches so the amortised cost per line stays O(1).
      const drop = Math.max(1, Math.floor(this.#maxLines / 8));
      journal.texts.splice(0, drop);
      journal.times.splice(0, drop);
      journal.streams.splice(0, drop);
      journal.built?.splice(0, drop);
      journal.firstSeq += drop;
      this.#backing?.trim(operationId, journal.firstSeq);
    }
    this.#notify(journal);
    return chunk;
  }

  /**
   * Marks an operation's log complete: readers finish once they have read every line. Idempotent.
   *
   * @param operationId The operation.
   */
  end(operationId: string): void {
    // A forgotten log stays forgotten: recreating it would evict a log that is still retained.
    if (this.#forgotten.has(operationId)) return;
    const journal = this.#journal(operationId);
    if (journal.ended) return;
    journal.ended = true;
    this.#notify(journal);
    this.#finished.add(operationId);
    while (this.#finished.size > this.#maxFinished) {
      const oldest = this.#finished.values().next().value!;
      this.#finished.delete(oldest);
      this.#journals.delete(oldest);
      // With a backing the lines are still stored: the next use loads them again.
      if (!this.#backing) this.#forgotten.add(oldest);
    }
  }

  /**
   * Forgets operations for good (their operation was pruned): their journals and every trace of
   * them, including the mark that their log was dropped. Lines in the backing are the store's
   * to delete. Readers already reading a journal finish with what it held.
   *
   * @param operationIds The operations.
   */
  forget(operationIds: Iterable<string>): void {
    for (const operationId of operationIds) {
      this.#journals.delete(operationId);
      this.#finished.delete(operationId);
      this.#forgotten.delete(operationId);
    }
  }

  /**
   * Entry counts of the journal's structures (for tests and diagnostics).
   *
   * @returns Journals held, finished journals, and operations whose log was dropped.
   */
  sizes(): { journals: number; finished: number; forgotten: number } {
    return {
      journals: this.#journals.size,
      finished: this.#finished.size,
      forgotten: this.#forgotten.size,
    };
  }

  /**
   * The retained lines of an operation, in order.
   *
   * @param operationId The operation.
   * @returns The chunks (empty when none).
   */
  lines(operationId: string): LogChunk[] {
    const journal = this.#journals.get(operationId);
    if (journal) return journal.texts.map((_, index) => this.#chunkAt(operationId, journal, index));
    return this.#backing?.load(operationId) ?? [];
  }

  /**
   * Reads an operation's log: retained lines, then new ones, until the journal ends.
   *
   * @param operationId The operation.
   * @param options Signal to stop early.
   * @returns An async iterator of chunks.
   */
  async *read(operationId: string, options: ReadLogOptions = {}): AsyncGenerator<LogChunk> {
    const { signal } = options;
    if (this.#forgotten.has(operationId)) {
      yield this.#notice(
        operationId,
        `[bmdemo] the log of ${operationId} is no longer retained (the server keeps the logs of the last ${this.#maxFinished} finished operations)`,
      );
      return;
    }
    const journal = this.#journal(operationId);
    journal.readers++;
    try {
      let cursor = 1;
      while (!signal?.aborted) {
        if (cursor < journal.firstSeq) {
          yield this.#notice(
            operationId,
            `[bmdemo] ${
              journal.firstSeq - cursor
            } earlier lines were dropped (the journal keeps the last ${this.#maxLines} lines of an operation)`,
          );
          cursor = journal.firstSeq;
        }
        const index = cursor - journal.firstSeq;
        if (index < journal.texts.length) {
          const chunk = this.#chunkAt(operationId, journal, index);
          cursor++;
          yield chunk;
          continue;
        }
        if (journal.ended) return;
        await this.#waitForMore(journal, signal);
      }
    } finally {
      // The last reader out lets the built chunks (and their cached wire encodings) go.
      if (--journal.readers === 0) journal.built = undefined;
    }
  }

  /** The chunk of a retained line, built once for all the journal's active readers. */
  #chunkAt(operationId: string, journal: Journal, index: number): LogChunk {
    const text = journal.texts[index];
    if (typeof text !== "string") return text;
    let chunk = journal.built?.[index];
    if (!chunk) {
      chunk = buildChunk(
        operationId,
        journal.firstSeq + index,
        journal.times[index],
        journal.streams[index],
        text,
      );
      if (journal.readers > 0) {
        journal.built ??= new Array(journal.texts.length);
        journal.built[index] = chunk;
      }
    }
    return chunk;
  }

  #notice(operationId: string, text: string): LogChunk {
    return create(LogChunkSchema, {
      ts: timestampFromDate(this.#now()),
      operationId,
      stream: "stderr",
      data: ENCODER.encode(`${text}\n`),
      seq: 0n,
    });
  }

  #waitForMore(journal: Journal, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        journal.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      journal.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  #notify(journal: Journal): void {
    for (const waiter of [...journal.waiters]) waiter();
  }
}

/** The frozen chunk of one journal line. */
function buildChunk(
  operationId: string,
  seq: number,
  ms: number,
  stream: LogStream,
  text: string,
): LogChunk {
  return freezeSnapshot(create(LogChunkSchema, {
    ts: timestampFromMs(ms),
    operationId,
    stream,
    data: encodeLine(text),
    seq: BigInt(seq),
  }));
}

/**
 * `text` and a newline as UTF-8, like `TextEncoder.encode`: an ASCII line (the usual case) is
 * copied in JavaScript, which is several times cheaper than the encoder for short lines.
 */
function encodeLine(text: string): Uint8Array {
  const length = text.length;
  const bytes = new Uint8Array(length + 1);
  for (let i = 0; i < length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0x7f) return ENCODER.encode(`${text}\n`);
    bytes[i] = code;
  }
  bytes[length] = 0x0a;
  return bytes;
}
