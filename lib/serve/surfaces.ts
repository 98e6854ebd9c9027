/**
 * Starts the gRPC server and, when asked, the HTTP surface on one engine, with the metrics wired
 * into both (calls observed on gRPC, dashboard streams counted as watchers, `/metrics` mounted),
 * and stops them in the order the dashboard needs: `/readyz` 503 first, then gRPC and the engine,
 * then the event streams, then the metrics.
 *
 * @module
 */

import type { Engine } from "../engine/mod.ts";
import { type BmdemoServer, type ServerOptions, startServer } from "../grpc/server.ts";
import type { HttpRoute } from "../http/route.ts";
import { type HttpSurface, type HttpSurfaceOptions, startHttpSurface } from "../http/surface.ts";
import { createMetrics, type Metrics, type MetricsOptions } from "../metrics/mod.ts";

/** Options of {@linkcode startSurfaces}. */
export interface SurfacesOptions {
  /** The gRPC server's options but the engine and the call observer (the metrics'). */
  grpc: Omit<ServerOptions, "engine" | "callObserver">;
  /**
   * The HTTP surface's options but the engine and the stream hook (the metrics'); its routes are
   * mounted beside `/metrics`. @default no HTTP surface
   */
  http?: Omit<HttpSurfaceOptions, "engine" | "onStream">;
  /** The metrics' options, or `false` for none (`--no-metrics`). @default collected */
  metrics?: MetricsOptions | false;
}

/** The running surfaces of one engine. */
export interface Surfaces extends AsyncDisposable {
  /** The gRPC server. */
  readonly server: BmdemoServer;
  /** The HTTP surface, when asked for. */
  readonly http: HttpSurface | undefined;
  /** The metrics, unless turned off. */
  readonly metrics: Metrics | undefined;
  /** Stops everything (see the module documentation); idempotent. */
  shutdown(): Promise<void>;
}

/** A surface that could not start; the ones started before it are stopped. */
export class SurfaceStartError extends Error {
  /** Which surface failed to listen. */
  readonly surface: "grpc" | "http";

  /**
   * @param surface Which surface failed.
   * @param cause The bind error (`Deno.errors.AddrInUse`, grpc-js's wrapped socket error).
   */
  constructor(surface: "grpc" | "http", cause: unknown) {
    super(
      `The ${surface === "grpc" ? "gRPC server" : "HTTP surface"} did not start: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
    this.name = "SurfaceStartError";
    this.surface = surface;
  }
}

/**
 * Starts the surfaces of `engine`. The metrics are created before the gRPC server starts (it runs
 * the engine's restart recovery), so the operations recovery fails are counted.
 *
 * @param engine The engine served (composed by the caller); shutting down shuts it down.
 * @param options gRPC, HTTP and metrics options.
 * @returns The running surfaces.
 * @throws {SurfaceStartError} When a surface cannot listen (its `cause` is the bind error).
 *
 * @example
 * ```ts
 * import { createEngine } from "../engine/mod.ts";
 *
 * await using surfaces = await startSurfaces(createEngine({ timing: "zero" }), {
 *   grpc: { port: 0 },
 *   http: { port: 0 },
 * });
 * const metrics = await fetch(`${surfaces.http!.url}metrics`);
 * console.log((await metrics.text()).includes("bmdemo_machines")); // true
 * ```
 */
export async function startSurfaces(
  engine: Engine,
  options: SurfacesOptions,
): Promise<Surfaces> {
  const metrics = options.metrics === false ? undefined : createMetrics(engine, options.metrics);
  let server: BmdemoServer;
  try {
    server = await startServer({ ...options.grpc, engine, callObserver: metrics?.grpcObserver });
  } catch (error) {
    metrics?.close();
    throw new SurfaceStartError("grpc", error);
  }
  let http: HttpSurface | undefined;
  if (options.http) {
    const routes: HttpRoute[] = [...options.http.routes ?? [], ...metrics ? [metrics.route] : []];
    try {
      http = await startHttpSurface({
        ...options.http,
        engine,
        routes,
        onStream: metrics?.trackWatcher,
      });
    } catch (error) {
      await server.shutdown();
      metrics?.close();
      throw new SurfaceStartError("http", error);
    }
  }
  let stopped: Promise<void> | undefined;
  function shutdown(): Promise<void> {
    stopped ??= (async () => {
      try {
        // The event streams end after gRPC and the engine stopped, so a dashboard sees the
        // operations shutdown cancels.
        await (http ? http.shutdown({ before: () => server.shutdown() }) : server.shutdown());
      } finally {
        metrics?.close();
      }
    })();
    return stopped;
  }
  return { server, http, metrics, shutdown, [Symbol.asyncDispose]: shutdown };
}
