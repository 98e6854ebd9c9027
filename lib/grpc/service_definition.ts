/**
 * The bridge between protobuf-es service descriptors and grpc-js, with no `.proto` file or
 * proto-loader at run time:
 *
 * - {@linkcode createServiceDefinition} derives the grpc-js `ServiceDefinition` (paths, streaming
 *   flags, binary codecs) from a generated `GenService`.
 * - {@linkcode createServiceHandlers} adapts typed async handlers ({@linkcode ServiceImpl}) to
 *   grpc-js callbacks: one `AbortSignal` per call, one wrapper for cross-cutting concerns, one
 *   funnel that turns anything thrown into a gRPC status, backpressure on server streams.
 * - {@linkcode createClient} gives a typed client: promises for unary methods, async iterables
 *   for server-streaming ones.
 *
 * Only unary and server-streaming methods are supported (all our proto uses). This module knows
 * nothing of the domain: the mapping of domain errors to status codes is injected as `toStatus`.
 *
 * @example Serve a service and call it
 * ```ts ignore
 * import * as grpc from "@grpc/grpc-js";
 * import { create } from "@bufbuild/protobuf";
 * import { MachineSchema, MachineService } from "../gen/baremetal/v1/baremetal_pb.ts";
 *
 * const server = new grpc.Server();
 * server.addService(
 *   createServiceDefinition(MachineService),
 *   createServiceHandlers(MachineService, machineService, { toStatus: domainErrorToStatus }),
 * );
 * const port = await new Promise<number>((resolve, reject) =>
 *   server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) =>
 *     err ? reject(err) : resolve(port))
 * );
 *
 * using client = createClient(MachineService, `127.0.0.1:${port}`);
 * const machine = await client.getMachine({ machineId: "m-1" });
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { encodeMessage } from "./encoding.ts";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type Message,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";

// ---------------------------------------------------------------------------------------------
// Service definition
// ---------------------------------------------------------------------------------------------

/** The method kinds this adapter supports; the others fail when a definition is created. */
export type SupportedMethodKind = "unary" | "server_streaming";

/**
 * Builds the grpc-js service definition of a protobuf-es service descriptor.
 *
 * Each method is keyed by its name as written in the `.proto` file (`GetMachine`), like
 * proto-loader does, with `originalName` set to its protobuf-es `localName` (`getMachine`):
 * `grpc.makeGenericClientConstructor` creates client methods under both names, and
 * `server.addService` finds an implementation under either. The path is
 * `/${service.typeName}/${method.name}`; messages are encoded with `toBinary` and decoded with
 * `fromBinary`, so decoded `bytes` fields are views into the received buffer.
 *
 * @param service The generated service descriptor, e.g. `MachineService`.
 * @returns The definition to pass to `grpc.Server.addService` or `makeGenericClientConstructor`.
 * @throws {TypeError} If a method is client-streaming or bidi-streaming.
 *
 * @example
 * ```ts ignore
 * const definition = createServiceDefinition(MachineService);
 * definition.GetMachine.path; // "/baremetal.v1.MachineService/GetMachine"
 * ```
 */
export function createServiceDefinition<S extends DescService>(
  service: S,
): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Message, Message>> = {};
  for (const method of service.methods) {
    const kind = supportedKind(method);
    definition[method.name] = {
      path: methodPath(method),
      // Always false for the supported kinds; kept as the rule so the flags read like grpc-js'.
      requestStream: method.methodKind === "client_streaming" ||
        method.methodKind === "bidi_streaming",
      responseStream: kind === "server_streaming",
      requestSerialize: serializer(method.input),
      requestDeserialize: requestDeserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
  }
  return definition;
}

function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function supportedKind(method: DescMethod): SupportedMethodKind {
  const kind = method.methodKind;
  if (kind === "unary" || kind === "server_streaming") return kind;
  throw new TypeError(
    `Cannot adapt method "${method.parent.typeName}.${method.name}" as only unary and ` +
      `server-streaming methods are supported: current value is "${kind}"`,
  );
}

