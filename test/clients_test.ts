/**
 * Clients that misbehave, against a real server: a watcher that never reads (the server ends
 * its subscription with RESOURCE_EXHAUSTED instead of buffering without bound, while a watcher
 * that reads receives every event), and clients that leave a stream mid-way (the server
 * releases the subscription or log reader and keeps serving). Memory is bounded by the
 * subscription count and queue bound, asserted directly rather than through RSS. No sleeps:
 * the tests wait on events, provider hooks and the server's own subscription close callbacks.
 *
 * Permissions: `--allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import type { Engine } from "../lib/engine/mod.ts";
import type { EventSubscription, SubscribeOptions } from "../lib/engine/event_subscription.ts";
import {
  type LogChunk,
  MachineService,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { startServer } from "../lib/grpc/server.ts";
import { Code, connectClient } from "../lib/client/mod.ts";
import { isTerminalPhase } from "../lib/model/lifecycle.ts";
import {
  enterMaintenance,
  importMachines,
  rejectsWithCode,
  SANITIZE,
  testEngine,
} from "./helpers.ts";
import { succeededEventCount } from "../scripts/load_checks.ts";

/** Records every subscription the server's engine opens, and when each one closes. */
function spySubscriptions(engine: Engine): { opened: { closed: Promise<void> }[] } {
  const opened: { closed: Promise<void> }[] = [];
  const subscribe = engine.events.subscribe.bind(engine.events);
  engine.events.subscribe = (options?: SubscribeOptions): EventSubscription => {
    const subscription = subscribe(options);
    const closed = Promise.withResolvers<void>();
    subscription.onClose(() => closed.resolve());
    opened.push({ closed: closed.promise });
    return subscription;
  };
  return { opened };
}

/** Records when each log stream the server's engine serves ends. */
function spyLogReaders(engine: Engine): { ended: Promise<void>[]; open: () => number } {
  const ended: Promise<void>[] = [];
  let open = 0;
  const streamLogs = engine.streamLogs.bind(engine);
  engine.streamLogs = (operationId, options) => {
    const source = streamLogs(operationId, options);
    const done = Promise.withResolvers<void>();
    ended.push(done.promise);
    open++;
    return (async function* (): AsyncGenerator<LogChunk> {
      try {
        yield* source;
      } finally {
        open--;
        done.resolve();
      }
    })();
  };
  return { ended, open: () => open };
}

/** REIMAGE bursts after the ENTER_MAINTENANCE one in the stalled-watcher test. */
const REIMAGES = 6;

Deno.test(
  "a watcher that never reads is ended; watchers that read get every event",
  SANITIZE,
  async () => {
    // Events of any operation a watcher may fall behind: more than one burst (a reader has no
    // chance to run during a synchronous burst), far fewer than all of them.
    const capacity = 1024;
    await using server = await startServer({
      port: 0,
      engine: testEngine({}, { events: { capacity } }),
    });
    const engine = server.engine;
    const count = 100;
    importMachines(engine, count);
    using operations = connectClient(OperationService, server.address);
    using stalledChannel = connectClient(OperationService, server.address);
    const baseline = engine.events.subscriberCount;
    const subscriptions = spySubscriptions(engine);
    // Every event in publication order, and each operation's terminal event, from the feed.
    const published: OperationEvent[] = [];
    const expected = new Map<string, number>();
    let terminals = 0;
    let allDone = Promise.withResolvers<void>();
    const unlisten = engine.events.listen((event) => {
      published.push(event);
      if (isTerminalPhase(event.snapshot!.phase) && ++terminals % count === 0) allDone.resolve();
    });

    // One watcher that never reads (its own channel), and one reading watcher per machine
    // (each queue sees one machine's events only, so a burst over all machines cannot make a
    // reader lag). All wait for the marker, so all are subscribed before anything happens.
    const stalled = stalledChannel.watchOperations({ sendInitialSnapshot: true });
    assert.equal((await stalled.next()).value?.message, "Snapshot complete");
    const readers = Array.from(
      { length: count },
      (_, i) =>
        operations.watchOperations({
          filter: `machine_id=machine-${i + 1}`,
          sendInitialSnapshot: true,
        }),
    );
    for (const reader of readers) {
      assert.equal((await reader.next()).value?.message, "Snapshot complete");
    }
    assert.equal(engine.events.subscriberCount, baseline + 1 + count);
    const perOperation = new Map<string, number>();
    let readCount = 0;
    const reading = readers.map(async (reader) => {
      let seen = 0;
      for await (const event of reader) {
        const id = event.snapshot!.operationId;
        perOperation.set(id, (perOperation.get(id) ?? 0) + 1);
        readCount++;
        // One operation per burst and machine: stop after the last terminal event.
        if (isTerminalPhase(event.snapshot!.phase) && ++seen === 1 + REIMAGES) return;
      }
    });

    // Synchronous bursts of `count` operations: together more events than the stalled watcher's
    // HTTP/2 windows and the server's per-stream budget hold, plus `capacity`.
    const burst = (type: OperationType, round = 0) => {
      for (let i = 1; i <= count; i++) {
        const { operation } = engine.startOperation({
          machineId: `machine-${i}`,
          requestId: `${type}-${round}-${i}`,
          type,
        });
        expected.set(operation.operationId, succeededEventCount(type));
      }
    };
    burst(OperationType.ENTER_MAINTENANCE);
    await allDone.promise;
    for (let round = 0; round < REIMAGES; round++) {
      allDone = Promise.withResolvers<void>();
      burst(OperationType.REIMAGE, round);
      await allDone.promise;
    }
    await Promise.all(reading);
    unlisten();

    // Every reader saw every event of its machine's operations, and they all succeeded.
    assert.deepEqual(perOperation, expected);
    const total = [...expected.values()].reduce((a, b) => a + b, 0);
    assert.equal(readCount, total);
    assert.equal(published.length, total);
    assert.ok(
      published.filter((e) => isTerminalPhase(e.snapshot!.phase)).every((e) =>
        e.snapshot!.phase === OperationPhase.SUCCEEDED
      ),
    );

    // The stalled watcher's subscription was dropped while it read nothing (once its stream
    // stalled, the feed went on without it), and the readers' subscriptions ended when they
    // left their loops.
    await Promise.all(subscriptions.opened.map((s) => s.closed));
    assert.equal(engine.events.subscriberCount, baseline);

    // Reading it now: a gap-free prefix of the events (what the server wrote before its stream
    // stalled), then RESOURCE_EXHAUSTED. Deno 2.9.3's node:http2 may send the trailers ahead of
    // the last data frames, so only a prefix holds over the wire.
    const got: OperationEvent[] = [];
    await rejectsWithCode(
      (async () => {
        for await (const event of stalled) got.push(event);
      })(),
      Code.ResourceExhausted,
      new RegExp(`fell more than ${capacity} events behind`),
    );
    assert.ok(got.length < published.length - capacity, `stalled got ${got.length}`);
    const key = (e: OperationEvent) => `${e.snapshot!.operationId} ${e.message}`;
    assert.deepEqual(got.map(key), published.slice(0, got.length).map(key));

    // The server still serves.
    using machines = connectClient(MachineService, server.address);
    assert.equal((await machines.listMachines({ pageSize: 1000 })).machines.length, count);
  },
);

