/**
 * The bridge between protobuf-es service descriptors and grpc-js, with no `.proto` file or
 * proto-loader at run time:
 *
 * - {@linkcode createServiceDefinition} derives the grpc-js `ServiceDefinition` (paths, streaming
 *   flags, binary codecs) from a generated `GenService`.
 * - {@linkcode createServiceHandlers} adapts typed async handlers ({@linkcode ServiceImpl}) to
 *   grpc-js callbacks: one `AbortSignal` per call (made when first read), one wrapper for
 *   cross-cutting concerns, one funnel that turns anything thrown into a gRPC status,
 *   backpressure on server streams.
 *
 * The client side is `./client.ts`, over `node:http2` without grpc-js.
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
 * // A client: createClient() of ./client.ts.
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { encodeMessage } from "./encoding.ts";
import {
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type Message,
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
    // The cached encoding of a snapshot already is a Buffer; otherwise a view, not a copy:
    // grpc-js only reads the bytes to frame them.
    return Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
  /**
   * The client's address, e.g. `127.0.0.1:53422`, or `unknown`. Read on first use, from the
   * connection: first read once the call has ended (its status sent), it is `unknown`.
   */
  readonly peer: string;
}

/** The context of a server-streaming call: a {@linkcode CallContext} that can send messages. */
export interface StreamContext<O extends DescMessage> extends CallContext {
  /**
   * Sends one message. Resolves at once while the stream's unsent bytes stay under the budget
   * ({@linkcode ServiceHandlersOptions.maxStreamBufferBytes}), else once enough of them were
   * handed to HTTP/2, so a handler that awaits every `send` never outruns a slow client and
   * never buffers more than the budget for it.
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
  /**
   * Bytes a server stream may have written and not yet handed to HTTP/2 before `send` waits.
   * Messages under it are all given to HTTP/2 at once (grpc-js alone writes one message per
   * HTTP/2 write callback, a few dozen per event-loop turn); the budget bounds what a client
   * that stops reading pins in the server, per stream.
   *
   * @default {@linkcode DEFAULT_MAX_STREAM_BUFFER_BYTES}
   */
  maxStreamBufferBytes?: number;
  /**
   * Called when a server stream starts holding messages back because its client stopped
   * reading (its connection took the whole budget without moving its flow-control window), once
   * per such pause; for logging.
   *
   * @default nothing
   */
  onStall?: (info: CallInfo) => void;
}

/** The default of {@linkcode ServiceHandlersOptions.maxStreamBufferBytes}: 64 KiB. */
export const DEFAULT_MAX_STREAM_BUFFER_BYTES = 64 * 1024;

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
 * For every call: creates the context (its `AbortSignal` is made when first read), runs the
 * (wrapped) handler, sends its response or ends its stream with OK, and turns anything it
 * throws, `Error` or not, into a status through `toStatus`. A handler never leaks an exception
 * to grpc-js. A method missing from `impl` (possible only through a cast) is left out, so
 * grpc-js answers `UNIMPLEMENTED`.
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
  const {
    wrap,
    toStatus = defaultToStatus,
    signal: shutdown,
    maxStreamBufferBytes = DEFAULT_MAX_STREAM_BUFFER_BYTES,
    onStall,
  } = options;
  const handlers: grpc.UntypedServiceImplementation = {};
  // The handler map is typed per method; at run time it is one function per localName.
  const byLocalName = impl as Record<string, unknown>;
  for (const method of service.methods) {
    const kind = supportedKind(method);
    const candidate = byLocalName[method.localName];
    if (typeof candidate !== "function") continue;
    const info: CallInfo = { service: service.typeName, method: method.name, kind };
    const output = method.output;
    const settings: CallSettings = {
      toStatus,
      shutdown,
      maxStreamBufferBytes,
      onStall: onStall && (() => onStall(info)),
      // Cached for a frozen message (events, log lines), so the serializer reuses the work.
      encode: (message) => encodeMessage(output, message),
    };
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
  maxStreamBufferBytes: number;
  onStall: (() => void) | undefined;
  encode: (message: Message) => Uint8Array;
}

