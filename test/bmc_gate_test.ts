import assert from "node:assert/strict";
import { createBmcGate } from "../lib/provider/bmc_gate.ts";
import { ProviderError } from "../lib/provider/mod.ts";
import { SANITIZE } from "./helpers.ts";

const NEVER = new AbortController().signal;

/** An action held open until released; `started` resolves when the gate runs it. */
function heldAction<T>(value: T) {
  const started = Promise.withResolvers<void>();
  const done = Promise.withResolvers<T>();
  return {
    action: () => (started.resolve(), done.promise),
    started: started.promise,
    release: () => done.resolve(value),
  };
}

Deno.test(
  "createBmcGate() runs at most N calls per key and starts waiters FIFO",
  SANITIZE,
  async () => {
    const gate = createBmcGate({ concurrency: 2 });
    const held = [1, 2, 3, 4].map((n) => heldAction(n));
    const order: number[] = [];
    const results = held.map((h, i) =>
      gate.run("bmc-a", NEVER, () => (order.push(i + 1), h.action()))
    );
    await Promise.all([held[0].started, held[1].started]);
    assert.deepEqual([gate.inFlight("bmc-a"), gate.waiting("bmc-a")], [2, 2]);
    // Another key is not held up by bmc-a.
    assert.equal(await gate.run("bmc-b", NEVER, () => Promise.resolve("b")), "b");
    held[1].release();
    await held[2].started;
    assert.deepEqual(order, [1, 2, 3]);
    held[0].release();
    await held[3].started;
    held[2].release();
    held[3].release();
    assert.deepEqual(await Promise.all(results), [1, 2, 3, 4]);
    assert.deepEqual(order, [1, 2, 3, 4]);
    assert.deepEqual([gate.inFlight("bmc-a"), gate.waiting("bmc-a")], [0, 0]);
  },
);

Deno.test("createBmcGate() frees the slot when an action rejects", SANITIZE, async () => {
  const gate = createBmcGate({ concurrency: 1 });
  await assert.rejects(gate.run("k", NEVER, () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(await gate.run("k", NEVER, () => Promise.resolve(1)), 1);
  assert.equal(gate.inFlight("k"), 0);
});

Deno.test(
  "createBmcGate() drops a waiter whose signal aborts, with its reason",
  SANITIZE,
  async () => {
    const gate = createBmcGate({ concurrency: 1 });
    const first = heldAction("first");
    const running = gate.run("k", NEVER, first.action);
    await first.started;
    const abort = new AbortController();
    let ran = false;
    const waiting = gate.run("k", abort.signal, () => (ran = true, Promise.resolve("never")));
    const third = gate.run("k", NEVER, () => Promise.resolve("third"));
    assert.equal(gate.waiting("k"), 2);
    const reason = new Error("step timed out");
    abort.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    assert.equal(gate.waiting("k"), 1);
    first.release();
    assert.deepEqual(await Promise.all([running, third]), ["first", "third"]);
    assert.equal(ran, false);
  },
);

Deno.test(
  "createBmcGate() rejects an already aborted call without running it",
  SANITIZE,
  async () => {
    const gate = createBmcGate({ concurrency: 1 });
    const reason = new Error("canceled");
    let ran = false;
    await assert.rejects(
      gate.run("k", AbortSignal.abort(reason), () => (ran = true, Promise.resolve())),
      (error) => error === reason,
    );
    assert.equal(ran, false);
  },
);

Deno.test("createBmcGate() refuses a call once the key's queue is full", SANITIZE, async () => {
  const gate = createBmcGate({ concurrency: 1, maxQueue: 2 });
  const first = heldAction(0);
  const calls = [gate.run("https://bmc:443", NEVER, first.action)];
  await first.started;
  calls.push(gate.run("https://bmc:443", NEVER, () => Promise.resolve(1)));
  calls.push(gate.run("https://bmc:443", NEVER, () => Promise.resolve(2)));
  await assert.rejects(
    gate.run("https://bmc:443", NEVER, () => Promise.resolve(3)),
    (error) =>
      error instanceof ProviderError && !error.permanent &&
      /Cannot queue a call to BMC https:\/\/bmc:443 as 2 calls already wait/.test(error.message),
  );
  first.release();
  assert.deepEqual(await Promise.all(calls), [0, 1, 2]);
});

Deno.test(
  "createBmcGate() keeps 50 concurrent callers on one key within the limit",
  SANITIZE,
  async () => {
    const gate = createBmcGate({ concurrency: 4 });
    let active = 0;
    let peak = 0;
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        gate.run("bmc", NEVER, async () => {
          active++;
          peak = Math.max(peak, active);
          // Yield a few turns so that calls overlap as they would on a slow BMC.
          for (let turn = 0; turn < 3; turn++) await Promise.resolve();
          active--;
          return i;
        })),
    );
    assert.equal(results.length, 50);
    assert.equal(peak, 4);
    assert.equal(gate.inFlight("bmc"), 0);
  },
);

Deno.test("createBmcGate() refuses a bad concurrency with the option named", () => {
  assert.throws(() => createBmcGate({ concurrency: 0 }), /concurrency must be a positive integer/);
  assert.throws(() => createBmcGate({ maxQueue: 1.5 }), /maxQueue must be a positive integer/);
});
