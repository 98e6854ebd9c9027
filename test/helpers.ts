/**
 * Shared test helpers: engines with a zero-delay provider, waiting on events instead of time.
 *
 * @module
 */

import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "../lib/client/mod.ts";
import { createEngine, type Engine, type EngineOptions } from "../lib/engine/mod.ts";
import { createFakeProvider, type FakeProviderOptions } from "../lib/provider/fake.ts";
import type { EventSubscription } from "../lib/engine/event_subscription.ts";
import {
  MachineSchema,
  type MachineService,
  MachineStatus_Phase,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  type OperationEvent,
  type OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { type BmdemoServer, type ServerOptions, startServer } from "../lib/grpc/server.ts";
import { isTerminalPhase } from "../lib/model/lifecycle.ts";
import type { ProviderCall } from "../lib/provider/mod.ts";
import { validateCreateRequest } from "../lib/store/validation.ts";

/** Test options that turn every Deno sanitizer on (2.9.3 leaves the op sanitizer off). */
export const SANITIZE = { sanitizeOps: true, sanitizeResources: true } as const;

/**
 * Asserts that `promise` (a call) rejects with a `ConnectError` of `code` and, when given, a
 * status message equal to (string) or matching (RegExp) `message`.
 *
 * @returns The error, for further assertions (metadata, details).
 */
export async function rejectsWithCode(
  promise: Promise<unknown>,
  code: Code,
  message?: string | RegExp,
): Promise<ConnectError> {
  let caught: unknown;
  await assert.rejects(promise, (error) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof ConnectError, `expected a ConnectError, got ${String(caught)}`);
  assert.equal(
    Code[caught.code],
    Code[code],
    `expected ${Code[code]}, got ${Code[caught.code]}: ${caught.rawMessage}`,
  );
  if (typeof message === "string") assert.equal(caught.rawMessage, message);
  else if (message) assert.match(caught.rawMessage, message);
  return caught;
}

/** Creates an engine with the zero-delay fake provider and no backoff. */
export function testEngine(
  provider: FakeProviderOptions = {},
  options: EngineOptions = {},
): Engine {
  return createEngine({
    provider: createFakeProvider({ timing: "zero", ...provider }),
    ...options,
    executor: { backoff: () => 0, ...options.executor },
  });
}

/**
 * Starts a server on a free loopback port over `options.engine` (default: {@linkcode testEngine}),
 * for `await using`.
 *
 * @param options Server options; `port` defaults to 0.
 * @returns The running server.
 */
export function testServer(options: Partial<ServerOptions> = {}): Promise<BmdemoServer> {
  return startServer({ port: 0, ...options, engine: options.engine ?? testEngine() });
}

/** Registers `machine-1 … machine-N` in FACTORY_READY. */
export function importMachines(engine: Engine, count: number): void {
  for (let i = 1; i <= count; i++) {
    engine.registerMachine(create(MachineSchema, {
      machineId: `machine-${i}`,
      spec: { provider: "fake" },
      labels: { role: "worker" },
    }));
  }
}

/**
 * Reads events (an engine subscription, or a WatchOperations stream of a client) until one
 * matches, and returns it.
 */
export async function nextEvent(
  subscription: EventSubscription | AsyncIterator<OperationEvent>,
  predicate: (event: OperationEvent) => boolean,
): Promise<OperationEvent> {
  for (;;) {
    const { value, done } = await subscription.next();
    if (done) throw new Error("the events ended before the expected one");
    if (predicate(value)) return value;
  }
}

/** Starts an operation and waits until it is terminal; returns the final operation. */
export async function runOperation(
  engine: Engine,
  request: { machineId: string; type: OperationType; requestId?: string; imageRef?: string },
): Promise<Operation> {
  using subscription = engine.events.subscribe();
  const { operation } = engine.startOperation({
    requestId: crypto.randomUUID(),
    ...request,
  });
  if (isTerminalPhase(engine.getOperation(operation.operationId).phase)) {
    return engine.getOperation(operation.operationId);
  }
  const event = await nextEvent(
    subscription,
    (e) => e.snapshot?.operationId === operation.operationId && isTerminalPhase(e.snapshot.phase),
  );
  return event.snapshot!;
}

/** Brings machine `id` to MAINTENANCE. */
export async function enterMaintenance(engine: Engine, machineId: string): Promise<void> {
  const op = await runOperation(engine, { machineId, type: OperationType.ENTER_MAINTENANCE });
  if (op.phase !== OperationPhase.SUCCEEDED) throw new Error("enter-maintenance failed");
}

/** The event messages of one operation, in order. */
export function messagesOf(events: OperationEvent[], operationId: string): string[] {
  return events.filter((e) => e.snapshot?.operationId === operationId).map((e) => e.message);
}

/** Takes every event a subscription has queued right now, without waiting for more. */
export async function takeQueued(subscription: EventSubscription): Promise<OperationEvent[]> {
  const events: OperationEvent[] = [];
  while (subscription.pending > 0) {
    const { value, done } = await subscription.next();
    if (done) break;
    events.push(value);
  }
  return events;
}

/** The log lines of an operation as text. */
export function logText(engine: Engine, operationId: string): string[] {
  const decoder = new TextDecoder();
  return engine.logs.lines(operationId).map((c) => decoder.decode(c.data).trimEnd());
}

/** A provider verb held open: use `hook` as the verb's hook; `entered` resolves with the call. */
export interface HeldVerb {
  /** The hook to install, e.g. `testEngine({ hooks: { reboot: held.hook } })`. */
  hook: (call: ProviderCall) => Promise<void>;
  /** Resolves when the verb starts. */
  entered: Promise<ProviderCall>;
  /** Lets the verb go on. */
  release(): void;
}

/** Holds a provider verb open until released, and reports when it is entered. */
export function holdVerb(): HeldVerb {
  const entered = Promise.withResolvers<ProviderCall>();
  const released = Promise.withResolvers<void>();
  return {
    hook: (call) => {
      entered.resolve(call);
      return released.promise;
    },
    entered: entered.promise,
    release: () => released.resolve(),
  };
}

/** Waits until operation `operationId` is terminal in the engine, and returns it. */
export async function untilTerminal(engine: Engine, operationId: string): Promise<Operation> {
  using subscription = engine.events.subscribe({ capacity: 4096 });
  const current = engine.getOperation(operationId);
  if (isTerminalPhase(current.phase)) return current;
  const event = await nextEvent(
    subscription,
    (e) => e.snapshot?.operationId === operationId && isTerminalPhase(e.snapshot.phase),
  );
  return event.snapshot!;
}

/**
 * Starts ENTER_MAINTENANCE on `machine-<from> … machine-<to>` in one synchronous burst (so their
 * events land in subscriber queues before any stream handler runs), then waits for all of them.
 */
export async function enterMaintenanceBurst(
  engine: Engine,
  range: { from: number; to: number },
): Promise<string[]> {
  const started: string[] = [];
  for (let i = range.from; i <= range.to; i++) {
    started.push(
      engine.startOperation({
        machineId: `machine-${i}`,
        requestId: `burst-${i}`,
        type: OperationType.ENTER_MAINTENANCE,
      }).operation.operationId,
    );
  }
  await Promise.all(started.map((id) => untilTerminal(engine, id)));
  return started;
}

/**
 * A server on a free port over a zero-delay engine holding `machine-1`, already in
 * MAINTENANCE (where every operation is allowed).
 */
export async function maintenanceServer(
  provider: FakeProviderOptions = {},
): Promise<BmdemoServer> {
  return await testServer({ engine: await maintenanceEngine(provider) });
}

/**
 * An engine from {@linkcode testEngine} holding `machine-1`, already in MAINTENANCE.
 *
 * @param provider Fake provider options.
 * @param options Engine options.
 * @returns The engine.
 */
export async function maintenanceEngine(
  provider: FakeProviderOptions = {},
  options: EngineOptions = {},
): Promise<Engine> {
  const engine = testEngine(provider, options);
  importMachines(engine, 1);
  await enterMaintenance(engine, "machine-1");
  return engine;
}

/**
 * Resolves when the next event subscription opens on the engine: a client's watch (or a command
 * that follows an operation) has reached the server and will see what happens from now on.
 *
 * @param engine The engine.
 * @returns When the subscription exists.
 */
export function nextSubscription(engine: Engine): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  const subscribe = engine.events.subscribe;
  engine.events.subscribe = (options) => {
    engine.events.subscribe = subscribe;
    const subscription = subscribe.call(engine.events, options);
    resolve();
    return subscription;
  };
  return promise;
}

