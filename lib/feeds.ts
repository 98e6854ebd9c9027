/**
 * Feeds: the operation event fan-out (WatchOperations) and the per-operation log journal
 * (StreamOperationLogs). Publishing never waits for a reader and never blocks the executor;
 * every buffer is bounded, and a reader that falls too far behind is told so rather than being
 * fed a stream with gaps.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { LaggedError } from "./errors.ts";
import { freezeSnapshot } from "./immutable.ts";
import {
  type LogChunk,
  LogChunkSchema,
  type Operation,
  type OperationEvent,
  OperationEventSchema,
} from "./gen/baremetal/v1/baremetal_pb.ts";
import type { LogStream } from "./provider.ts";

const ENCODER = new TextEncoder();

/** A FIFO queue with amortised O(1) shift. */
class Queue<T> {
  #items: T[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head++];
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

/** Options of {@linkcode EventFeed.subscribe}. */
export interface SubscribeOptions {
  /** Only operations for which this returns `true` are delivered. @default every operation */
  filter?: (operation: Operation) => boolean;
  /** Events a subscriber may have queued before it is dropped as lagging. @default the feed's */
  capacity?: number;
  /** Ends the subscription (the iterator then finishes) when aborted. */
  signal?: AbortSignal;
}

/** Options of {@linkcode EventFeed}. */
export interface EventFeedOptions {
  /**
   * Default per-subscriber queue bound. Events are shared between subscribers, so a queue costs
   * a pointer per event: large enough that watchers that keep reading ride out a burst of
   * thousands of operations (13 events each), bounded so one that stops is dropped.
   * @default 65536
   */
  capacity?: number;
  /** Clock for event timestamps. @default () => new Date() */
  now?: () => Date;
}

/**
 * Fans operation events out to subscribers. Each subscriber has its own bounded queue; one that
 * falls behind by more than its capacity is dropped and its iterator throws
 * {@linkcode LaggedError} after yielding what it had queued.
 *
 * @example
 * ```ts
 * const feed = new EventFeed();
 * using sub = feed.subscribe();
 * ```
 */
export class EventFeed {
  readonly #capacity: number;
  readonly #now: () => Date;
  readonly #subscribers = new Set<EventSubscription>();
  readonly #listeners = new Set<(event: OperationEvent) => void>();
  #published = 0;

