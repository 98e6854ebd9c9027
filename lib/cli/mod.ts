/**
 * The CLI (`bmdemo-cli`, entry `main.ts`): commands, output formats, live progress and the
 * presenter tour. It talks to a server over the wire only.
 *
 * May import: `lib/client/` (the client side of the wire), `lib/model/`, `lib/gen/`, npm
 * packages. Nothing under lib/ imports it (checked by `test/architecture_test.ts`). Import each
 * module directly; this one only documents the folder.
 *
 * @module
 */
