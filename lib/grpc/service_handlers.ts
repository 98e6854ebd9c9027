/**
 * Adapts typed async handlers ({@linkcode ServiceImpl}) to the callbacks grpc-js calls: one
 * `AbortSignal` per call (made when first read), one wrapper for cross-cutting concerns, one
 * funnel that turns anything thrown into a gRPC status, backpressure on server streams. With
 * `createServiceDefinition` (`./service_definition.ts`), the bridge between protobuf-es service
 * descriptors and grpc-js.
 *
 * This module knows nothing of the domain: the mapping of domain errors to status codes is
 * injected as `toStatus`.
 *
 * @example Serve a service
 * ```ts ignore
 * import * as grpc from "@grpc/grpc-js";
 * import { MachineService } from "../gen/baremetal/v1/baremetal_pb.ts";
 * import { createServiceDefinition } from "./service_definition.ts";
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
 * ```
 *
 * @module
 */

import type * as grpc from "@grpc/grpc-js";
import type { DescMessage, DescService, Message } from "@bufbuild/protobuf";
import { type CallSettings, ServerCallContext } from "./call_context.ts";
import { encodeMessage } from "./encoding.ts";
import type {
  CallContext,
  CallHandler,
  CallInfo,
  CallObserver,
  CallWrapper,
  MethodObserver,
  ServiceImpl,
  StreamContext,
} from "./handler_contract.ts";
import { defaultToStatus, statusName, statusOf, type ToStatus } from "./handler_status.ts";
import { checkDecoded, supportedKind } from "./service_definition.ts";
import { ServerStreamContext } from "./stream_context.ts";

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
  /**
   * Told of every call's start and of its end with the status the client got (metrics).
   *
   * @default nothing
   */
  observe?: CallObserver;
}

/** The default of {@linkcode ServiceHandlersOptions.maxStreamBufferBytes}: 64 KiB. */
export const DEFAULT_MAX_STREAM_BUFFER_BYTES = 64 * 1024;

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
    observe,
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
      observer: observe?.(info),
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

function adaptUnary(
  handler: CallHandler<Message, Message, CallContext>,
  settings: CallSettings,
): grpc.handleUnaryCall<Message, Message> {
  const observer = settings.observer;
  return (call, callback) => {
    const context = new ServerCallContext(call, settings.shutdown);
    const start = observer ? begin(observer) : 0;
    let pending: Promise<Message>;
    try {
      pending = handler(call.request, context);
    } catch (err) {
      // A handler that throws before returning its promise fails the call the same way.
      context.finish();
      failUnary(err, settings, callback, start);
      return;
    }
    // `then` with two callbacks rather than an async function: one promise reaction per call
    // instead of an extra promise and its resumption. `Promise.resolve` returns a native promise
    // as is, and still copes with an untyped handler that returns a plain value.
    Promise.resolve(pending).then(
      (response) => {
        context.finish();
        callback(null, response);
        if (observer) end(observer, "OK", start);
      },
      (err) => {
        context.finish();
        failUnary(err, settings, callback, start);
      },
    );
  };
}

function failUnary(
  err: unknown,
  settings: CallSettings,
  callback: grpc.sendUnaryData<Message>,
  start: number,
): void {
  const status = statusOf(err, settings.toStatus);
  callback(status);
  if (settings.observer) end(settings.observer, statusName(status.code), start);
}

/** Tells `observer` a call started; returns the start time for {@linkcode end}. */
function begin(observer: MethodObserver): number {
  observer.started();
  return performance.now();
}

function end(observer: MethodObserver, code: string, start: number): void {
  observer.ended(code, (performance.now() - start) / 1000);
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
  const observer = settings.observer;
  const start = observer ? begin(observer) : 0;
  try {
    await handler(call.request, context);
  } catch (err) {
    context.finish();
    // A cancelled call already has its status (CANCELLED, DEADLINE_EXCEEDED); grpc-js has
    // destroyed the stream, so there is nothing left to end.
    if (call.cancelled) {
      if (observer) end(observer, "CANCELLED", start);
      return;
    }
    // grpc-js' own `error` listener records this as the pending status and ends the stream,
    // which sends it once the buffered messages are flushed. (Deno 2.9.3's node:http2 may
    // still put the trailers ahead of the last data frames; the client then gets fewer
    // messages before the status, never a gap. See docs/lifecycle.md, "Events and logs".)
    const status = statusOf(err, settings.toStatus);
    call.emit("error", status);
    if (observer) end(observer, statusName(status.code), start);
    return;
  }
  context.finish();
  if (!call.cancelled) call.end();
  if (observer) end(observer, call.cancelled ? "CANCELLED" : "OK", start);
}
