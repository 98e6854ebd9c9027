/**
 * The ordered indexes of the in-memory store and the one function that pages through them. Every
 * index is a sorted array of slots (by creation sequence number) with lazy deletion: an entry
 * that left it is skipped, and the array is compacted once such entries outnumber the live ones,
 * so pruning and phase changes cost amortised O(1).
 *
 * @module
 */

import {
  type Machine,
  MachineSchema,
  type Operation,
  OperationSchema,
} from "../gen/baremetal/v1/baremetal_pb.ts";
import { LIMITS } from "./limits.ts";
import { elementSize } from "./snapshot_encoding.ts";
import {
  decodePageToken,
  encodePageToken,
  type Filter,
  type ListQuery,
  type Page,
  resolvePageSize,
} from "./query.ts";

/** One record in an index: its value and creation sequence number. */
export interface Slot<T> {
  /** 1-based creation sequence number; page tokens point at it. */
  seq: number;
  value: T;
  /** Set once the record is pruned: every index skips it from then on. */
  removed?: boolean;
}

/**
 * Slots sorted by seq with lazy deletion: an entry that no longer belongs (pruned, or moved to
 * another phase) stays until compaction, and readers skip it with {@linkcode SeqIndex.live}.
 */
export class SeqIndex<T> {
  #slots: Slot<T>[] = [];
  #dead = 0;
  /** Whether an entry still belongs to the index. */
  readonly live: (slot: Slot<T>) => boolean;

  constructor(live: (slot: Slot<T>) => boolean = (slot) => !slot.removed) {
    this.live = live;
  }

  /** The entries, live or not, in seq order (do not keep across a change). */
  get slots(): readonly Slot<T>[] {
    return this.#slots;
  }

  /** Live entries. */
  get size(): number {
    return this.#slots.length - this.#dead;
  }

  add(slot: Slot<T>): void {
    const slots = this.#slots;
    // Appends are the rule (new records, recent operations finishing); an older one goes in place.
    if (slots.length === 0 || slots[slots.length - 1].seq < slot.seq) slots.push(slot);
    else slots.splice(lowerBound(slots, slot.seq), 0, slot);
  }

  /** Records that one entry stopped being live; compacts once most entries are dead. */
  drop(): void {
    this.#dead++;
    // No minimum: a dead entry pins its whole pruned operation, and a fixed allowance per index
    // adds up over a thousand machines' small indexes to several times the retention cap. Each
    // compaction removes more than half the entries, so its cost per drop stays O(1).
    if (this.#dead * 2 > this.#slots.length) {
      this.#slots = this.#slots.filter(this.live);
      this.#dead = 0;
    }
  }
}

// What one listed item adds to its reply (ListMachinesResponse, ListOperationsResponse).
const ELEMENT_SIZE: Record<"machines" | "operations", (item: unknown) => number> = {
  machines: (machine) => elementSize(MachineSchema, machine as Machine),
  operations: (operation) => elementSize(OperationSchema, operation as Operation),
};

/**
 * Assembles one page from a candidate index (every list goes through here): entries after the
 * token's seq that are live and match, up to the page size and the page byte budget, examining
 * at most `budget` entries. The token is a seq, so records pruned between pages neither break
 * nor repeat a listing.
 */
export function page<T>(
  source: SeqIndex<T>,
  filter: Filter<T>,
  options: { query: ListQuery; list: "machines" | "operations"; budget: number },
): Page<T> {
  const { query, list, budget } = options;
  const size = resolvePageSize(query.pageSize);
  const after = decodePageToken(query.pageToken ?? "", { list, filter: filter.canonical });
  const items: T[] = [];
  let bytes = 0;
  let lastSeq = after;
  const slots = source.slots;
  // Slots are sorted by seq; skip straight past the cursor.
  const first = lowerBound(slots, after + 1);
  for (let i = first; i < slots.length; i++) {
    const slot = slots[i];
    if (i - first === budget) {
      // Out of budget: a short page; the next call resumes after the last entry examined.
      return {
        items,
        nextPageToken: encodePageToken({ list, after: lastSeq, filter: filter.canonical }),
      };
    }
    if (!source.live(slot) || !filter.matches(slot.value)) {
      lastSeq = slot.seq;
      continue;
    }
    // Cut by count, or by bytes so that no reply exceeds a client's message limit; a page
    // always holds one item. The size is the cached encoding the reply is later sent with.
    const itemBytes = items.length === size ? 0 : ELEMENT_SIZE[list](slot.value);
    if (items.length === size || (items.length > 0 && bytes + itemBytes > LIMITS.maxPageBytes)) {
      return {
        items,
        nextPageToken: encodePageToken({ list, after: lastSeq, filter: filter.canonical }),
      };
    }
    items.push(slot.value);
    bytes += itemBytes;
    lastSeq = slot.seq;
  }
  return { items, nextPageToken: "" };
}

function lowerBound<T>(slots: readonly Slot<T>[], seq: number): number {
  let lo = 0;
  let hi = slots.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (slots[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