/**
 * A READY `machine-1` with a PENDING REBOOT admitted by the store alone (no executor runs it),
 * as a crashed process would leave it, or for driving a transition by hand.
 *
 * @param engine The engine.
 * @param requestId The operation's request id.
 * @returns The PENDING operation.
 */
export function pendingReboot(engine: Engine, requestId = "r"): Operation {
  engine.registerMachine(create(MachineSchema, {
    machineId: "machine-1",
    spec: { provider: "fake" },
    status: { phase: MachineStatus_Phase.READY },
  }));
  return engine.store.createOperation(validateCreateRequest({
    machineId: "machine-1",
    requestId,
    type: OperationType.REBOOT,
    params: {},
  })).operation;
}

/**
 * Registers `machineId` over gRPC and puts it in maintenance, waiting for that to finish (its
 * log stream ends with the operation).
 */
export async function maintenanceOverGrpc(
  machines: Client<typeof MachineService>,
  operations: Client<typeof OperationService>,
  machineId: string,
): Promise<void> {
  await machines.registerMachine({ machine: create(MachineSchema, { machineId }) });
  const enter = await machines.enterMaintenance({ machineId, requestId: `enter-${machineId}` });
  for await (const _ of operations.streamOperationLogs({ operationId: enter.operationId })) {
    // The log stream ends when the operation does.
  }
}
