import assert from "node:assert/strict";
import stringWidth from "string-width";
import { formatTable, truncate } from "../lib/cli/format.ts";
import {
  displayWidth,
  KNOWN_SYMBOL_WIDTHS,
  needsStringWidth,
  needsStringWidthIn,
  prepareWidths,
  stringWidthLoaded,
  WIDE_SYMBOLS,
  WidthsNotLoadedError,
} from "../lib/cli/width.ts";
import { SANITIZE } from "./helpers.ts";
import { create } from "@bufbuild/protobuf";
import { MachineSchema } from "../lib/gen/baremetal/v1/baremetal_pb.ts";

// The tests of this file run in order: the first ones need string-width not yet loaded by
// lib/cli/width.ts (this file's own static import is a separate binding and does not count).

/** string-width's answer plus the CLI's extra cell for each text-presentation wide symbol. */
function expected(text: string): number {
  let extra = 0;
  for (const ch of text) if (WIDE_SYMBOLS.has(ch)) extra += 1;
  return stringWidth(text) + extra;
}

/** An ordinary machine as `list` receives it: every text is ASCII. */
const MACHINE_INIT = {
  machineId: "machine-1",
  spec: { provider: "fake", macAddresses: ["52:54:00:00:00:01"] },
  labels: { role: "worker" } as Record<string, string>,
  status: { conditions: [{ type: "Reachable", status: true, reason: "PingOK" }] },
};

const PRINTABLE_ASCII = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i))
  .join("");

Deno.test("the known-symbol table is string-width's answers", SANITIZE, () => {
  for (const [symbol, width] of KNOWN_SYMBOL_WIDTHS) {
    assert.deepEqual(width, stringWidth(symbol), symbol);
    assert.deepEqual(symbol.length, 1, `${symbol} is one UTF-16 code unit`);
  }
  for (const symbol of WIDE_SYMBOLS) assert.ok(KNOWN_SYMBOL_WIDTHS.has(symbol), symbol);
});

Deno.test(
  "ASCII and known symbols are measured like string-width, without loading it",
  SANITIZE,
  () => {
    assert.ok(!stringWidthLoaded());
    const symbols = [...KNOWN_SYMBOL_WIDTHS.keys()];
    const texts = [
      "",
      PRINTABLE_ASCII,
      "⚠ATTN",
      "⛔BLOCK",
      "✓",
      "✗",
      "Reachable=✓, Provisioned=✓",
      symbols.join(""),
      symbols.join(" "),
    ];
    // Every known symbol next to every other and next to each printable ASCII character.
    for (const a of symbols) {
      for (const b of symbols) texts.push(a + b, `x${a}${b}y`);
      for (const c of PRINTABLE_ASCII) texts.push(a + c, c + a);
    }
    for (const text of texts) {
      assert.ok(!needsStringWidth(text), text);
      assert.deepEqual(displayWidth(text), expected(text), text);
    }
    assert.deepEqual(displayWidth("⚠ATTN"), 6);
    assert.deepEqual(displayWidth("⛔BLOCK"), 7);
    assert.ok(!stringWidthLoaded());
  },
);

Deno.test("list tables of ordinary machines do not load string-width", SANITIZE, async () => {
  const table = formatTable(["ID", "EFFECTIVE", "X"], [["m-1", "⚠ATTN", "✓"], [
    "m-2",
    "⛔BLOCK",
    "✗",
  ]]);
  assert.deepEqual(table, "ID    EFFECTIVE  X\nm-1   ⚠ATTN     ✓\nm-2   ⛔BLOCK    ✗\n");
  await prepareWidths(["machine-1", "⚠ATTN", "⛔BLOCK", "✓", "✗", "-"]);
  await prepareWidths([create(MachineSchema, MACHINE_INIT)]);
  assert.ok(!stringWidthLoaded());
});

Deno.test(
  "other text needs string-width: an error before it is loaded, then prepareWidths of its data",
  SANITIZE,
  async () => {
    assert.ok(!stringWidthLoaded());
    for (const text of ["日本", "é", "e\u0301", "\t", "a\u001b[31mb", "⚠\uFE0F", "👍🏽"]) {
      assert.ok(needsStringWidth(text), JSON.stringify(text));
    }
    assert.throws(() => displayWidth("ラック"), WidthsNotLoadedError);
    assert.throws(() => truncate("ラック".repeat(20), 30), WidthsNotLoadedError);

    // Text deep in the data (a label value) is found, and loads string-width once.
    const machine = create(MachineSchema, { ...MACHINE_INIT, labels: { rack: "ラック" } });
    await prepareWidths(machine);
    assert.ok(stringWidthLoaded());
    const table = formatTable(["RACK", "X"], [[machine.labels.rack, "✓"], ["r1", "⛔"]]);
    assert.deepEqual(table, "RACK     X\nラック   ✓\nr1       ⛔\n");
  },
);

Deno.test(
  "once loaded, every text is string-width's answer plus the wide-symbol extra",
  SANITIZE,
  () => {
    assert.ok(stringWidthLoaded());
    const texts = [
      "日本語",
      "é",
      "e\u0301",
      "\t",
      "a\u001b[31mb\u001b[0m",
      "⚠\uFE0F",
      "⚠\uFE0FATTN ⚠",
      "👍🏽",
      "👨‍👩‍👧",
      "🇩🇪",
      "—",
      "…",
      "ラック ✓ ⛔",
    ];
    for (const text of texts) assert.deepEqual(displayWidth(text), expected(text), text);
    assert.deepEqual(truncate("ラック".repeat(20), 10), "ラックラ…");
  },
);

Deno.test(
  "needsStringWidthIn() looks at every key and string of a message, not bytes",
  SANITIZE,
  () => {
    const machine = (init: Partial<typeof MACHINE_INIT>) =>
      create(MachineSchema, { ...MACHINE_INIT, ...init });
    assert.ok(!needsStringWidthIn([machine({}), "loose", ["row", "⚠ATTN"]]));
    assert.ok(needsStringWidthIn([machine({}), "ラック"]));
    assert.ok(needsStringWidthIn([["row", "⚠ATTN"], ["ラック"]]));
    assert.ok(needsStringWidthIn(machine({ labels: { "ラック": "r1" } })));
    assert.ok(needsStringWidthIn(machine({ labels: { rack: "ラック" } })));
    assert.ok(needsStringWidthIn([machine({
      status: { conditions: [{ type: "Reachable", status: true, reason: "理由" }] },
    })]));
    assert.ok(!needsStringWidthIn({ bytes: new Uint8Array([0xe3, 0x83, 0xa9]), n: 3, none: null }));
  },
);