function adaptUnary(
  handler: CallHandler<Message, Message, CallContext>,
  settings: CallSettings,
): grpc.handleUnaryCall<Message, Message> {
  return (call, callback) => {
    const context = new ServerCallContext(call, settings.shutdown);
    let pending: Promise<Message>;
    try {
      pending = handler(call.request, context);
    } catch (err) {
      // A handler that throws before returning its promise fails the call the same way.
      context.finish();
      callback(statusOf(err, settings.toStatus));
      return;
    }
    // `then` with two callbacks rather than an async function: one promise reaction per call
    // instead of an extra promise and its resumption. `Promise.resolve` returns a native promise
    // as is, and still copes with an untyped handler that returns a plain value.
    Promise.resolve(pending).then(
      (response) => {
        context.finish();
        callback(null, response);
      },
      (err) => {
        context.finish();
        callback(statusOf(err, settings.toStatus));
      },
    );
  };
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
  const context = new ServerStreamContext(call, settings);
  try {
    await handler(call.request, context);
  } catch (err) {
    context.finish();
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
  context.finish();
  if (!call.cancelled) call.end();
}

/**
 * Resolves when `ready` is called back, rejects when the call is cancelled or closed first.
 * grpc-js drops writes on a cancelled call without calling back, so the wait must also end on
 * the cancel (our signal) or the stream's `close`.
 */
function untilReady(
  call: grpc.ServerWritableStream<Message, Message>,
  signal: AbortSignal,
  onReady: (ready: () => void) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    if (call.destroyed) {
      reject(new Error("Cannot send a message as the call is closed"));
      return;
    }
    let settled = false;
    const cleanup = (): void => {
      settled = true;
      call.off("close", onClose);
      signal.removeEventListener("abort", onAbort);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error("Cannot send a message as the call is closed"));
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal.reason);
    };
    call.on("close", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
    onReady(() => {
      if (settled) return;
      cleanup();
      resolve();
    });
  });
}

/**
 * The parts of grpc-js' per-call object (`BaseServerInterceptingCall`, reached as `call.call`
 * when the server has no interceptors, as here) that writing a batch needs. Private to grpc-js,
 * whose version is pinned; without them the adapter writes one message per HTTP/2 write.
 */
interface GrpcCallInternals {
  stream: { write(bytes: Uint8Array, callback: (error?: Error | null) => void): boolean };
  maxSendMessageSize: number;
  checkCancelled(): boolean;
  maybeSendMetadata(): void;
}

function internalsOf(
  call: grpc.ServerWritableStream<Message, Message>,
): GrpcCallInternals | undefined {
  const base = (call as unknown as { call?: Partial<GrpcCallInternals> }).call;
  return typeof base?.stream?.write === "function" &&
      typeof base.checkCancelled === "function" &&
      typeof base.maybeSendMetadata === "function" &&
      typeof base.maxSendMessageSize === "number"
    ? base as GrpcCallInternals
    : undefined;
}

/**
 * Lets grpc-js' stream hand every message buffered behind the one in progress to HTTP/2 at
 * once, as one write. Its objectMode `Writable` has no `_writev`, so it writes one message per
 * HTTP/2 write callback: measured on Deno 2.9.3, a few dozen messages per event-loop turn per
 * stream, fewer than a zero-delay burst publishes in one turn, so a reading watcher fell ever
 * further behind. `_writev` is Node's documented hook for this. The batch is framed here as
 * grpc-js frames a message (flag 0, no compression: grpc-js never compresses responses), in one
 * buffer: one HTTP/2 write and one socket write instead of one per message (Deno's socket
 * writes were a third of the server's CPU with 200 watchers). A message over the send limit,
 * or grpc-js internals not as expected, fall back to grpc-js' own `_write` per message.
 */
