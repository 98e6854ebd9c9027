/** The one terminal transition (`lib/engine/terminal.ts`), driven directly. */
import assert from "node:assert/strict";
import { Operation_Phase as OperationPhase } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { finish } from "../lib/engine/terminal.ts";
import { logText, pendingReboot, SANITIZE, takeQueued, testEngine } from "./helpers.ts";

Deno.test(
  "finish() ends an operation once: machine first, then banner, journal end, one event",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    const operation = pendingReboot(engine);
    const id = operation.operationId;
    using events = engine.events.subscribe();
    const seen: { busy: string; banner: string | undefined }[] = [];
    engine.events.listen(() => {
      seen.push({
        busy: engine.getMachine("machine-1").status!.activeOperationId,
        banner: logText(engine, id).at(-1),
      });
    });
    const first = finish(engine, id, { phase: OperationPhase.SUCCEEDED });
    const error = { code: "X", message: "late", retryable: false, details: {} };
    const second = finish(engine, id, { phase: OperationPhase.FAILED, error });
    assert.deepEqual([first.changed, first.operation?.phase, second], [
      true,
      OperationPhase.SUCCEEDED,
      { changed: false },
    ]);
    // When the event was published the machine was free and the banner written.
    assert.deepEqual(seen, [{ busy: "", banner: "=== Operation SUCCEEDED ===" }]);
    assert.deepEqual(logText(engine, id), ["=== Operation SUCCEEDED ==="]);
    assert.deepEqual((await takeQueued(events)).map((e) => e.message), ["Operation succeeded"]);
    // The journal ended: a reader gets the banner and the stream ends.
    const read = [];
    for await (const chunk of engine.logs.read(id)) read.push(chunk.seq);
    assert.equal(read.length, 1);
  },
);

Deno.test(
  "finish() with CANCELED returns an already CANCELED operation unchanged",
  SANITIZE,
  async () => {
    await using engine = testEngine();
    const operation = pendingReboot(engine);
    const cancel = { phase: OperationPhase.CANCELED, cause: "user" } as const;
    const first = finish(engine, operation.operationId, cancel);
    const again = finish(engine, operation.operationId, cancel);
    assert.equal(first.changed, true);
    assert.equal(again.changed, false);
    assert.equal(again.operation?.phase, OperationPhase.CANCELED);
    assert.deepEqual(logText(engine, operation.operationId), ["=== Operation CANCELED ==="]);
  },
);
