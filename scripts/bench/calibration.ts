/**
 * How fast this machine is right now, measured before the scenarios: the development machine is
 * a shared VM whose speed changes through the day (the same build measured GetMachine between
 * 4,400 and 9,800 calls/s), so each run records what it ran on.
 *
 * - a fixed single-threaded CPU loop (pure JavaScript);
 * - bare HTTP/2 unary round trips through the runtime's `node:http2`, client and server in this
 *   process, no gRPC library: the layer that bounds the get and register scenarios;
 * - the load average.
 *
 * @module
 */

import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Buffer } from "node:buffer";

/** What {@linkcode calibrate} measured. */
export interface Calibration {
  /** Best of 3 runs of a fixed CPU loop, in ms. */
  cpuMs: number;
  /**
   * Bare HTTP/2 request/response pairs per second, 50 in flight, both ends in one process:
   * median of 3 runs.
   */
  http2CallsPerSecond: number;
  /** The 3 runs behind {@linkcode Calibration.http2CallsPerSecond}. */
  http2Runs: number[];
  /** 1, 5 and 15 minute load averages, or null where the platform has none. */
  loadAverage: string | null;
}

const HTTP2_CALLS = 3000;
const HTTP2_IN_FLIGHT = 50;

function cpuLoop(): number {
  let best = Infinity;
  for (let run = 0; run < 3; run++) {
    const t = performance.now();
    let x = 0;
    for (let i = 0; i < 30_000_000; i++) x = (x * 31 + i) % 1_000_003;
    if (x < 0) throw new Error("unreachable: keeps the loop from being optimised away");
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

async function http2RoundTrips(): Promise<number[]> {
  const body = Buffer.alloc(200, 1); // about the size of a GetMachine response
  const server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.resume();
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, {
        waitForTrailers: true,
      });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const call = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": "/calibration" });
      stream.on("error", reject);
      stream.resume();
      stream.on("close", () => resolve());
      stream.end(body.subarray(0, 20));
    });
  try {
    const run = async (count: number): Promise<number> => {
      let next = 0;
      const t = performance.now();
      await Promise.all(Array.from({ length: HTTP2_IN_FLIGHT }, async () => {
        while (next < count) {
          next++;
          await call();
        }
      }));
      return count / ((performance.now() - t) / 1000);
    };
    await run(500); // warm-up
    const runs: number[] = [];
    for (let i = 0; i < 3; i++) runs.push(await run(HTTP2_CALLS));
    return runs;
  } finally {
    session.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

/**
 * Measures the machine; takes about two seconds.
 *
 * @returns The CPU loop time, bare HTTP/2 round trips per second and the load average.
 */
export async function calibrate(): Promise<Calibration> {
  // [0, 0, 0] where the platform has none (Windows).
  const load = Deno.loadavg();
  const loadAverage = load.some((v) => v > 0) ? load.map((v) => v.toFixed(2)).join(" ") : null;
  const http2Runs = await http2RoundTrips();
  const http2CallsPerSecond = [...http2Runs].sort((a, b) => a - b)[1];
  return { cpuMs: cpuLoop(), http2CallsPerSecond, http2Runs, loadAverage };
}
