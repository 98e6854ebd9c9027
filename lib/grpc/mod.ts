/**
 * The gRPC surface, server side only: the grpc-js server (`server.ts`) serving an engine it is
 * given, the descriptor adapter, services, error mapping (`status.ts`, the one place domain
 * errors become status codes), health, reflection, TLS and the bearer token check.
 *
 * May import: `lib/engine/`, `lib/store/` (contract, queries, limits), `lib/model/`, `lib/gen/`,
 * `lib/runtime/` (the token check it shares with the HTTP surface), npm packages. Never
 * `lib/provider/`, a store implementation or `lib/cli/`: the engine is
 * composed by `server.ts`, the demo and tests (checked by `test/architecture_test.ts`). Import
 * each module directly; this one only documents the folder.
 *
 * @module
 */
