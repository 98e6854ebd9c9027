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

/**
 * The events the feed still retains, shared by every subscriber: subscribers hold a cursor (a
 * sequence number) into it rather than a queue of their own, so publishing costs O(1) whatever
 * the subscribers do, and a subscriber that stops reading pins at most the retained window.
 */
class EventLog {
  #events: OperationEvent[] = [];
  #head = 0;
  /** Sequence number of the oldest retained event. */
  first = 0;
  /** Sequence number the next published event gets. */
  next = 0;
  #published?: PromiseWithResolvers<void>;

  get length(): number {
    return this.next - this.first;
  }

  /** The retained event with sequence number `seq` (first <= seq < next). */
  at(seq: number): OperationEvent {
    return this.#events[this.#head + seq - this.first];
  }

  push(event: OperationEvent): void {
    this.#events.push(event);
    this.next++;
  }

  /** Counts an event that nobody can read (no subscriber): nothing is retained. */
  skip(): void {
    this.#events = [];
    this.#head = 0;
    this.first = ++this.next;
  }

  /** Forgets the events before `seq`. */
  trimTo(seq: number): void {
    const drop = Math.min(seq, this.next) - this.first;
    if (drop <= 0) return;
    this.first += drop;
    this.#head += drop;
    if (this.#head >= this.#events.length) {
      this.#events = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#events.length) {
      this.#events = this.#events.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Resolves at the next {@linkcode EventLog.wake}: one promise shared by every waiting reader. */
  published(): Promise<void> {
    return (this.#published ??= Promise.withResolvers<void>()).promise;
  }

  wake(): void {
    const published = this.#published;
    this.#published = undefined;
    published?.resolve();
  }
}

/** Options of {@linkcode EventFeed.subscribe}. */
export interface SubscribeOptions {
  /** Only operations for which this returns `true` are delivered. @default every operation */
  filter?: (operation: Operation) => boolean;
  /**
   * How many events (of any operation) the subscriber may be behind the newest before it is
   * dropped as lagging. @default the feed's
   */
  capacity?: number;
  /** Ends the subscription (the iterator then finishes) when aborted. */
  signal?: AbortSignal;
}

/** Options of {@linkcode EventFeed}. */
export interface EventFeedOptions {
  /**
   * How many events a subscriber may fall behind before it is dropped, which is also the most
   * the feed retains for its slowest subscriber: events are shared, so the bound costs a pointer
   * per event (plus the event, and its cached wire encoding) once, not per subscriber. Large
   * enough that watchers that keep reading ride out a burst of thousands of operations (13
   * events each), bounded so one that stops is dropped.
   * @default 65536
   */
  capacity?: number;
  /** Clock for event timestamps. @default () => new Date() */
  now?: () => Date;
}

/**
 * Fans operation events out to subscribers through one shared, bounded log: publishing appends
 * to it and wakes the waiting readers, in O(1) whatever the number of subscribers, and each
 * subscriber reads (and filters) at its own pace from its own cursor. The log keeps the events
 * back to the slowest live subscriber, at most the largest subscriber capacity; a subscriber
 * more than its capacity behind is dropped, and its iterator throws {@linkcode LaggedError}.
 * A dropped subscriber is noticed when it next reads, or by a sweep run every eighth of the
 * smallest capacity (O(subscribers), so amortised O(1) per event), which also lets go of the
 * events every subscriber has read.
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
  readonly #log = new EventLog();
  #published = 0;
  // Largest and smallest capacity of the live subscribers, recomputed when one of them leaves.
  #retain = 0;
  #sweepEvery = 1;
  #sinceSweep = 0;
  #boundsStale = false;

  /**
   * @param options Lag bound and clock.
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

  /** Events the feed retains for its subscribers (at most the largest subscriber capacity). */
  get retainedCount(): number {
    return this.#log.length;
  }

  /**
   * Publishes one event about an operation to every subscriber. Never waits, and costs the same
   * whatever the subscribers do: they filter and read it later, each from its own cursor.
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
    const log = this.#log;
    if (this.#subscribers.size === 0) {
      log.skip();
      return event;
    }
    log.push(event);
    if (this.#boundsStale) this.#recomputeBounds();
    // The hard bound: whoever still needed the oldest event is more than `retain` behind.
    if (log.length > this.#retain) log.trimTo(log.next - this.#retain);
    if (++this.#sinceSweep >= this.#sweepEvery) this.#sweep();
    log.wake();
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
   * @param options Filter, lag bound and signal.
   * @returns The subscription, an async iterator of events.
   * @throws {RangeError} When `capacity` is not a positive integer.
   */
  subscribe(options: SubscribeOptions = {}): EventSubscription {
    const capacity = options.capacity ?? this.#capacity;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Subscriber capacity must be a positive integer: got ${capacity}`);
    }
    const subscription = new EventSubscription(
      this.#log,
      options.filter ?? (() => true),
      capacity,
      () => {
        if (this.#subscribers.delete(subscription)) this.#boundsStale = true;
      },
    );
    if (this.#subscribers.size === 0) {
      this.#retain = capacity;
      this.#sweepEvery = sweepInterval(capacity);
    } else {
      this.#retain = Math.max(this.#retain, capacity);
      this.#sweepEvery = Math.min(this.#sweepEvery, sweepInterval(capacity));
    }
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

  /**
   * Ends every subscription; used at shutdown. Their iterators deliver what was published
   * before, then finish, or throw `reason` when one is given.
   *
   * @param reason What the iterators throw once drained, e.g. a {@linkcode ShuttingDownError}.
   */
  closeAll(reason?: Error): void {
    for (const subscriber of [...this.#subscribers]) subscriber.close(reason);
  }

  #recomputeBounds(): void {
    this.#boundsStale = false;
    let retain = 0;
    let sweepEvery = Infinity;
    for (const subscriber of this.#subscribers) {
      retain = Math.max(retain, subscriber.capacity);
      sweepEvery = Math.min(sweepEvery, sweepInterval(subscriber.capacity));
    }
    this.#retain = retain;
    this.#sweepEvery = sweepEvery === Infinity ? 1 : sweepEvery;
  }

  /** Drops the subscribers that fell too far behind and forgets what every other one has read. */
  #sweep(): void {
    this.#sinceSweep = 0;
    const log = this.#log;
    let oldest = log.next;
    for (const subscriber of [...this.#subscribers]) {
      if (subscriber.checkLag()) continue;
      oldest = Math.min(oldest, subscriber.cursor);
    }
    log.trimTo(oldest);
  }
}

function sweepInterval(capacity: number): number {
  return Math.max(1, Math.floor(capacity / 8));
}

/** One subscriber's view of an {@linkcode EventFeed}: an async iterator of events. */
export class EventSubscription implements AsyncIterableIterator<OperationEvent>, Disposable {
  readonly #log: EventLog;
  readonly #filter: (operation: Operation) => boolean;
  readonly #capacity: number;
  readonly #detach: () => void;
  readonly #onClose: (() => void)[] = [];
  #cursor: number;
  // Once closed: the matching events published before, delivered before the iterator ends.
  #rest?: OperationEvent[];
  #restIndex = 0;
  #closed = false;
  #ending?: Error;

  /**
   * @param log The feed's shared log.
   * @param filter Which operations to deliver.
   * @param capacity How far behind it may fall.
   * @param detach Removes the subscription from its feed.
   */
  constructor(
    log: EventLog,
    filter: (operation: Operation) => boolean,
    capacity: number,
    detach: () => void,
  ) {
    this.#log = log;
    this.#filter = filter;
    this.#capacity = capacity;
    this.#detach = detach;
    this.#cursor = log.next;
  }

  /** How many events behind the newest it may fall before it is dropped. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Sequence number of the next event it reads. */
  get cursor(): number {
    return this.#cursor;
  }

  /** Matching events published and not yet read (counted by reading the backlog's filters). */
  get pending(): number {
    if (this.#rest) return this.#rest.length - this.#restIndex;
    if (this.#closed || this.#isBehind()) return 0;
    let count = 0;
    for (let seq = this.#cursor; seq < this.#log.next; seq++) {
      if (this.#filter(this.#log.at(seq).snapshot!)) count++;
    }
    return count;
  }

  /** Whether the subscription ended (closed or lagged). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Drops the subscription if it fell more than its capacity behind. Called by the feed.
   *
   * @returns Whether it was dropped (now or before).
   */
  checkLag(): boolean {
    if (this.#closed) return true;
    if (!this.#isBehind()) return false;
    this.#end(
      new LaggedError(
        `watcher fell more than ${this.#capacity} events behind and was dropped; reconnect (with send_initial_snapshot) to resynchronise`,
        { metadata: { capacity: String(this.#capacity) } },
      ),
      [],
    );
    return true;
  }

  #isBehind(): boolean {
    return this.#cursor < this.#log.first || this.#log.next - this.#cursor > this.#capacity;
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

  /**
   * Ends the subscription; events published before are still delivered.
   *
   * @param reason What the iterator throws once they are, instead of finishing.
   */
  close(reason?: Error): void {
    if (this.#closed || this.checkLag()) return;
    const rest: OperationEvent[] = [];
    for (let seq = this.#cursor; seq < this.#log.next; seq++) {
      const event = this.#log.at(seq);
      if (this.#filter(event.snapshot!)) rest.push(event);
    }
    this.#end(reason, rest);
  }

  #end(reason: Error | undefined, rest: OperationEvent[]): void {
    this.#closed = true;
    this.#ending = reason;
    this.#rest = rest;
    this.#detach();
    for (const callback of this.#onClose.splice(0)) callback();
    // Wakes this reader if it waits (and the others, which find nothing new and wait again).
    this.#log.wake();
  }

  /**
   * Returns the next event; throws {@linkcode LaggedError} once the subscriber fell behind, or
   * the reason given to `close` once the events before it are delivered.
   */
  async next(): Promise<IteratorResult<OperationEvent>> {
    while (true) {
      if (!this.#closed) this.checkLag();
      const rest = this.#rest;
      if (rest) {
        if (this.#restIndex < rest.length) return { value: rest[this.#restIndex++], done: false };
        if (this.#ending) throw this.#ending;
        return { value: undefined, done: true };
      }
      const log = this.#log;
      while (this.#cursor < log.next) {
        const event = log.at(this.#cursor++);
        if (this.#filter(event.snapshot!)) return { value: event, done: false };
      }
      await log.published();
    }
  }

  /** Ends the subscription early. */
  return(): Promise<IteratorResult<OperationEvent>> {
    this.close();
    this.#rest = [];
    this.#ending = undefined;
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
