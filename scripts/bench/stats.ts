/**
 * Figures of the end-to-end benchmark (`scripts/bench.ts`): samples, their summary and the
 * table it prints.
 *
 * @module
 */

/** One measured figure of a scenario. */
export interface Figure {
  /** Scenario name, e.g. `get`. */
  scenario: string;
  /** What is measured, e.g. `calls/s (50 in flight)`. */
  name: string;
  /** Unit, e.g. `ms`, `calls/s`, `MB`, or empty for counts and text. */
  unit: string;
  /** Median of the samples (or the text value when `text` is set). */
  median: number | null;
  /** 99th percentile of the samples. */
  p99: number | null;
  /** Smallest sample. */
  min: number | null;
  /** Largest sample. */
  max: number | null;
  /** Number of samples (repeats, calls, watchers…). */
  n: number;
  /** A textual value instead of numbers (e.g. "n/a", "yes"). */
  text?: string;
  /** What the samples are, e.g. "5 repeats of 2,000". */
  over?: string;
}

/**
 * Value at quantile `q` (0..1) of sorted samples, nearest-rank.
 *
 * @param sorted Ascending samples.
 * @param q Quantile.
 * @returns The value, or null without samples.
 */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/**
 * Summarises samples into a figure.
 *
 * @param scenario Scenario name.
 * @param name Figure name.
 * @param unit Unit.
 * @param samples The samples.
 * @param over What the samples are.
 * @returns The figure.
 */
export function figure(
  scenario: string,
  name: string,
  unit: string,
  samples: readonly number[],
  over?: string,
): Figure {
  const sorted = [...samples].sort((a, b) => a - b);
  let median: number | null = null;
  if (sorted.length > 0) {
    const mid = Math.floor(sorted.length / 2);
    median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }
  return {
    scenario,
    name,
    unit,
    median,
    p99: quantile(sorted, 0.99),
    min: sorted[0] ?? null,
    max: sorted.at(-1) ?? null,
    n: sorted.length,
    over,
  };
}

/**
 * A figure holding text rather than samples.
 *
 * @param scenario Scenario name.
 * @param name Figure name.
 * @param text The value.
 * @returns The figure.
 */
export function textFigure(scenario: string, name: string, text: string): Figure {
  return { scenario, name, unit: "", median: null, p99: null, min: null, max: null, n: 0, text };
}

function num(value: number | null): string {
  if (value === null) return "-";
  const abs = Math.abs(value);
  const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 10 ? 2 : 3;
  return value.toLocaleString("en-US", {
    minimumFractionDigits: 0,
    maximumFractionDigits: digits,
  });
}

/**
 * Renders figures as one aligned text table.
 *
 * @param figures The figures, in order.
 * @returns The table, lines joined with "\n".
 */
export function renderTable(figures: readonly Figure[]): string {
  const header = ["SCENARIO", "FIGURE", "MEDIAN", "P99", "MIN–MAX", "N / OVER"];
  const rows = figures.map((f) => {
    const name = f.unit === "" ? f.name : `${f.name} [${f.unit}]`;
    if (f.text !== undefined) return [f.scenario, name, f.text, "", "", ""];
    const range = f.n > 1 ? `${num(f.min)}–${num(f.max)}` : "";
    return [f.scenario, name, num(f.median), f.n > 1 ? num(f.p99) : "", range, f.over ?? `${f.n}`];
  });
  // Text values span the number columns: they do not widen them.
  const numeric = rows.filter((_, r) => figures[r].text === undefined);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...(i >= 2 ? numeric : rows).map((r) => r[i].length))
  );
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ").trimEnd();
  return [
    line(header),
    ...rows.map((r, i) =>
      figures[i].text === undefined
        ? line(r)
        : `${r[0].padEnd(widths[0])}  ${r[1].padEnd(widths[1])}  ${figures[i].text}`
    ),
  ].join("\n");
}