function serializer(schema: DescMessage): grpc.serialize<Message> {
  return (value) => {
    const bytes = encodeMessage(schema, value);
    // A view, not a copy: grpc-js only reads the bytes to frame them.
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(schema: DescMessage): grpc.deserialize<Message> {
  return (bytes) => fromBinary(schema, bytes);
}

/**
 * A request whose bytes are not a valid message. grpc-js answers a throwing deserializer with a
 * hard-coded INTERNAL and never runs the handler, so bad input would look like a server bug;
 * instead the adapter turns this marker into a {@linkcode MalformedRequestError} that goes
 * through the wrapper (auth, logging) and `toStatus` like any other failure.
 */
class MalformedRequest {
  constructor(readonly typeName: string, readonly cause: unknown) {}
}

function requestDeserializer(schema: DescMessage): grpc.deserialize<Message> {
  return (bytes) => {
    try {
      return fromBinary(schema, bytes);
    } catch (error) {
      return new MalformedRequest(schema.typeName, error) as unknown as Message;
    }
  };
}

/** A request's bytes could not be decoded as its message type. */
export class MalformedRequestError extends Error {
  /** Fully qualified name of the expected message, e.g. `baremetal.v1.GetMachineRequest`. */
  readonly typeName: string;

  /**
   * @param typeName The expected message type.
   * @param options The decoding error as `cause`.
   */
  constructor(typeName: string, options?: ErrorOptions) {
    super(
      `the request is not a valid ${typeName} message (${
        options?.cause instanceof Error ? options.cause.message : String(options?.cause)
      }); send a protobuf-encoded ${typeName}`,
      options,
    );
    this.name = "MalformedRequestError";
    this.typeName = typeName;
  }
}

function checkDecoded(request: Message): void {
  if (request instanceof MalformedRequest) {
    throw new MalformedRequestError(request.typeName, { cause: request.cause });
  }
}

// ---------------------------------------------------------------------------------------------
// Typed handlers
// ---------------------------------------------------------------------------------------------

/** What a handler knows about the call it serves. */
export interface CallContext {
  /**
   * Aborted when the client cancels the call or its deadline passes (reason: an `AbortError`
   * `DOMException`), or when the server shuts down (reason: the shutdown signal's reason).
   * Never aborted once the handler has settled.
   */
  readonly signal: AbortSignal;
  /** Request metadata (headers) sent by the client. */
  readonly metadata: grpc.Metadata;
  /** The client's address, e.g. `127.0.0.1:53422`, or `unknown`. */
  readonly peer: string;
}

/** The context of a server-streaming call: a {@linkcode CallContext} that can send messages. */
export interface StreamContext<O extends DescMessage> extends CallContext {
  /**
   * Sends one message. Resolves once grpc-js accepted it, waiting for `drain` when its buffer is
   * full, so a handler that awaits every `send` never outruns a slow client.
   *
   * @throws The `signal`'s reason when the call is cancelled, before or while waiting.
   * @throws {Error} When the handler has already settled or the call was closed.
   */
  send(message: MessageShape<O>): Promise<void>;
}

/** Serves a unary method: one request in, one response out; throw to fail the call. */
export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  call: CallContext,
) => Promise<MessageShape<O>>;

/**
 * Serves a server-streaming method: send messages with `call.send`, resolve to end the stream
 * with OK, throw to end it with the status `toStatus` gives.
 */
export type ServerStreamingHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  call: StreamContext<O>,
) => Promise<void>;

/** The handler type of one method descriptor; `never` for unsupported method kinds. */
export type MethodHandler<M extends DescMethod> = M extends { methodKind: "unary" }
  ? UnaryHandler<M["input"], M["output"]>
  : M extends { methodKind: "server_streaming" } ? ServerStreamingHandler<M["input"], M["output"]>
  : never;

/**
 * The implementation of a whole service: one handler per method, keyed by `localName`
 * (`registerMachine`). A missing or misspelled method is a type error.
 */
export type ServiceImpl<S extends DescService> = {
  [K in keyof S["method"]]: MethodHandler<S["method"][K]>;
};

