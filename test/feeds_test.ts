import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LaggedError } from "../lib/model/errors.ts";
import { EventFeed } from "../lib/engine/events.ts";
import { LogJournal } from "../lib/engine/log_journal.ts";
import {
  type LogChunk,
  LogChunkSchema,
  type Operation,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationEventSchema,
  OperationSchema,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import type { LogStream } from "../lib/provider/mod.ts";
import { SANITIZE } from "./helpers.ts";

const NOW = new Date("2025-01-01T00:00:00Z");
const now = () => NOW;

function operation(
  operationId: string,
  machineId = "machine-1",
  phase = OperationPhase.RUNNING,
): Operation {
  return create(OperationSchema, { operationId, machineId, phase });
}

function event(snapshot: Operation, message: string): OperationEvent {
  return create(OperationEventSchema, { ts: timestampFromDate(NOW), snapshot, message });
}

/** Publishes one event per operation id, with message `step <id>`, and returns what it expects. */
function publishAll(feed: EventFeed, ids: string[], machineId = "machine-1"): OperationEvent[] {
  return ids.map((id) => {
    const snapshot = operation(id, machineId);
    const published = feed.publish(snapshot, { message: `step ${id}` });
    assert.deepStrictEqual(published, event(snapshot, `step ${id}`));
    return published;
  });
}

Deno.test(
  "EventFeed.publish() delivers every event to every subscriber in order",
  SANITIZE,
  async () => {
    const feed = new EventFeed({ now });
    const first = feed.subscribe();
    const second = feed.subscribe();
    const published = publishAll(feed, ["op-1", "op-2", "op-3"]);
    feed.closeAll();
    assert.deepStrictEqual(
      { first: await Array.fromAsync(first), second: await Array.fromAsync(second) },
      { first: published, second: published },
    );
    assert.strictEqual(feed.publishedCount, 3);
  },
);

Deno.test("EventFeed.subscribe() receives only events published after it", SANITIZE, async () => {
  const feed = new EventFeed({ now });
  publishAll(feed, ["op-1"]);
  const subscription = feed.subscribe();
  const later = publishAll(feed, ["op-2"]);
  feed.closeAll();
  assert.deepStrictEqual(await Array.fromAsync(subscription), later);
});

Deno.test(
  "EventFeed.subscribe() delivers only operations its filter accepts",
  SANITIZE,
  async () => {
    const feed = new EventFeed({ now });
    const subscription = feed.subscribe({ filter: (op) => op.machineId === "machine-2" });
    publishAll(feed, ["op-1"], "machine-1");
    const wanted = publishAll(feed, ["op-2", "op-3"], "machine-2");
    publishAll(feed, ["op-4"], "machine-1");
    assert.strictEqual(subscription.pending, 2);
    feed.closeAll();
    assert.deepStrictEqual(await Array.fromAsync(subscription), wanted);
  },
);

Deno.test(
  "EventFeed.publish() drops a subscriber that falls more than its capacity behind",
  SANITIZE,
  async (t) => {
    const variants = [
      { name: "the feed's capacity", feed: { capacity: 2 }, slow: {}, fast: { capacity: 10 } },
      { name: "the subscriber's own capacity", feed: {}, slow: { capacity: 2 }, fast: {} },
    ];
    for (const variant of variants) {
      await t.step(variant.name, async () => {
        const feed = new EventFeed({ ...variant.feed, now });
        const slow = feed.subscribe(variant.slow);
        const fast = feed.subscribe(variant.fast);
        const published = publishAll(feed, ["op-1", "op-2"]);
        assert.deepStrictEqual({ closed: slow.closed, subscribers: feed.subscriberCount }, {
          closed: false,
          subscribers: 2,
        });

        published.push(...publishAll(feed, ["op-3", "op-4"]));
        assert.deepStrictEqual({ closed: slow.closed, subscribers: feed.subscriberCount }, {
          closed: true,
          subscribers: 1,
        });

        // Dropped: what it missed has a gap, so it gets the error at once, not a partial prefix.
        await assert.rejects(slow.next(), (error: unknown) => {
          assert.ok(error instanceof LaggedError);
          assert.deepStrictEqual(
            {
              code: error.code,
              reason: error.reason,
              message: error.message,
              metadata: error.metadata,
            },
            {
              code: "resource_exhausted",
              reason: "SUBSCRIBER_LAGGED",
              message:
                "watcher fell more than 2 events behind and was dropped; reconnect (with send_initial_snapshot) to resynchronise",
              metadata: { capacity: "2" },
            },
          );
          return true;
        });

        feed.closeAll();
        assert.deepStrictEqual(await Array.fromAsync(fast), published);
      });
    }
  },
);

Deno.test("EventFeed.publish() never waits for a subscriber", SANITIZE, async (t) => {
  await t.step("returns the event synchronously while nobody reads", () => {
    const feed = new EventFeed({ now, capacity: 3 });
    const idle = feed.subscribe();
    const results: unknown[] = [];
    for (let i = 1; i <= 5; i++) {
      results.push(feed.publish(operation(`op-${i}`), { message: "step" }));
    }
    assert.ok(results.every((r) => !(r instanceof Promise) && typeof r === "object"));
    assert.deepStrictEqual({ pending: idle.pending, closed: idle.closed }, {
      pending: 0,
      closed: true,
    });
  });

  await t.step("queues the event before returning and wakes a waiting reader", async () => {
    const feed = new EventFeed({ now });
    const reader = feed.subscribe();
    const waiting = feed.subscribe();
    const next = waiting.next();
    const published = feed.publish(operation("op-1"), { message: "step" });
    assert.strictEqual(reader.pending, 1);
    assert.deepStrictEqual(await next, { value: published, done: false });
    feed.closeAll();
  });
});

Deno.test(
  "EventFeed.subscribe() ends the subscription when its signal aborts",
  SANITIZE,
  async (t) => {
    await t.step("a waiting reader finishes and the subscription detaches", async () => {
      const feed = new EventFeed({ now });
      const controller = new AbortController();
      const subscription = feed.subscribe({ signal: controller.signal });
      assert.strictEqual(feed.subscriberCount, 1);
      const next = subscription.next();
      controller.abort();
      assert.deepStrictEqual(await next, { value: undefined, done: true });
      publishAll(feed, ["op-1"]);
      assert.deepStrictEqual(
        {
          subscribers: feed.subscriberCount,
          closed: subscription.closed,
          pending: subscription.pending,
        },
        { subscribers: 0, closed: true, pending: 0 },
      );
    });

    await t.step("events queued before the abort are still delivered", async () => {
      const feed = new EventFeed({ now });
      const controller = new AbortController();
      const subscription = feed.subscribe({ signal: controller.signal });
      const published = publishAll(feed, ["op-1", "op-2"]);
      controller.abort();
      assert.deepStrictEqual(await Array.fromAsync(subscription), published);
    });

    await t.step("an already aborted signal", async () => {
      const feed = new EventFeed({ now });
      const subscription = feed.subscribe({ signal: AbortSignal.abort() });
      publishAll(feed, ["op-1"]);
      assert.deepStrictEqual(
        { subscribers: feed.subscriberCount, next: await subscription.next() },
        { subscribers: 0, next: { value: undefined, done: true } },
      );
    });

    await t.step("the abort listener is removed when the subscription ends otherwise", async () => {
      const feed = new EventFeed({ now });
      const signal = new AbortController().signal;
      const added: string[] = [];
      const removed: string[] = [];
      const add = signal.addEventListener.bind(signal);
      const remove = signal.removeEventListener.bind(signal);
      signal.addEventListener = (
        type: string,
        ...rest: [EventListener, AddEventListenerOptions]
      ) => {
        added.push(type);
        add(type, ...rest);
      };
      signal.removeEventListener = (type: string, ...rest: [EventListener]) => {
        removed.push(type);
        remove(type, ...rest);
      };
      const subscription = feed.subscribe({ signal });
      await subscription.return();
      assert.deepStrictEqual({ added, removed }, { added: ["abort"], removed: ["abort"] });
    });
  },
);

Deno.test(
  "EventSubscription.return() ends the subscription and detaches it",
  SANITIZE,
  async (t) => {
    await t.step("called directly", async () => {
      const feed = new EventFeed({ now });
      const subscription = feed.subscribe();
      assert.deepStrictEqual(await subscription.return(), { value: undefined, done: true });
      publishAll(feed, ["op-1"]);
      assert.deepStrictEqual(
        { subscribers: feed.subscriberCount, next: await subscription.next() },
        { subscribers: 0, next: { value: undefined, done: true } },
      );
    });

    await t.step("called by a for await loop that breaks", async () => {
      const feed = new EventFeed({ now });
      const subscription = feed.subscribe();
      const published = publishAll(feed, ["op-1", "op-2"]);
      const read: OperationEvent[] = [];
      for await (const received of subscription) {
        read.push(received);
        break;
      }
      assert.deepStrictEqual(
        { read, subscribers: feed.subscriberCount, closed: subscription.closed },
        { read: [published[0]], subscribers: 0, closed: true },
      );
    });
  },
);

Deno.test(
  "EventSubscription[Symbol.dispose]() ends the subscription and detaches it",
  SANITIZE,
  () => {
    const feed = new EventFeed({ now });
    {
      using subscription = feed.subscribe();
      assert.deepStrictEqual({ subscribers: feed.subscriberCount, closed: subscription.closed }, {
        subscribers: 1,
        closed: false,
      });
    }
    assert.strictEqual(feed.subscriberCount, 0);
  },
);

Deno.test("EventFeed.closeAll() ends every subscription after it drains", SANITIZE, async () => {
  const feed = new EventFeed({ now });
  const busy = feed.subscribe();
  const waiting = feed.subscribe({ filter: () => false });
  const next = waiting.next();
  const published = publishAll(feed, ["op-1", "op-2"]);
  feed.closeAll();
  assert.strictEqual(feed.subscriberCount, 0);
  assert.deepStrictEqual(
    { busy: await Array.fromAsync(busy), waiting: await next },
    { busy: published, waiting: { value: undefined, done: true } },
  );
});

Deno.test("EventFeed rejects a capacity that is not a positive integer", SANITIZE, async (t) => {
  for (const capacity of [0, -1, 1.5, Number.NaN]) {
    await t.step(`new EventFeed({ capacity: ${capacity} })`, () => {
      assert.throws(() => new EventFeed({ capacity }), {
        name: "RangeError",
        message: `EventFeed capacity must be a positive integer: got ${capacity}`,
      });
    });

    await t.step(`subscribe({ capacity: ${capacity} })`, () => {
      const feed = new EventFeed();
      assert.throws(() => feed.subscribe({ capacity }), {
        name: "RangeError",
        message: `Subscriber capacity must be a positive integer: got ${capacity}`,
      });
      assert.strictEqual(feed.subscriberCount, 0);
    });
  }
});

function chunk(
  operationId: string,
  seq: number,
  line: string,
  stream: LogStream = "stdout",
): LogChunk {
  return create(LogChunkSchema, {
    ts: timestampFromDate(NOW),
    operationId,
    stream,
    data: new TextEncoder().encode(`${line}\n`),
    seq: BigInt(seq),
  });
}

function notice(operationId: string, text: string): LogChunk {
  return create(LogChunkSchema, {
    ts: timestampFromDate(NOW),
    operationId,
    stream: "stderr",
    data: new TextEncoder().encode(`${text}\n`),
    seq: 0n,
  });
}

Deno.test(
  "LogJournal.append() numbers each operation's lines from 1 without gaps",
  SANITIZE,
  () => {
    const journal = new LogJournal({ now });
    const appended = [
      journal.append("op-1", "first"),
      journal.append("op-2", "other"),
      journal.append("op-1", "second"),
      journal.append("op-1", "third"),
    ];
    assert.deepStrictEqual(appended, [
      chunk("op-1", 1, "first"),
      chunk("op-2", 1, "other"),
      chunk("op-1", 2, "second"),
      chunk("op-1", 3, "third"),
    ]);
    assert.deepStrictEqual(
      {
        "op-1": journal.lines("op-1"),
        "op-2": journal.lines("op-2"),
        "op-3": journal.lines("op-3"),
      },
      {
        "op-1": [chunk("op-1", 1, "first"), chunk("op-1", 2, "second"), chunk("op-1", 3, "third")],
        "op-2": [chunk("op-2", 1, "other")],
        "op-3": [],
      },
    );
  },
);

Deno.test("LogJournal.append() ends data with a newline and keeps the stream", SANITIZE, () => {
  const journal = new LogJournal({ now });
  const out = journal.append("op-1", "[reboot] Rebooting machine-1");
  const err = journal.append("op-1", "[reboot] BMC did not answer", "stderr");
  assert.deepStrictEqual(
    [out, err].map((c) => ({ stream: c?.stream, data: new TextDecoder().decode(c?.data) })),
    [
      { stream: "stdout", data: "[reboot] Rebooting machine-1\n" },
      { stream: "stderr", data: "[reboot] BMC did not answer\n" },
    ],
  );
});

Deno.test(
  "LogJournal hands out the chunk append() returned, however and whenever a line is read",
  SANITIZE,
  async () => {
    const times = [0, 1, 999, 1_735_689_600_123, -1, -1_001];
    let tick = 0;
    const journal = new LogJournal({ now: () => new Date(times[tick++ % times.length]) });
    const lines: [string, LogStream][] = [
      ["plain ascii", "stdout"],
      ["", "stderr"],
      ["grüße → ✓ 🚀", "stdout"],
      ["lone \ud800 surrogate", "stderr"],
      ["embedded\nnewline\u0000nul\u007f", "stdout"],
      ["x".repeat(200), "stdout"],
    ];
    const appended = lines.map(([line, stream]) => journal.append("op-1", line, stream)!);
    const encoder = new TextEncoder();
    for (const [i, c] of appended.entries()) {
      assert.ok(Object.isFrozen(c) && Object.isFrozen(c.ts));
      assert.deepStrictEqual(c.data, encoder.encode(`${lines[i][0]}\n`));
      assert.deepStrictEqual(c.ts, timestampFromDate(new Date(times[i])));
    }
    assert.deepStrictEqual(journal.lines("op-1"), appended);

    // Readers reading at the same time share chunks; every chunk equals what append() returned.
    const first = journal.read("op-1");
    const second = journal.read("op-1");
    const a = await first.next();
    const b = await second.next();
    assert.strictEqual(a.value, b.value);
    const live = first.next();
    const late = journal.append("op-1", "late line")!;
    journal.end("op-1");
    const rest = [(await live).value, ...await Array.fromAsync(first)];
    assert.strictEqual(rest[rest.length - 1], late);
    const all = [a.value, ...rest];
    assert.deepStrictEqual(all, [...appended, late]);
    assert.deepStrictEqual([b.value, ...await Array.fromAsync(second)], all);
    for (const c of all) assert.ok(Object.isFrozen(c) && Object.isFrozen(c.ts));
    assert.deepStrictEqual(await Array.fromAsync(journal.read("op-1")), all);
  },
);

Deno.test(
  "LogJournal gives its backing every appended chunk and replays loaded chunks as they are",
  SANITIZE,
  async () => {
    const stored = new Map<string, LogChunk[]>();
    const journal = new LogJournal({
      now,
      maxLinesPerOperation: 8,
      backing: {
        append: (c) => void stored.set(c.operationId, [...stored.get(c.operationId) ?? [], c]),
        trim: (id, firstSeq) =>
          void stored.set(id, (stored.get(id) ?? []).filter((c) => c.seq >= BigInt(firstSeq))),
        load: (id) => [...stored.get(id) ?? []],
      },
    });
    const appended = [1, 2, 3].map((i) => journal.append("op-1", `line ${i}`)!);
    assert.deepStrictEqual(stored.get("op-1"), appended);
    assert.strictEqual(stored.get("op-1")![2], appended[2]);

    const loaded = [chunk("op-2", 5, "five"), chunk("op-2", 6, "six", "stderr")];
    stored.set("op-2", loaded);
    const more = journal.append("op-2", "seven")!;
    assert.deepStrictEqual(more, chunk("op-2", 7, "seven"));
    journal.end("op-2");
    const [notice, ...read] = await Array.fromAsync(journal.read("op-2"));
    assert.strictEqual(notice.seq, 0n); // lines 1-4 are not retained
    assert.strictEqual(read[0], loaded[0]);
    assert.strictEqual(read[1], loaded[1]);
    assert.deepStrictEqual(read, [...loaded, more]);
    assert.deepStrictEqual(journal.lines("op-2"), read);
  },
);

Deno.test(
  "LogJournal.read() replays retained lines, follows new ones and finishes after end()",
  SANITIZE,
  async () => {
    const journal = new LogJournal({ now });
    journal.append("op-1", "one");
    journal.append("op-1", "two");
    const reader = journal.read("op-1");
    assert.deepStrictEqual([await reader.next(), await reader.next()], [
      { value: chunk("op-1", 1, "one"), done: false },
      { value: chunk("op-1", 2, "two"), done: false },
    ]);

    const third = reader.next();
    journal.append("op-1", "three", "stderr");
    assert.deepStrictEqual(await third, {
      value: chunk("op-1", 3, "three", "stderr"),
      done: false,
    });

    const last = reader.next();
    journal.end("op-1");
    assert.deepStrictEqual(await last, { value: undefined, done: true });
  },
);

Deno.test("LogJournal.read() after end() replays everything and finishes", SANITIZE, async () => {
  const journal = new LogJournal({ now });
  journal.append("op-1", "one");
  journal.append("op-1", "two", "stderr");
  journal.end("op-1");
  assert.deepStrictEqual(await Array.fromAsync(journal.read("op-1")), [
    chunk("op-1", 1, "one"),
    chunk("op-1", 2, "two", "stderr"),
  ]);
});

Deno.test(
  "LogJournal.read() reports lines dropped by maxLinesPerOperation",
  SANITIZE,
  async (t) => {
    const retainedTail = Array.from(
      { length: 10 },
      (_, i) => chunk("op-1", 16 + i, `line ${16 + i}`),
    );

    await t.step("to a reader that starts after the drop", async () => {
      const journal = new LogJournal({ now, maxLinesPerOperation: 10 });
      for (let i = 1; i <= 25; i++) journal.append("op-1", `line ${i}`);
      journal.end("op-1");
      assert.deepStrictEqual(journal.lines("op-1"), retainedTail);
      assert.deepStrictEqual(await Array.fromAsync(journal.read("op-1")), [
        notice(
          "op-1",
          "[bmdemo] 15 earlier lines were dropped (the journal keeps the last 10 lines of an operation)",
        ),
        ...retainedTail,
      ]);
    });

    await t.step("to a reader that fell behind", async () => {
      const journal = new LogJournal({ now, maxLinesPerOperation: 10 });
      journal.append("op-1", "line 1");
      const reader = journal.read("op-1");
      assert.deepStrictEqual(await reader.next(), {
        value: chunk("op-1", 1, "line 1"),
        done: false,
      });
      for (let i = 2; i <= 25; i++) journal.append("op-1", `line ${i}`);
      journal.end("op-1");
      assert.deepStrictEqual(await Array.fromAsync(reader), [
        notice(
          "op-1",
          "[bmdemo] 14 earlier lines were dropped (the journal keeps the last 10 lines of an operation)",
        ),
        ...retainedTail,
      ]);
    });
  },
);

Deno.test(
  "LogJournal.end() forgets the oldest journals beyond maxFinishedOperations",
  SANITIZE,
  async () => {
    const journal = new LogJournal({ now, maxFinishedOperations: 2 });
    for (const id of ["op-1", "op-2", "op-3"]) {
      journal.append(id, `log of ${id}`);
      journal.end(id);
    }
    assert.deepStrictEqual(
      {
        "op-1": await Array.fromAsync(journal.read("op-1")),
        "op-2": await Array.fromAsync(journal.read("op-2")),
        "op-3": await Array.fromAsync(journal.read("op-3")),
        lines: journal.lines("op-1"),
      },
      {
        "op-1": [
          notice(
            "op-1",
            "[bmdemo] the log of op-1 is no longer retained (the server keeps the logs of the last 2 finished operations)",
          ),
        ],
        "op-2": [chunk("op-2", 1, "log of op-2")],
        "op-3": [chunk("op-3", 1, "log of op-3")],
        lines: [],
      },
    );
  },
);

Deno.test("LogJournal.append() after end() returns undefined and counts the line", SANITIZE, () => {
  const journal = new LogJournal({ now });
  journal.append("op-1", "before");
  journal.end("op-1");
  assert.strictEqual(journal.droppedAfterEnd, 0);
  const late = [journal.append("op-1", "late"), journal.append("op-1", "later", "stderr")];
  journal.end("op-1");
  assert.deepStrictEqual(
    { late, dropped: journal.droppedAfterEnd, lines: journal.lines("op-1") },
    { late: [undefined, undefined], dropped: 2, lines: [chunk("op-1", 1, "before")] },
  );
});

Deno.test("LogJournal.read() finishes when its signal aborts", SANITIZE, async (t) => {
  await t.step("while waiting for a line", async () => {
    const journal = new LogJournal({ now });
    const controller = new AbortController();
    journal.append("op-1", "one");
    const reader = journal.read("op-1", { signal: controller.signal });
    assert.deepStrictEqual(await reader.next(), { value: chunk("op-1", 1, "one"), done: false });
    const next = reader.next();
    controller.abort();
    assert.deepStrictEqual(await next, { value: undefined, done: true });
  });

  await t.step("before reading anything", async () => {
    const journal = new LogJournal({ now });
    journal.append("op-1", "one");
    assert.deepStrictEqual(
      await Array.fromAsync(journal.read("op-1", { signal: AbortSignal.abort() })),
      [],
    );
  });
});

Deno.test("LogJournal rejects bounds that are not positive integers", SANITIZE, async (t) => {
  for (const name of ["maxLinesPerOperation", "maxFinishedOperations"] as const) {
    for (const value of [0, -1, 2.5]) {
      await t.step(`${name}: ${value}`, () => {
        assert.throws(() => new LogJournal({ [name]: value }), {
          name: "RangeError",
          message: `LogJournal ${name} must be a positive integer: got ${value}`,
        });
      });
    }
  }
});

Deno.test(
  "EventFeed.publish() runs no subscriber's filter: its cost does not depend on the subscribers",
  SANITIZE,
  async () => {
    const feed = new EventFeed({ now });
    let calls = 0;
    const subscriptions = Array.from({ length: 1000 }, () =>
      feed.subscribe({
        filter: () => {
          calls++;
          return true;
        },
      }));
    const published = publishAll(feed, ["op-1", "op-2", "op-3"]);
    assert.strictEqual(calls, 0);
    // Each reader filters what it reads, when it reads it.
    assert.deepStrictEqual(await subscriptions[0].next(), { value: published[0], done: false });
    assert.strictEqual(calls, 1);
    feed.closeAll();
  },
);

Deno.test(
  "EventFeed: a stalled subscriber pins at most the capacity, and one that reads keeps every event",
  SANITIZE,
  async () => {
    const capacity = 16;
    const feed = new EventFeed({ now, capacity });
    const stalled = feed.subscribe();
    const reader = feed.subscribe();
    const read: OperationEvent[] = [];
    const published: OperationEvent[] = [];
    let mostRetained = 0;
    for (let i = 1; i <= 1000; i++) {
      published.push(...publishAll(feed, [`op-${i}`]));
      mostRetained = Math.max(mostRetained, feed.retainedCount);
      const { value, done } = await reader.next();
      assert.ok(!done);
      read.push(value);
    }
    assert.deepStrictEqual(read, published);
    assert.ok(mostRetained <= capacity, `retained ${mostRetained} events`);
    assert.deepStrictEqual({ stalled: stalled.closed, reader: reader.closed }, {
      stalled: true,
      reader: false,
    });
    await assert.rejects(stalled.next(), LaggedError);
    // Once every live subscriber read everything, the feed lets the events go.
    publishAll(feed, Array.from({ length: capacity }, (_, i) => `late-${i}`));
    for (let i = 0; i < capacity; i++) await reader.next();
    publishAll(feed, Array.from({ length: capacity / 8 }, (_, i) => `last-${i}`));
    assert.ok(feed.retainedCount <= capacity / 8, `retained ${feed.retainedCount} events`);
    feed.closeAll();
  },
);

Deno.test(
  "EventFeed.closeAll(reason) delivers the events published before, then throws the reason",
  SANITIZE,
  async () => {
    const feed = new EventFeed({ now });
    const subscription = feed.subscribe();
    const published = publishAll(feed, ["op-1", "op-2"]);
    const reason = new Error("stopping");
    feed.closeAll(reason);
    publishAll(feed, ["op-3"]);
    const read: OperationEvent[] = [];
    await assert.rejects(async () => {
      for await (const received of subscription) read.push(received);
    }, (error) => error === reason);
    assert.deepStrictEqual(read, published);
  },
);
