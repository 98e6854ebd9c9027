/**
 * The typed contract between a service implementation and the grpc-js adapter
 * (`./service_handlers.ts`): one async handler per method ({@linkcode ServiceImpl}), the call
 * context it receives ({@linkcode CallContext}, {@linkcode StreamContext}), and the shape of the
 * wrapper that every handler of a service passes through ({@linkcode CallWrapper}).
 *
 * @module
 */

import type * as grpc from "@grpc/grpc-js";
import type { DescMessage, DescMethod, DescService, MessageShape } from "@bufbuild/protobuf";

/** The method kinds this adapter supports; the others fail when a definition is created. */
export type SupportedMethodKind = "unary" | "server_streaming";

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
   * (the `maxStreamBufferBytes` option of `createServiceHandlers`), else once enough of them were
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

/**
 * What is told of every call of one method: its start, and its end with the status it ended
 * with. Both run on the call's path, so they must be cheap and must not throw.
 */
export interface MethodObserver {
  /** A call of the method started (before the handler runs). */
  started(): void;
  /**
   * The call ended.
   *
   * @param code The status it ended with, by name: `OK`, `NOT_FOUND`, `CANCELLED` (a server
   * stream whose client went away), ...
   * @param seconds How long since it started.
   */
  ended(code: string, seconds: number): void;
}

/**
 * Observes the calls of a service, for metrics: asked once per method when the handlers are
 * created, so the per-call work is what the returned {@linkcode MethodObserver} does. It sees
 * the status the client gets, after `toStatus` (which a {@linkcode CallWrapper} cannot).
 */
export type CallObserver = (info: CallInfo) => MethodObserver;