/** Which call a {@linkcode CallWrapper} wraps. */
export interface CallInfo {
  /** Fully qualified service name, e.g. `baremetal.v1.MachineService`. */
  readonly service: string;
  /** Method name as in the `.proto` file, e.g. `GetMachine`. */
  readonly method: string;
  /** Whether the method answers once or streams. */
  readonly kind: SupportedMethodKind;
}

/**
 * A handler as a {@linkcode CallWrapper} sees it. `Res` is the response message for unary
 * methods and `void` for server-streaming ones, whose `Ctx` is a {@linkcode StreamContext}.
 */
export type CallHandler<Req, Res, Ctx extends CallContext> = (
  request: Req,
  context: Ctx,
) => Promise<Res>;

/**
 * Wraps every handler of a service once, when the handlers are created, for cross-cutting
 * concerns such as logging and timing. The wrapper sees the request, the context and anything
 * the handler throws, before `toStatus` maps it.
 *
 * @example
 * ```ts ignore
 * function timing<Req, Res, Ctx extends CallContext>(
 *   info: CallInfo,
 *   next: CallHandler<Req, Res, Ctx>,
 * ): CallHandler<Req, Res, Ctx> {
 *   return async (request, context) => {
 *     const start = performance.now();
 *     try {
 *       return await next(request, context);
 *     } finally {
 *       console.error(`${info.method} took ${performance.now() - start} ms`);
 *     }
 *   };
 * }
 * ```
 */
export type CallWrapper = <Req, Res, Ctx extends CallContext>(
  info: CallInfo,
  next: CallHandler<Req, Res, Ctx>,
) => CallHandler<Req, Res, Ctx>;

/** The status a failed call ends with. */
export interface GrpcStatus {
  /** The gRPC status code; never `OK` for a failure (it is replaced by `INTERNAL`). */
  code: grpc.status;
  /** The message the client receives as `details`. */
  details: string;
  /** Trailing metadata sent with the status. */
  metadata?: grpc.Metadata;
}

/** Turns anything a handler throws into the status its call ends with. */
export type ToStatus = (err: unknown) => GrpcStatus;

/** Options of {@linkcode createServiceHandlers}. */
export interface ServiceHandlersOptions {
  /**
   * Applied to every handler of the service, for logging, timing and the like.
   *
   * @default no wrapper
   */
  wrap?: CallWrapper;
  /**
   * Maps what a handler throws to a status. If it throws itself or returns `OK`, the call fails
   * with {@linkcode defaultToStatus} of the original error instead.
   *
   * @default {@linkcode defaultToStatus}
   */
  toStatus?: ToStatus;
  /**
   * Server shutdown: aborting it aborts the `signal` of every call in progress (and of every
   * later call), with this signal's reason.
   *
   * @default never aborted
   */
  signal?: AbortSignal;
}

/**
 * Maps any thrown value to `INTERNAL`, with the error's message as details.
 *
 * @param err What the handler threw.
 * @returns `INTERNAL` with `err.message`, or a description of a thrown non-`Error` value.
 *
 * @example
 * ```ts ignore
 * defaultToStatus(new Error("boom")); // { code: grpc.status.INTERNAL, details: "boom" }
 * ```
 */
export function defaultToStatus(err: unknown): GrpcStatus {
  const details = err instanceof Error
    ? err.message
    : `Handler failed with a non-Error value: ${describeValue(err)}`;
  return { code: grpc.status.INTERNAL, details };
}

function describeValue(value: unknown): string {
  try {
    return typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    // e.g. an object whose toString throws, or a null-prototype object
    return typeof value;
  }
}

