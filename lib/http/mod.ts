/**
 * The HTTP surface of the server (`surface.ts`, on `Deno.serve`, beside gRPC): the live
 * dashboard (`dashboard_assets.ts` and `assets/`, compiled in), its numbered change feed
 * (`dashboard_feed.ts`), the Server-Sent Event streams (`sse.ts`), health and readiness, and the
 * extension point other parts mount routes on (`route.ts`: metrics, netboot).
 *
 * May import: `lib/engine/`, `lib/store/` (contract, queries), `lib/model/`, `lib/gen/`,
 * `lib/runtime/` (the token check it shares with gRPC), npm packages. Never `lib/grpc/`,
 * `lib/cli/`, a store implementation or a gRPC package (checked by
 * `test/architecture_test.ts`). Import each module directly; this one only documents the folder.
 *
 * @module
 */
