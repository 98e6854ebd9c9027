/**
 * The domain's vocabulary, shared by the store, the engine and the providers: lifecycle rules
 * (`lifecycle.ts`: effective state, conditions, phase gates, outcome effects), typed errors
 * (`errors.ts`), ids (`ids.ts`), immutable snapshots (`immutable.ts`), abortable waits
 * (`abort.ts`) and the forms of a machine's hardware fields (`hardware_spec.ts`: driver name, BMC
 * address, SSH endpoint; checked by the store at registration, parsed by the routing provider). Pure: no state, no I/O. It lives apart from the engine because the store may not
 * import the engine.
 *
 * May import: `lib/gen/`, npm packages. Nothing else of lib/ (checked by
 * `test/architecture_test.ts`). Import each module directly; this one only documents the folder.
 *
 * @module
 */