/**
 * Adapts a typed implementation to the callbacks grpc-js calls.
 *
 * For every call: creates the context with its `AbortSignal`, runs the (wrapped) handler, sends
 * its response or ends its stream with OK, and turns anything it throws, `Error` or not, into a
 * status through `toStatus`. A handler never leaks an exception to grpc-js. A method missing
 * from `impl` (possible only through a cast) is left out, so grpc-js answers `UNIMPLEMENTED`.
 *
 * @param service The generated service descriptor, e.g. `MachineService`.
 * @param impl One handler per method, keyed by `localName`.
 * @param options The wrapper, the error mapping and the shutdown signal.
 * @returns The implementation to pass to `grpc.Server.addService` with
 * {@linkcode createServiceDefinition}`(service)`; its keys are the `.proto` method names.
 * @throws {TypeError} If a method is client-streaming or bidi-streaming.
 *
 * @example
 * ```ts ignore
 * server.addService(
 *   createServiceDefinition(OperationService),
 *   createServiceHandlers(OperationService, operationService, { toStatus, wrap: logging }),
 * );
 * ```
 */
export function createServiceHandlers<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  options: ServiceHandlersOptions = {},
): grpc.UntypedServiceImplementation {
  const { wrap, toStatus = defaultToStatus, signal: shutdown } = options;
  const handlers: grpc.UntypedServiceImplementation = {};
  // The handler map is typed per method; at run time it is one function per localName.
  const byLocalName = impl as Record<string, unknown>;
  for (const method of service.methods) {
    const kind = supportedKind(method);
    const candidate = byLocalName[method.localName];
    if (typeof candidate !== "function") continue;
    const info: CallInfo = { service: service.typeName, method: method.name, kind };
    const settings: CallSettings = { toStatus, shutdown };
    if (kind === "unary") {
      const handler: CallHandler<Message, Message, CallContext> = (request, context) => {
        checkDecoded(request);
        return candidate.call(impl, request, context);
      };
      handlers[method.name] = adaptUnary(wrap ? wrap(info, handler) : handler, settings);
    } else {
      const handler: CallHandler<Message, void, StreamContext<DescMessage>> = (
        request,
        context,
      ) => {
        checkDecoded(request);
        return candidate.call(impl, request, context);
      };
      handlers[method.name] = adaptServerStreaming(wrap ? wrap(info, handler) : handler, settings);
    }
  }
  return handlers;
}

interface CallSettings {
  toStatus: ToStatus;
  shutdown: AbortSignal | undefined;
}

function adaptUnary(
  handler: CallHandler<Message, Message, CallContext>,
  settings: CallSettings,
): grpc.handleUnaryCall<Message, Message> {
  return (call, callback) => {
    void serveUnary(handler, settings, call, callback);
  };
}

async function serveUnary(
  handler: CallHandler<Message, Message, CallContext>,
  settings: CallSettings,
  call: grpc.ServerUnaryCall<Message, Message>,
  callback: grpc.sendUnaryData<Message>,
): Promise<void> {
  const lifetime = trackCall(call, settings.shutdown);
  const context: CallContext = {
    signal: lifetime.signal,
    metadata: call.metadata,
    peer: call.getPeer(),
  };
  let response: Message;
  try {
    response = await handler(call.request, context);
  } catch (err) {
    lifetime.finish();
    callback(statusOf(err, settings.toStatus));
    return;
  }
  lifetime.finish();
  callback(null, response);
}

function adaptServerStreaming(
  handler: CallHandler<Message, void, StreamContext<DescMessage>>,
  settings: CallSettings,
): grpc.handleServerStreamingCall<Message, Message> {
  return (call) => {
    void serveServerStreaming(handler, settings, call);
  };
}

async function serveServerStreaming(
  handler: CallHandler<Message, void, StreamContext<DescMessage>>,
  settings: CallSettings,
  call: grpc.ServerWritableStream<Message, Message>,
): Promise<void> {
  const lifetime = trackCall(call, settings.shutdown);
  const context: StreamContext<DescMessage> = {
    signal: lifetime.signal,
    metadata: call.metadata,
    peer: call.getPeer(),
    send: (message) => sendWithBackpressure(call, lifetime, message),
  };
  try {
    await handler(call.request, context);
  } catch (err) {
    lifetime.finish();
    // A cancelled call already has its status (CANCELLED, DEADLINE_EXCEEDED); grpc-js has
    // destroyed the stream, so there is nothing left to end.
    if (!call.cancelled) {
      // grpc-js' own `error` listener records this as the pending status and ends the stream,
      // which sends it once the buffered messages are flushed. (Deno 2.9.3's node:http2 may
      // still put the trailers ahead of the last data frames; the client then gets fewer
      // messages before the status, never a gap. See README, "Events and logs".)
      call.emit("error", statusOf(err, settings.toStatus));
    }
    return;
  }
  lifetime.finish();
  if (!call.cancelled) call.end();
}