function writeBatches(
  call: grpc.ServerWritableStream<Message, Message>,
  encode: (message: Message) => Uint8Array,
): void {
  const writable = call as unknown as {
    _write(chunk: unknown, encoding: string, callback: (error?: Error | null) => void): void;
    _writev?(
      chunks: { chunk: unknown; encoding: string }[],
      callback: (error?: Error | null) => void,
    ): void;
  };
  const base = internalsOf(call);
  const oneByOne = (
    chunks: { chunk: unknown; encoding: string }[],
    callback: (error?: Error | null) => void,
  ): void => {
    let pending = chunks.length;
    let failure: Error | null = null;
    for (const { chunk, encoding } of chunks) {
      writable._write(chunk, encoding, (error) => {
        failure ??= error ?? null;
        if (--pending === 0) callback(failure);
      });
    }
  };
  writable._writev = (chunks, callback) => {
    if (!base) return oneByOne(chunks, callback);
    // As grpc-js: a write on a cancelled call is dropped without a callback.
    if (base.checkCancelled()) return;
    const limit = base.maxSendMessageSize;
    const bodies: Uint8Array[] = [];
    let size = 0;
    for (const { chunk } of chunks) {
      const body = encode(chunk as Message);
      if (limit !== -1 && body.byteLength > limit) return oneByOne(chunks, callback);
      bodies.push(body);
      size += 5 + body.byteLength;
    }
    const out = Buffer.allocUnsafe(size);
    let offset = 0;
    for (const body of bodies) {
      out[offset] = 0;
      out.writeUInt32BE(body.byteLength, offset + 1);
      out.set(body, offset + 5);
      offset += 5 + body.byteLength;
    }
    base.maybeSendMetadata();
    base.stream.write(out, (error) => callback(error ?? null));
  };
}

/** A grpc-js unary call or writable stream: both emit `cancelled` and keep `cancelled` set. */
type ServerCall = EventEmitter & {
  readonly cancelled: boolean;
  readonly metadata: grpc.Metadata;
  getPeer(): string;
};

/**
 * The context of one call, and the link between the call and its `AbortSignal`.
 *
 * The signal, and the listeners that abort it, are made on first use: most unary handlers never
 * read it, and an `AbortController` plus two listeners added and removed per call were a
 * measurable share of a unary call's CPU time. A late first read loses nothing, as both causes
 * of an abort stay observable: grpc-js sets `call.cancelled` before it emits `cancelled`, and
 * the shutdown signal stays aborted. The peer is read on first use too (it costs two
 * `getpeername` calls).
 *
 * grpc-js emits `cancelled` on every server call after its status is sent, even on a normal
 * finish, so only a call whose handler has not settled yet is treated as cancelled.
 */
class ServerCallContext implements CallContext {
  readonly #call: ServerCall;
  readonly #shutdown: AbortSignal | undefined;
  #controller: AbortController | undefined;
  #cleanup: (() => void) | undefined;
  #peer: string | undefined;
  #finished = false;

  constructor(call: ServerCall, shutdown: AbortSignal | undefined) {
    this.#call = call;
    this.#shutdown = shutdown;
  }

  get metadata(): grpc.Metadata {
    return this.#call.metadata;
  }

  get peer(): string {
    return this.#peer ??= this.#call.getPeer();
  }