Deno.test(
  "clients that leave a watch or a log stream mid-way release the server's resources",
  SANITIZE,
  async () => {
    const gate = Promise.withResolvers<void>();
    const entered = Promise.withResolvers<void>();
    await using server = await startServer({
      port: 0,
      engine: testEngine({
        hooks: {
          repave: () => {
            entered.resolve();
            return gate.promise;
          },
        },
      }),
    });
    const engine = server.engine;
    importMachines(engine, 2);
    await enterMaintenance(engine, "machine-1");
    const subscriptions = spySubscriptions(engine);
    const logReaders = spyLogReaders(engine);
    using operations = connectClient(OperationService, server.address);
    using machines = connectClient(MachineService, server.address);
    const baseline = engine.events.subscriberCount;

    // A reimage held inside its repave step, so its log and its events stay live.
    const reimage = await machines.reimageMachine({ machineId: "machine-1", requestId: "r-1" });
    await entered.promise;

    // 1. A log reader that reads a line and returns.
    const logs = operations.streamOperationLogs({ operationId: reimage.operationId });
    const first = await logs.next();
    assert.equal(first.done, false);
    assert.equal(logReaders.open(), 1);
    await logs.return?.();
    await logReaders.ended[0];
    assert.equal(logReaders.open(), 0);

    // 2. A watcher cancelled through its AbortSignal while it waits for the next event.
    const controller = new AbortController();
    const watch = operations.watchOperations({ sendInitialSnapshot: true }, {
      signal: controller.signal,
    });
    const snap = await watch.next();
    assert.equal(snap.value?.snapshot?.operationId, reimage.operationId);
    const marker = await watch.next();
    assert.equal(marker.value?.message, "Snapshot complete");
    assert.equal(engine.events.subscriberCount, baseline + 1);
    const pending = watch.next();
    controller.abort();
    await rejectsWithCode(pending, Code.Canceled);
    await subscriptions.opened[0].closed;
    assert.equal(engine.events.subscriberCount, baseline);

    // 3. Twenty watchers and twenty log readers opened and dropped without reading.
    const many = Array.from({ length: 20 }, () => [
      operations.watchOperations({ filter: "machine_id=machine-1" }),
      operations.streamOperationLogs({ operationId: reimage.operationId }),
    ]).flat();
    // Round trips until the server holds every one of them (each RPC lets it make progress).
    while (subscriptions.opened.length < 1 + 20 || logReaders.ended.length < 1 + 20) {
      await machines.getMachine({ machineId: "machine-1" });
    }
    assert.equal(engine.events.subscriberCount, baseline + 20);
    for (const stream of many) await stream.return?.();
    await Promise.all(subscriptions.opened.map((s) => s.closed));
    await Promise.all(logReaders.ended);
    assert.equal(engine.events.subscriberCount, baseline);
    assert.equal(logReaders.open(), 0);

    // The server keeps serving and the operation finishes normally, with a complete log.
    gate.resolve();
    const done: LogChunk[] = [];
    for await (
      const chunk of operations.streamOperationLogs({ operationId: reimage.operationId })
    ) {
      done.push(chunk);
    }
    assert.ok(done.length > 1);
    const finished = await operations.getOperation({ operationId: reimage.operationId });
    assert.equal(finished.phase, OperationPhase.SUCCEEDED);
    assert.equal(engine.events.subscriberCount, baseline);
    assert.equal(logReaders.open(), 0);
  },
);