async function sendWithBackpressure(
  call: grpc.ServerWritableStream<Message, Message>,
  lifetime: CallLifetime,
  message: Message,
): Promise<void> {
  if (lifetime.finished) {
    throw new Error("Cannot send a message as the handler has already settled");
  }
  lifetime.signal.throwIfAborted();
  if (call.write(message)) return;
  await drained(call, lifetime.signal);
}

function drained(
  call: grpc.ServerWritableStream<Message, Message>,
  signal: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    // grpc-js drops writes on a cancelled call without calling back, so `drain` may never come:
    // the cancel (our signal) or the stream's `close` must end the wait.
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    if (call.destroyed) {
      reject(new Error("Cannot send a message as the call is closed"));
      return;
    }
    const cleanup = (): void => {
      call.off("drain", onDrain);
      call.off("close", onClose);
      signal.removeEventListener("abort", onAbort);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error("Cannot send a message as the call is closed"));
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal.reason);
    };
    call.on("drain", onDrain);
    call.on("close", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

interface CallLifetime {
  readonly signal: AbortSignal;
  readonly finished: boolean;
  finish(): void;
}

/**
 * Links one call to its `AbortSignal`. grpc-js emits `cancelled` on every server call after its
 * status is sent, even on a normal finish, so only a call whose handler has not settled yet is
 * treated as cancelled.
 */
function trackCall(
  call: EventEmitter, // a grpc-js unary call or writable stream: both emit `cancelled`
  shutdown: AbortSignal | undefined,
): CallLifetime {
  const controller = new AbortController();
  let finished = false;
  const onCancelled = (): void => {
    if (finished) return;
    controller.abort(
      new DOMException("The call was cancelled by the client or its deadline passed", "AbortError"),
    );
  };
  // A listener removed on finish rather than AbortSignal.any(): the shutdown signal lives as
  // long as the server and must not keep every past call's controller reachable.
  const onShutdown = (): void => controller.abort(shutdown?.reason);
  call.on("cancelled", onCancelled);
  if (shutdown?.aborted) controller.abort(shutdown.reason);
  else shutdown?.addEventListener("abort", onShutdown, { once: true });
  return {
    signal: controller.signal,
    get finished(): boolean {
      return finished;
    },
    finish(): void {
      finished = true;
      call.off("cancelled", onCancelled);
      shutdown?.removeEventListener("abort", onShutdown);
    },
  };
}

/** The one place a thrown value becomes the status grpc-js sends. */
function statusOf(err: unknown, toStatus: ToStatus): grpc.StatusObject {
  let status: GrpcStatus;
  try {
    status = toStatus(err);
  } catch {
    status = defaultToStatus(err);
  }
  // Guards a mapping written without types: a failure must never be reported as OK.
  if (typeof status?.code !== "number" || status.code === grpc.status.OK) {
    status = defaultToStatus(err);
  }
  return {
    code: status.code,
    details: status.details,
    metadata: status.metadata ?? new grpc.Metadata(),
  };
}

// ---------------------------------------------------------------------------------------------
// Typed client
// ---------------------------------------------------------------------------------------------

/** Per-call options of a {@linkcode Client} method. */
export interface ClientCallOptions {
  /**
   * Aborting it cancels the call: a pending promise, or the iteration, rejects with a
   * `ServiceError` whose code is `CANCELLED`.
   */
  signal?: AbortSignal;
  /**
   * When the call fails with `DEADLINE_EXCEEDED`.
   *
   * @default no deadline
   */
  deadline?: Date;
  /**
   * Request metadata (headers).
   *
   * @default empty
   */
  metadata?: grpc.Metadata;
}

/** Calls a unary method; rejects with a grpc-js `ServiceError` (`.code`, `.details`). */
export type UnaryMethod<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: ClientCallOptions,
) => Promise<MessageShape<O>>;

