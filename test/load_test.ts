/**
 * 200 concurrent gRPC clients for a few seconds against an in-process server over the
 * zero-delay engine (the workload of `scripts/load.ts`): reads mixed with operations on each
 * client's own machines, and watchers that read every event. Afterwards: no error but the
 * documented racing ones (MACHINE_BUSY, PHASE_PRECONDITION), every operation terminal (all
 * pages of ListOperations), and every watcher that kept up saw exactly the events the engine
 * published for every operation.
 *
 * Permissions: `--allow-net --allow-env --allow-read`.
 */

import assert from "node:assert/strict";
import { isTerminalPhase } from "../lib/model/lifecycle.ts";
import { startServer } from "../lib/grpc/server.ts";
import { runLoad } from "../scripts/load.ts";
import { watcherMismatches } from "../scripts/load_checks.ts";
import { SANITIZE, testEngine } from "./helpers.ts";

Deno.test("200 concurrent clients: only documented errors, nothing lost", SANITIZE, async () => {
  // The watchers' queues must hold a zero-delay burst of 200 clients (each has at most two
  // operations active, ≤ 13 events each).
  await using server = await startServer({
    port: 0,
    engine: testEngine({}, { events: { capacity: 16_384 } }),
  });
  const engine = server.engine;
  // Each subscription the server opens, so the test can await its release (no polling).
  const released: Promise<void>[] = [];
  const subscribe = engine.events.subscribe.bind(engine.events);
  engine.events.subscribe = (options) => {
    const subscription = subscribe(options);
    const closed = Promise.withResolvers<void>();
    subscription.onClose(() => closed.resolve());
    released.push(closed.promise);
    return subscription;
  };
  // What the engine published, per operation, and when everything it created has ended.
  const published = new Map<string, number>();
  let active = 0;
  let idle: PromiseWithResolvers<void> | undefined;
  const unlisten = engine.events.listen((event) => {
    const op = event.snapshot!;
    published.set(op.operationId, (published.get(op.operationId) ?? 0) + 1);
    if (event.message === "Operation created") active++;
    if (isTerminalPhase(op.phase) && --active === 0) idle?.resolve();
  });
  try {
    const result = await runLoad({
      address: server.address,
      clients: 200,
      durationMs: 5_000,
      channels: 20,
      watchers: 4,
      machinesPerClient: 2,
      settled: () => {
        if (active === 0) return Promise.resolve();
        idle = Promise.withResolvers<void>();
        return idle.promise;
      },
    });

    assert.deepEqual(result.unexpected, []);
    for (const key of Object.keys(result.errors)) {
      assert.match(key, /^FAILED_PRECONDITION\/(MACHINE_BUSY|PHASE_PRECONDITION)$/);
    }
    assert.ok(result.operationsStarted > 200, `only ${result.operationsStarted} operations`);
    assert.equal(result.operations.length, result.operationsStarted);
    assert.equal(result.operations.length, published.size);
    assert.deepEqual(result.operations.filter((op) => !isTerminalPhase(op.phase)), []);
    assert.ok(result.rpcs > 1000, `only ${result.rpcs} RPCs`);

    const keptUp = result.watchers.filter((w) => w.error === undefined);
    assert.equal(
      keptUp.length,
      result.watchers.length,
      JSON.stringify(result.watchers.map((w) => w.error)),
    );
    for (const watcher of keptUp) {
      assert.deepEqual(watcherMismatches(watcher, published).slice(0, 5), []);
    }
    // Every subscription the watchers held was released.
    assert.equal(released.length, result.watchers.length);
    await Promise.all(released);
    assert.equal(engine.events.subscriberCount, 0);
  } finally {
    unlisten();
  }
});
