/**
 * The operation event fan-out (WatchOperations): publishing never waits for a subscriber and
 * never blocks the executor; the shared buffer is bounded, and a subscriber that falls too far
 * behind is told so rather than being fed a stream with gaps. Subscribers are in
 * `event_subscription.ts`, the per-operation log journal in `log_journal.ts`.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { freezeSnapshot } from "../model/immutable.ts";
import {
  type Operation,
  type OperationEvent,
  OperationEventSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { EventLog, EventSubscription, type SubscribeOptions } from "./event_subscription.ts";
import type { EventChange } from "./operation_events.ts";

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
   * @param change What changed: message and fields, from `operation_events.ts`.
   * @returns The event.
   */
  publish(snapshot: Operation, change: EventChange): OperationEvent {
    // Frozen: one event object is shared by every subscriber (and its wire encoding with it).
    const event = freezeSnapshot(create(OperationEventSchema, {
      ...change,
      ts: timestampFromDate(this.#now()),
      snapshot,
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