/**
 * Calls a server-streaming method. The call starts at once (messages wait, bounded, until they
 * are read); iteration throws a grpc-js `ServiceError` if the call fails, and leaving the loop
 * early, or calling `return()` without iterating, cancels the call.
 */
export type ServerStreamingMethod<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: ClientCallOptions,
) => AsyncIterableIterator<MessageShape<O>>;

/** The client function of one method descriptor; `never` for unsupported method kinds. */
export type ClientMethod<M extends DescMethod> = M extends { methodKind: "unary" }
  ? UnaryMethod<M["input"], M["output"]>
  : M extends { methodKind: "server_streaming" } ? ServerStreamingMethod<M["input"], M["output"]>
  : never;

/** A typed client of a service: one function per method `localName`, plus `close`. */
export type Client<S extends DescService> =
  & { readonly [K in keyof S["method"]]: ClientMethod<S["method"][K]> }
  & {
    /** Closes the channel; calls in progress fail with `CANCELLED` or `UNAVAILABLE`. */
    close(): void;
    /** Same as `close()`, for `using`. */
    [Symbol.dispose](): void;
  };

/** Options of {@linkcode createClient}. */
export interface CreateClientOptions {
  /**
   * How to authenticate the channel.
   *
   * @default grpc.credentials.createInsecure()
   */
  credentials?: grpc.ChannelCredentials;
  /**
   * grpc-js channel options, e.g. `{ "grpc.keepalive_time_ms": 10_000 }`.
   *
   * @default {}
   */
  channelOptions?: grpc.ChannelOptions;
  /**
   * A bearer token sent as `authorization: Bearer <token>` metadata on every call (merged into
   * the call's own metadata, which it does not replace); works on plaintext channels too.
   *
   * @default no authorization metadata
   */
  token?: string;
}

/**
 * Creates a typed client of a service over one grpc-js channel.
 *
 * @param service The generated service descriptor, e.g. `MachineService`.
 * @param address `host:port` of the server, e.g. `127.0.0.1:50051`.
 * @param options Credentials and channel options.
 * @returns The client; close it (or declare it with `using`) when done.
 * @throws {TypeError} If a method is client-streaming or bidi-streaming, or named `close`.
 *
 * @example
 * ```ts ignore
 * using client = createClient(OperationService, "127.0.0.1:50051");
 * for await (const chunk of client.streamOperationLogs({ operationId: "op-1" })) {
 *   console.log(new TextDecoder().decode(chunk.data));
 * }
 * ```
 */
export function createClient<S extends DescService>(
  service: S,
  address: string,
  options: CreateClientOptions = {},
): Client<S> {
  const { credentials = grpc.credentials.createInsecure(), channelOptions = {}, token } = options;
  const definition = createServiceDefinition(service);
  const channel = new grpc.Client(address, credentials, channelOptions);
  const methods: Record<string, unknown> = {};
  for (const method of service.methods) {
    if (method.localName === "close") {
      throw new TypeError(
        `Cannot create a client of "${service.typeName}" as method "${method.name}" clashes ` +
          `with close()`,
      );
    }
    const target: CallTarget = {
      channel,
      method: definition[method.name],
      input: method.input,
      token,
    };
    methods[method.localName] = method.methodKind === "unary"
      ? (request: MessageInitShape<DescMessage>, callOptions?: ClientCallOptions) =>
        callUnary(target, request, callOptions)
      : (request: MessageInitShape<DescMessage>, callOptions?: ClientCallOptions) =>
        callServerStreaming(target, request, callOptions);
  }
  const close = (): void => channel.close();
  // The map holds exactly one function of the right kind per method localName.
  return Object.assign(methods, { close, [Symbol.dispose]: close }) as Client<S>;
}

