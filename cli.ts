/**
 * The bmdemo CLI entry point: wires the terminal (stdout, stderr, environment, Ctrl+C) into
 * {@linkcode main} and exits with its code. See `deno task cli --help`.
 *
 * @module
 */

import { main } from "./lib/cli/main.ts";
import { terminalIo } from "./lib/cli/terminal.ts";

const interrupt = new AbortController();
const onInterrupt = (): void => interrupt.abort();
Deno.addSignalListener("SIGINT", onInterrupt);
const code = await main(Deno.args, terminalIo(interrupt.signal));
Deno.removeSignalListener("SIGINT", onInterrupt);
Deno.exit(code);
