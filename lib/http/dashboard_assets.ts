/**
 * The dashboard's files (HTML, CSS, an ES module), compiled into the program: imported as text,
 * so `deno bundle` inlines them and the binaries carry them; nothing is read from disk at run
 * time. The files live in `assets/` and are served as they are (no build step).
 *
 * @module
 */

import html from "./assets/dashboard.html" with { type: "text" };
import css from "./assets/dashboard.css" with { type: "text" };
import js from "./assets/dashboard.js" with { type: "text" };

/** One served file: its body and content type. */
export interface DashboardAsset {
  /** The file's text. */
  readonly body: string;
  /** Its `content-type`. */
  readonly type: string;
}

/** The dashboard's files by URL path. */
export const DASHBOARD_ASSETS: Readonly<Record<string, DashboardAsset>> = Object.freeze({
  "/": { body: html, type: "text/html; charset=utf-8" },
  "/assets/dashboard.css": { body: css, type: "text/css; charset=utf-8" },
  "/assets/dashboard.js": { body: js, type: "text/javascript; charset=utf-8" },
});