interface CallTarget {
  channel: grpc.Client;
  method: grpc.MethodDefinition<Message, Message>;
  input: DescMessage;
  /** Bearer token added to every call's metadata. */
  token?: string;
}

/** The call's metadata, with the target's bearer token when it has one (the caller's is copied). */
function callMetadata(target: CallTarget, metadata: grpc.Metadata | undefined): grpc.Metadata {
  if (target.token === undefined || target.token === "") return metadata ?? new grpc.Metadata();
  const merged = metadata?.clone() ?? new grpc.Metadata();
  merged.set("authorization", `Bearer ${target.token}`);
  return merged;
}

function grpcCallOptions(deadline: Date | undefined): grpc.CallOptions {
  return deadline === undefined ? {} : { deadline };
}

function callUnary(
  target: CallTarget,
  request: MessageInitShape<DescMessage>,
  options: ClientCallOptions = {},
): Promise<Message> {
  const { signal, deadline } = options;
  const metadata = callMetadata(target, options.metadata);
  const { channel, method, input } = target;
  return new Promise((resolve, reject) => {
    const onAbort = (): void => call.cancel();
    const call = channel.makeUnaryRequest<Message, Message>(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      create(input, request),
      metadata,
      grpcCallOptions(deadline),
      (err, response) => {
        signal?.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve(response as Message); // grpc-js passes a response whenever err is null
      },
    );
    // Cancelling (rather than rejecting with signal.reason) keeps one rejection type: grpc-js
    // answers with a CANCELLED ServiceError.
    if (signal?.aborted) call.cancel();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Messages a stream buffers for a consumer that is not reading before it pauses the call. */
const STREAM_BUFFER = 64;

function callServerStreaming(
  target: CallTarget,
  request: MessageInitShape<DescMessage>,
  options: ClientCallOptions = {},
): AsyncIterableIterator<Message> {
  const { signal, deadline } = options;
  const metadata = callMetadata(target, options.metadata);
  const { channel, method, input } = target;
  // The call starts now, not at the first next(): a caller can open a stream, then act, and
  // receive what its action caused.
  const call = channel.makeServerStreamRequest<Message, Message>(
    method.path,
    method.requestSerialize,
    method.responseDeserialize,
    create(input, request),
    metadata,
    grpcCallOptions(deadline),
  );
  // Our own queue rather than the Readable's async iterator: a Node stream that errors discards
  // the messages it still buffers, so a status that ends the stream (e.g. RESOURCE_EXHAUSTED for
  // a watcher that fell behind) would swallow everything the server sent before it. Here every
  // message received is delivered, then the error. Above STREAM_BUFFER unread messages the call
  // is paused, so HTTP/2 flow control holds the server back.
  const queue: Message[] = [];
  let failure: unknown;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  call.on("data", (message: Message) => {
    queue.push(message);
    if (queue.length >= STREAM_BUFFER) call.pause();
    notify();
  });
  call.on("error", (error: unknown) => {
    failure ??= error;
    ended = true;
    notify();
  });
  call.on("end", () => {
    ended = true;
    notify();
  });
  const onAbort = (): void => call.cancel();
  if (signal?.aborted) call.cancel();
  else signal?.addEventListener("abort", onAbort, { once: true });
  let closed = false;
  const finish = (): void => {
    closed = true;
    signal?.removeEventListener("abort", onAbort);
    // A no-op once the status arrived; otherwise the consumer left early and the server must
    // learn it (its handler's signal aborts).
    call.cancel();
    notify();
  };
  return {
    async next(): Promise<IteratorResult<Message>> {
      while (!closed) {
        const message = queue.shift();
        if (message !== undefined) {
          if (queue.length < STREAM_BUFFER / 2 && call.isPaused()) call.resume();
          return { value: message, done: false };
        }
        if (ended) {
          const error = failure;
          finish();
          if (error !== undefined) throw error;
          break;
        }
        await new Promise<void>((resolve) => wake = resolve);
      }
      return { value: undefined, done: true };
    },
    return(): Promise<IteratorResult<Message>> {
      finish();
      queue.length = 0;
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
