/**
 * The composition of what a bmdemo server serves on one engine (`surfaces.ts`): the gRPC server,
 * the HTTP surface beside it and the Prometheus metrics wired into both, started and stopped in
 * one order. `server.ts` and `deno task demo` both start their servers through it, so the demo's
 * dashboard serves what the server's does (`/metrics` included). Also the server's configuration
 * from its command line (`server_config.ts`): every flag checked, and the files it names read,
 * before anything starts.
 *
 * May import: `lib/grpc/`, `lib/http/`, `lib/metrics/`, `lib/engine/`, `lib/provider/`,
 * `lib/runtime/` (checked by
 * `test/architecture_test.ts`). Nothing below imports it. Import each module directly; this one
 * only documents the folder.
 *
 * @module
 */
