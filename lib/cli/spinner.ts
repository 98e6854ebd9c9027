/**
 * The spinner a running step shows on a terminal, with the step's elapsed time, so a step that
 * takes ten seconds (`--timing slow`) visibly moves. It only keeps the frame and the clock;
 * `StepPrinter` (`follow.ts`) decides where it is drawn, and draws nothing when the output is not
 * a terminal.
 *
 * The clock and the timer are a {@linkcode Ticker}, so tests step the spinner by hand.
 *
 * @example
 * ```ts
 * import { Spinner } from "./spinner.ts";
 *
 * let now = 0;
 * const ticks: (() => void)[] = [];
 * const ticker = {
 *   now: () => now,
 *   every: (_ms: number, tick: () => void) => (ticks.push(tick), { [Symbol.dispose]() {} }),
 * };
 * const tails: string[] = [];
 * using spinner = new Spinner(ticker);
 * spinner.start((tail) => tails.push(tail));
 * now = 3200;
 * ticks[0]();
 * // tails: ["⠋ 3.2s"]
 * ```
 *
 * @module
 */

import { SPINNER_FRAMES } from "./width.ts";

/** A clock and a repeating timer. */
export interface Ticker {
  /** The current time in ms. */
  now(): number;
  /** Calls `tick` every `ms` until the result is disposed. */
  every(ms: number, tick: () => void): Disposable;
}

/** The real clock and `setInterval`. */
export const REAL_TICKER: Ticker = {
  now: () => performance.now(),
  every(ms, tick) {
    const id = setInterval(tick, ms);
    return { [Symbol.dispose]: () => clearInterval(id) };
  },
};

/** How often the spinner turns (and its time is redrawn). */
export const SPINNER_INTERVAL_MS = 100;

/**
 * Elapsed time as the spinner shows it: tenths of a second below a minute, then `1m05s`.
 *
 * @param ms Milliseconds.
 * @returns The text.
 *
 * @example
 * ```ts
 * import { formatElapsed } from "./spinner.ts";
 *
 * formatElapsed(3249); // "3.2s"
 * formatElapsed(65_000); // "1m05s"
 * ```
 */
export function formatElapsed(ms: number): string {
  if (ms < 60_000) return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/** A spinner frame and the time since {@linkcode Spinner.start}, redrawn at every tick. */
export class Spinner implements Disposable {
  readonly #ticker: Ticker;
  #started = 0;
  #frame = 0;
  #timer: Disposable | undefined;

  /** @param ticker The clock and timer. @default REAL_TICKER */
  constructor(ticker: Ticker = REAL_TICKER) {
    this.#ticker = ticker;
  }

  /**
   * Starts timing (again) and calls `draw` with the next {@linkcode tail} at every tick; the
   * first tick comes after {@linkcode SPINNER_INTERVAL_MS}, so a quick step draws nothing.
   *
   * @param draw Draws the tail.
   */
  start(draw: (tail: string) => void): void {
    this.stop();
    this.#started = this.#ticker.now();
    this.#frame = 0;
    this.#timer = this.#ticker.every(SPINNER_INTERVAL_MS, () => draw(this.tail()));
  }

  /**
   * The next frame and the elapsed time, e.g. `⠙ 3.2s`.
   *
   * @returns The text.
   */
  tail(): string {
    const frame = SPINNER_FRAMES[this.#frame++ % SPINNER_FRAMES.length];
    return `${frame} ${this.elapsed()}`;
  }

  /**
   * The time since the last start.
   *
   * @returns The text, e.g. `3.2s`.
   */
  elapsed(): string {
    return formatElapsed(this.#ticker.now() - this.#started);
  }

  /** Stops the ticks. */
  stop(): void {
    this.#timer?.[Symbol.dispose]();
    this.#timer = undefined;
  }

  /** Stops the ticks. */
  [Symbol.dispose](): void {
    this.stop();
  }
}
