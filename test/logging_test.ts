import assert from "node:assert/strict";
import { BatchedWriter, FLUSH_BYTES } from "../lib/runtime/logging.ts";
import { SANITIZE } from "./helpers.ts";

const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

Deno.test("BatchedWriter: lines wait, then go out together and in order", SANITIZE, () => {
  const writes: string[] = [];
  const writer = new BatchedWriter((bytes) => {
    writes.push(decode(bytes));
    return bytes.length;
  });
  writer.write("one\n");
  writer.write("two\n");
  assert.deepEqual(writes, []);
  writer.flush();
  assert.deepEqual(writes, ["one\ntwo\n"]);
  writer.flush();
  assert.deepEqual(writes, ["one\ntwo\n"], "an empty flush writes nothing");
});

Deno.test("BatchedWriter: a full batch is written at once, without waiting", SANITIZE, () => {
  const writes: string[] = [];
  const writer = new BatchedWriter((bytes) => {
    writes.push(decode(bytes));
    return bytes.length;
  });
  const line = "x".repeat(1023) + "\n";
  for (let i = 0; i < FLUSH_BYTES / line.length; i++) writer.write(line);
  assert.equal(writes.length, 1);
  assert.equal(writes[0].length, FLUSH_BYTES);
});

Deno.test("BatchedWriter: a partial write is continued with the rest", SANITIZE, () => {
  const written: string[] = [];
  const writer = new BatchedWriter((bytes) => {
    const taken = Math.min(3, bytes.length);
    written.push(decode(bytes.subarray(0, taken)));
    return taken;
  });
  writer.write("abcdefgh\n");
  writer.flush();
  assert.equal(written.join(""), "abcdefgh\n");
  assert.equal(written.length, 3);
});

Deno.test("BatchedWriter: waiting lines are written by the timer", SANITIZE, async () => {
  const written = Promise.withResolvers<string>();
  const writer = new BatchedWriter((bytes) => {
    written.resolve(decode(bytes));
    return bytes.length;
  });
  writer.write("later\n");
  // The writer's timer does not keep a process alive (by design); this test must stay alive.
  const keepAlive = setTimeout(() => {}, 60_000);
  try {
    assert.equal(await written.promise, "later\n");
  } finally {
    clearTimeout(keepAlive);
  }
});

async function runScript(code: string): Promise<{ code: number; stderr: string }> {
  const logging = new URL("../lib/runtime/logging.ts", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { configureLogging } from "${logging}";
import { getLogger } from "@logtape/logtape";
configureLogging("info");
getLogger(["bmdemo", "test"]).info("the last words");
${code}`,
    ],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: decode(out.stderr) };
}

Deno.test(
  "server logging: lines logged just before the process ends are not lost",
  SANITIZE,
  async (t) => {
    for (
      const [name, code, exit] of [
        ["Deno.exit()", "Deno.exit(3);", 3],
        ["an uncaught exception", "throw new Error('boom');", 1],
        ["an unhandled rejection", "Promise.reject(new Error('boom'));", 1],
        ["the event loop running dry", "", 0],
      ] as const
    ) {
      await t.step(name, async () => {
        const result = await runScript(code);
        assert.equal(result.code, exit, result.stderr);
        assert.match(result.stderr, /\[INF\] bmdemo·test: the last words/);
      });
    }
  },
);