  /**
   * @param options Queue bound and clock.
   */
  constructor(options: EventFeedOptions = {}) {
    this.#capacity = options.capacity ?? 65_536;
    if (!Number.isInteger(this.#capacity) || this.#capacity < 1) {
      throw new RangeError(`EventFeed capacity must be a positive integer: got ${this.#capacity}`);
    }
    this.#now = options.now ?? (() => new Date());
  }

  /** Number of live subscribers. */
  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  /** Number of events published so far. */
  get publishedCount(): number {
    return this.#published;
  }

  /**
   * Publishes one event about an operation to every matching subscriber. Never waits.
   *
   * @param snapshot The operation right after the change.
   * @param message What changed.
   * @returns The event.
   */
  publish(snapshot: Operation, message: string): OperationEvent {
    // Frozen: one event object is shared by every subscriber (and its wire encoding with it).
    const event = freezeSnapshot(create(OperationEventSchema, {
      ts: timestampFromDate(this.#now()),
      snapshot,
      message,
    }));
    this.#published++;
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A listener is an observer (e.g. the transition log); its failure must not stop the
        // executor or the other subscribers.
      }
    }
    for (const subscriber of this.#subscribers) subscriber.offer(event);
    return event;
  }

  /**
   * Calls `listener` synchronously for every event published from now on, for cheap observers
   * such as logging. It must not block; an exception it throws is ignored.
   *
   * @param listener Called with each event.
   * @returns A function that removes the listener.
   */
  listen(listener: (event: OperationEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Subscribes to events published from now on. Subscribing is synchronous, so a caller that
   * reads the store's current state in the same tick misses nothing and sees nothing twice.
   *
   * @param options Filter, queue bound and signal.
   * @returns The subscription, an async iterator of events.
   * @throws {RangeError} When `capacity` is not a positive integer.
   */
  subscribe(options: SubscribeOptions = {}): EventSubscription {
    const capacity = options.capacity ?? this.#capacity;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Subscriber capacity must be a positive integer: got ${capacity}`);
    }
    const subscription = new EventSubscription(
      options.filter ?? (() => true),
      capacity,
      () => this.#subscribers.delete(subscription),
    );
    this.#subscribers.add(subscription);
    if (options.signal) {
      const signal = options.signal;
      if (signal.aborted) subscription.close();
      else {
        const onAbort = () => subscription.close();
        signal.addEventListener("abort", onAbort, { once: true });
        subscription.onClose(() => signal.removeEventListener("abort", onAbort));
      }
    }
    return subscription;
  }

  /** Ends every subscription (their iterators finish after draining); used at shutdown. */
  closeAll(): void {
    for (const subscriber of [...this.#subscribers]) subscriber.close();
  }
}

/** One subscriber's view of an {@linkcode EventFeed}: an async iterator of events. */
export class EventSubscription implements AsyncIterableIterator<OperationEvent>, Disposable {
  readonly #filter: (operation: Operation) => boolean;
  readonly #capacity: number;
  readonly #queue = new Queue<OperationEvent>();
  readonly #detach: () => void;
  readonly #onClose: (() => void)[] = [];
  #waiter?: () => void;
  #closed = false;
  #lagged?: LaggedError;

  /**
   * @param filter Which operations to deliver.
   * @param capacity Queue bound.
   * @param detach Removes the subscription from its feed.
   */
  constructor(filter: (operation: Operation) => boolean, capacity: number, detach: () => void) {
    this.#filter = filter;
    this.#capacity = capacity;
    this.#detach = detach;
  }

  /** Events queued and not yet read. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Whether the subscription ended (closed or lagged). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues an event if it matches; drops the subscriber if its queue is full. Called by the feed.
   *
   * @param event The event.
   */
  offer(event: OperationEvent): void {
    if (this.#closed || !this.#filter(event.snapshot!)) return;
    if (this.#queue.length >= this.#capacity) {
      this.#lagged = new LaggedError(
        `watcher fell more than ${this.#capacity} events behind and was dropped; reconnect (with send_initial_snapshot) to resynchronise`,
        { metadata: { capacity: String(this.#capacity) } },
      );
      this.close();
      return;
    }
    this.#queue.push(event);
    this.#wake();
  }

  /**
   * Registers a callback run once when the subscription ends.
   *
   * @param callback The callback.
   */
  onClose(callback: () => void): void {
    if (this.#closed) callback();
    else this.#onClose.push(callback);
  }

  /** Ends the subscription; queued events are still delivered. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#detach();
    for (const callback of this.#onClose.splice(0)) callback();
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  /** Returns the next event; throws {@linkcode LaggedError} once a dropped subscriber is drained. */
  async next(): Promise<IteratorResult<OperationEvent>> {
    while (true) {
      const event = this.#queue.shift();
      if (event) return { value: event, done: false };
      if (this.#lagged) throw this.#lagged;
      if (this.#closed) return { value: undefined, done: true };
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
  }

  /** Ends the subscription early. */
  return(): Promise<IteratorResult<OperationEvent>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** @returns This iterator. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Ends the subscription. */
  [Symbol.dispose](): void {
    this.close();
  }
}

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

/** Durable storage of journal lines; see {@linkcode LogJournalOptions.backing}. */
export interface LogJournalBacking {
  /** Stores one line (its `operationId` and `seq` identify it). */
  append(chunk: LogChunk): void;
  /** Forgets an operation's lines before `firstSeq`. */
  trim(operationId: string, firstSeq: number): void;
  /** An operation's stored lines in ascending `seq` (empty when none). */
  load(operationId: string): LogChunk[];
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