  get signal(): AbortSignal {
    return (this.#controller ??= this.#link()).signal;
  }

  /** Whether the handler has settled. */
  get finished(): boolean {
    return this.#finished;
  }

  /** Marks the handler settled: the signal is never aborted after this. */
  finish(): void {
    this.#finished = true;
    if (this.#cleanup) {
      this.#cleanup();
      this.#cleanup = undefined;
    }
  }

  #link(): AbortController {
    const controller = new AbortController();
    if (this.#finished) return controller;
    const call = this.#call;
    const shutdown = this.#shutdown;
    if (call.cancelled) {
      controller.abort(cancelledReason());
      return controller;
    }
    if (shutdown?.aborted) {
      controller.abort(shutdown.reason);
      return controller;
    }
    const onCancelled = (): void => {
      if (!this.#finished) controller.abort(cancelledReason());
    };
    // A listener removed on finish rather than AbortSignal.any(): the shutdown signal lives as
    // long as the server and must not keep every past call's controller reachable.
    const onShutdown = (): void => controller.abort(shutdown?.reason);
    call.on("cancelled", onCancelled);
    shutdown?.addEventListener("abort", onShutdown, { once: true });
    this.#cleanup = () => {
      call.off("cancelled", onCancelled);
      shutdown?.removeEventListener("abort", onShutdown);
    };
    return controller;
  }
}

/**
 * The HTTP/2 session under a grpc-js server stream, if it can be found. grpc-js keeps it in
 * private fields (`call.call.stream.session` with no server interceptors, as here); the version
 * is pinned, and without it the adapter only loses the stall detection below.
 */
function sessionOf(
  call: grpc.ServerWritableStream<Message, Message>,
): { state: { remoteWindowSize?: number } } | undefined {
  const session = (call as unknown as { call?: { stream?: { session?: unknown } } }).call?.stream
    ?.session as { state?: { remoteWindowSize?: number } } | undefined;
  return typeof session?.state?.remoteWindowSize === "number"
    ? session as { state: { remoteWindowSize?: number } }
    : undefined;
}

/** Longest pause between two looks at a stalled connection's window. */
const STALL_POLL_MAX_MS = 250;

/** A {@linkcode ServerCallContext} that can send messages on a server stream. */
class ServerStreamContext extends ServerCallContext implements StreamContext<DescMessage> {
  // An own property, not a method, so a handler may pass `call.send` around unbound.
  readonly send: (message: Message) => Promise<void>;
  // Bytes written and not yet handed to HTTP/2, and the sender waiting for room, if any.
  #unsent = 0;
  #room: (() => void) | undefined;

  constructor(stream: grpc.ServerWritableStream<Message, Message>, settings: CallSettings) {
    super(stream, settings.shutdown);
    writeBatches(stream, settings.encode);
    const budget = settings.maxStreamBufferBytes;
    // Deno 2.9.3's node:http2 calls a write back as soon as it queued the bytes, whatever HTTP/2
    // flow control allows, so write callbacks alone would let a client that stops reading pin
    // everything the server writes to it (measured: 200 such watchers, 72,000 events: 2.6 GB).
    // The connection's remote window is the one live signal: it moves whenever data goes out
    // or the peer acknowledges some. A stream handed the budget while it stood still is
    // stalled. (A stalled stream that shares its connection with a reading one goes unseen:
    // the window moves. See README, "Events and logs".)
    const session = sessionOf(stream);
    let window: number | undefined;
    let handed = 0;
    /** Whether the connection showed no progress while this stream was handed the budget. */
    const stalled = (): boolean => {
      if (!session || handed < budget) return false;
      const now = session.state.remoteWindowSize;
      if (now === window) return true;
      window = now;
      handed = 0;
      return false;
    };
    this.send = async (message) => {
      if (this.finished) {
        throw new Error("Cannot send a message as the handler has already settled");
      }
      this.signal.throwIfAborted();
      const size = settings.encode(message).byteLength;
      this.#unsent += size;
      handed += size;
      stream.write(message, () => {
        this.#unsent -= size;
        // Wait until half the budget is free, so a slow client is written to in batches.
        if (this.#room && this.#unsent <= budget / 2) {
          const room = this.#room;
          this.#room = undefined;
          room();
        }
      });
      if (this.#unsent >= budget) {
        await untilReady(stream, this.signal, (ready) => this.#room = ready);
      }
      if (!stalled()) return;
      settings.onStall?.();
      // Look again at growing intervals (a turn, then up to STALL_POLL_MAX_MS): no event says
      // when the peer reads again.
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        let wait = 0;
        while (stalled()) {
          await untilReady(stream, this.signal, (ready) => timer = setTimeout(ready, wait));
          wait = Math.min(STALL_POLL_MAX_MS, Math.max(1, wait * 2));
        }
      } finally {
        clearTimeout(timer);
      }
    };
  }
}

function cancelledReason(): DOMException {
  return new DOMException(
    "The call was cancelled by the client or its deadline passed",
    "AbortError",
  );
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
