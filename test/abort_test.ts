import assert from "node:assert/strict";
import { abortableDelay, untilAborted } from "../lib/model/abort.ts";
import { SANITIZE } from "./helpers.ts";

Deno.test("abortableDelay() rejects with the signal's reason when aborted", SANITIZE, async () => {
  const controller = new AbortController();
  const reason = new Error("stop");
  const waiting = abortableDelay(3_600_000, controller.signal);
  controller.abort(reason);
  await assert.rejects(waiting, (e) => e === reason);
});

Deno.test("abortableDelay() of zero resolves without a timer", SANITIZE, async () => {
  const setTimeoutBefore = globalThis.setTimeout;
  let timers = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++;
    return setTimeoutBefore(...args);
  }) as typeof setTimeout;
  try {
    assert.equal(await abortableDelay(0, new AbortController().signal), undefined);
  } finally {
    globalThis.setTimeout = setTimeoutBefore;
  }
  assert.equal(timers, 0);
});

Deno.test("abortableDelay() on an aborted signal throws its reason at once", SANITIZE, () => {
  const reason = new Error("already");
  assert.throws(() => abortableDelay(10, AbortSignal.abort(reason)), (e) => e === reason);
});

Deno.test(
  "untilAborted() settles like the promise or with the abort reason",
  SANITIZE,
  async (t) => {
    await t.step("resolves with the value", async () => {
      assert.equal(await untilAborted(Promise.resolve(7), new AbortController().signal), 7);
    });
    await t.step("rejects with the abort reason while the work is stuck", async () => {
      const controller = new AbortController();
      const stuck = Promise.withResolvers<void>();
      const racing = untilAborted(stuck.promise, controller.signal);
      controller.abort("gone");
      await assert.rejects(racing, (e) => e === "gone");
      stuck.resolve();
    });
    await t.step("rejects at once on an aborted signal", async () => {
      await assert.rejects(
        untilAborted(Promise.resolve(1), AbortSignal.abort("x")),
        (e) => e === "x",
      );
    });
  },
);
