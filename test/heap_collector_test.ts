import assert from "node:assert/strict";
import { createHeapCollector, startHeapCollector } from "../lib/runtime/heap_collector.ts";
import { SANITIZE } from "./helpers.ts";

const MIB = 1024 * 1024;

/** A fake heap: `gc` brings it back to `live`. */
function fakeHeap(live: number) {
  const heap = { used: live, live, collections: 0 };
  const collector = createHeapCollector({
    gc: () => {
      heap.used = heap.live;
      heap.collections++;
    },
    heapUsed: () => heap.used,
  });
  return { heap, collector };
}

Deno.test(
  "createHeapCollector() collects once the heap grew past the slack, then from there",
  SANITIZE,
  () => {
    const { heap, collector } = fakeHeap(10 * MIB);
    heap.used += 16 * MIB; // exactly the 16 MiB slack: not yet
    assert.equal(collector.check(), false);
    heap.used += 2 * MIB; // still growing: past the slack
    assert.equal(collector.check(), true);
    assert.deepEqual([heap.collections, collector.collections, heap.used], [1, 1, 10 * MIB]);
    assert.equal(collector.check(), false); // nothing grew since
    // Live data grew too: the next collection is counted from what the last one left.
    heap.live = 30 * MIB;
    heap.used = 40 * MIB;
    assert.equal(collector.check(), true);
    heap.used = 30 * MIB + 16 * MIB;
    assert.equal(collector.check(), false);
    heap.used += 2 * MIB;
    assert.equal(collector.check(), true);
    assert.equal(collector.collections, 3);
  },
);

Deno.test(
  "createHeapCollector() collects a little growth once the heap stopped growing",
  SANITIZE,
  () => {
    const { heap, collector } = fakeHeap(10 * MIB);
    heap.used += 5 * MIB; // growing, under the 16 MiB slack
    assert.equal(collector.check(), false);
    heap.used += 512 * 1024; // quiet now, and 5.5 MiB over what the last collection left
    assert.equal(collector.check(), true);
    assert.equal(heap.used, 10 * MIB);
    heap.used += 3 * MIB; // under 4 MiB: left alone however quiet
    assert.equal(collector.check(), false);
    assert.equal(collector.check(), false);
    assert.equal(heap.collections, 1);
  },
);

Deno.test("createHeapCollector() allows a large heap half its size of growth", SANITIZE, () => {
  const { heap, collector } = fakeHeap(60 * MIB);
  heap.used = 90 * MIB;
  assert.equal(collector.check(), false);
  heap.used += 2 * MIB;
  assert.equal(collector.check(), true);
});

Deno.test("createHeapCollector() leaves a heap over the ceiling to V8", SANITIZE, () => {
  const { heap, collector } = fakeHeap(100 * MIB);
  heap.used = 200 * MIB; // over the 128 MiB ceiling: no stop-the-world collection
  assert.equal(collector.check(), false);
  heap.used = 120 * MIB; // V8 collected: counted from there
  assert.equal(collector.check(), false);
  heap.used = 120 * MIB + 60 * MIB + 1;
  assert.equal(collector.check(), false); // over the ceiling again
  assert.equal(heap.collections, 0);
});

Deno.test("startHeapCollector() runs only where V8's gc() is exposed", SANITIZE, () => {
  const global = globalThis as { gc?: () => void };
  const saved = global.gc;
  try {
    delete global.gc;
    assert.equal(startHeapCollector(), undefined);
    global.gc = () => {};
    using handle = startHeapCollector();
    assert.ok(handle);
  } finally {
    if (saved) global.gc = saved;
    else delete global.gc;
  }
});
