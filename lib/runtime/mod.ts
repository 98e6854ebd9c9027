/**
 * Process concerns of the server binary: logging set-up (`logging.ts`), the idle-time heap
 * collector (`heap_collector.ts`) and how stop signals are read (`stop_signals.ts`). Nothing of the domain depends on them.
 *
 * May import: npm packages only (checked by `test/architecture_test.ts`). Import each module
 * directly; this one only documents the folder.
 *
 * @module
 */
