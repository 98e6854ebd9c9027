/**
 * One subscriber's view of the event feed (`events.ts`), and the shared bounded log of events
 * every subscriber reads from at its own cursor.
 *
 * @module
 */

import { LaggedError } from "../model/errors.ts";
import type { Operation, OperationEvent } from "../gen/baremetal/v1/baremetal_pb.ts";

/**
 * The events the feed still retains, shared by every subscriber: subscribers hold a cursor (a
 * sequence number) into it rather than a queue of their own, so publishing costs O(1) whatever
 * the subscribers do, and a subscriber that stops reading pins at most the retained window.
 * Generic so other feeds (the HTTP surface's numbered dashboard events) read the same way.
 */
export class EventLog<T = OperationEvent> {
  #events: T[] = [];
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
  at(seq: number): T {
    return this.#events[this.#head + seq - this.first];
  }

  push(event: T): void {
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
