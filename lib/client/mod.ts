/**
 * The client side of the gRPC API, shared by the CLI, the benchmarks, the load test and the
 * tests: connect-es clients (`createClient` over `createGrpcTransport`, HTTP/2) of the generated
 * service descriptors, a bearer token as an interceptor, TLS through the transport's node
 * options, and the one table of status code names (connect's `Code` enum). It imports nothing of
 * grpc-js, so the CLI's start-up never loads it.
 *
 * May import: `lib/gen/` and the connect-es packages (`@connectrpc/connect`,
 * `@connectrpc/connect-node`), `node:` modules. Never grpc-js nor another folder of lib/: the
 * server side (`lib/grpc/`) and the domain stay out of the client (checked by
 * `test/architecture_test.ts`). `lib/cli/` may import it.
 *
 * @example
 * ```ts ignore
 * using machines = connectClient(MachineService, "127.0.0.1:50051");
 * const machine = await machines.getMachine({ machineId: "m-1" }, { timeoutMs: 10_000 });
 * ```
 *
 * @module
 */

import type { DescService } from "@bufbuild/protobuf";
import {
  type Client as ConnectClient,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";
import { type ErrorInfo, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.ts";

export { Code, codeName, statusName } from "./code.ts";
export { ConnectError };

/** The largest message a client accepts, as grpc-js's default `grpc.max_receive_message_length`. */
export const MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * HTTP/2 flow-control windows. The default 64 KiB connection window is shared by every stream
 * of a client: one paused stream (a consumer not reading) could hold all of it and stall the
 * others, and a busy event loop late with its WINDOW_UPDATEs throttles every watcher on the
 * connection (a load-test watcher lagged once in CI with 4 watchers on one connection). Each
 * stream still buffers at most its own window before the server is held back.
 */
const CONNECTION_WINDOW_BYTES = 8 * 1024 * 1024;
const STREAM_WINDOW_BYTES = 1024 * 1024;

/** TLS settings of a client; PEM contents, not paths. */
export interface ClientTls {
  /** CA certificates to trust instead of the system roots. @default the system roots */
  ca?: string | Uint8Array;
  /** Client certificate chain, for mutual TLS (with `key`). @default none */
  cert?: string | Uint8Array;
  /** Private key of `cert`. @default none */
  key?: string | Uint8Array;
}

/** Options of {@linkcode connectClient}. */
export interface ClientOptions {
  /**
   * Use TLS: `true` for the system roots, or the CA and client certificate to use.
   *
   * @default plaintext (HTTP/2 with prior knowledge)
   */
  tls?: boolean | ClientTls;
  /**
   * A bearer token sent as `authorization: Bearer <token>` on every call.
   *
   * @default no authorization header
   */
  token?: string;
}

/** A server-streaming method whose iterator also has `return()`, which cancels the call. */
type Streaming<F> = F extends (...args: infer A) => AsyncIterable<infer O>
  ? (...args: A) => AsyncIterableIterator<O>
  : F;

/**
 * A connect-es client of a service that owns its connection: `close()` (or `using`) ends it.
 * Server streams start at the call and, as with grpc-js, leaving a `for await` loop early (or
 * `return()`) cancels the call: connect's own iterables omit `return()`, so a loop that breaks
 * would leave the stream open until the connection closes.
 */
export type Client<S extends DescService> =
  & { [K in keyof ConnectClient<S>]: Streaming<ConnectClient<S>[K]> }
  & {
    /** Closes the connection; calls in progress fail with `Canceled`. */
    close(): void;
    /** Same as `close()`, for `using`. */
    [Symbol.dispose](): void;
  };

/**
 * Workaround for a Deno 2.9.3 node:http2 defect: when the server closes the connection (GOAWAY,
 * e.g. at shutdown), Deno destroys every stream of the session, even one whose response has
 * wholly arrived (its trailers, which carry END_STREAM, were received) but is not read yet. Its
 * buffered messages are dropped and connect-node's read fails with `[unknown] Premature close`;
 * Node keeps such a stream until its body is read. Here that one error-less destroy waits for the
 * body's `end`; any other destroy (an error, the call's cancel) goes through.
 */
function keepReceivedResponse(stream: http2.ClientHttp2Stream): void {
  let trailersReceived = false;
  let deferred = false;
  stream.once("trailers", () => trailersReceived = true);
  const destroy = stream.destroy;
  stream.destroy = function (error?: Error): http2.ClientHttp2Stream {
    if (error == null && trailersReceived && !deferred && !stream.readableEnded) {
      deferred = true;
      stream.once("end", () => destroy.call(stream));
      return stream;
    }
    return destroy.call(stream, error);
  };
}

/** The private state hook of connect-node 2.2.0's session manager (exact-pinned in deno.json). */
interface SessionStates {
  setState(state: { t: string; conn?: Promise<http2.ClientHttp2Session> }): void;
}

/**
 * Workaround for a connect-node 2.2.0 defect: when a session dies between its `connect` event and
 * the promise continuation that adopts it (on Deno, a TLS 1.3 client without the certificate a
 * mutual-TLS server requires: the handshake completes on the client's side, then the server's
 * alert destroys the session), the manager's `ready()` throws inside that continuation, the
 * state stays "connecting" on a settled promise, and `gotoReady()` loops on `await` forever: a
 * microtask spin at 100% CPU in which no timer, not even the call's deadline, ever fires. Here
 * such a session rejects the connection attempt instead, so the call fails with Unavailable.
 * Every session also keeps an "error" listener of its own (see inside).
 */
function refuseDeadSession(
  session: http2.ClientHttp2Session,
): http2.ClientHttp2Session {
  // A session emits "error" after `destroy(error)` failed its streams (the calls) with it, some
  // ticks later (Deno: after its TLS socket's "close"). connect-node listens only while the
  // session is its current state, so a client closed in between (`close()` as soon as a call
  // rejected on a mutual-TLS server's alert), or a session that died as it opened, had no
  // listener left and the error, already the call's, ended the process. This listener lives as
  // long as the session; it closes the session should an error ever come before the destroy.
  session.on("error", () => {
    if (!session.destroyed) session.destroy();
  });
  if (!session.destroyed && !session.closed) return session;
  throw new ConnectError("the connection closed as it opened", Code.Unavailable);
}

/**
 * connect-node's session manager gives no option for the connection window (node:http2 has
 * only `setLocalWindowSize`), so it is widened on each new session at its first request. Each
 * stream gets {@linkcode keepReceivedResponse}, each new session {@linkcode refuseDeadSession}.
 */
class SessionManager extends Http2SessionManager {
  readonly #widened = new WeakSet<http2.Http2Session>();

  constructor(...args: ConstructorParameters<typeof Http2SessionManager>) {
    super(...args);
    const states = this as unknown as SessionStates;
    const setState = states.setState;
    states.setState = function (state): void {
      if (state.t === "connecting" && state.conn) state.conn = state.conn.then(refuseDeadSession);
      setState.call(this, state);
    };
  }

  override async request(
    ...args: Parameters<Http2SessionManager["request"]>
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(...args);
    keepReceivedResponse(stream);
    const session = stream.session;
    if (session && !session.destroyed && !this.#widened.has(session)) {
      this.#widened.add(session);
      session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
    }
    return stream;
  }
}

type StreamOptions = { signal?: AbortSignal };

/** Node's errors for a connection that failed or dropped (ours were UNAVAILABLE, as grpc-js's). */
const CONNECTION_LOST =
  /^(EPIPE|ECONNRESET|ECONNREFUSED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|ERR_HTTP2_\w+)$/;

/**
 * Node's codes for a TLS handshake the peer or we refused (grpc-js reports these UNAVAILABLE).
 * Deno raises the peer's refusal (e.g. a mutual-TLS server's alert for a client without a
 * certificate) with no code, only its message, hence {@linkcode TLS_ALERT}.
 */
const TLS_HANDSHAKE_FAILED = /^(ERR_SSL_\w+|ERR_TLS_\w+|CERT_\w+|UNABLE_TO_\w+|\w*SELF_SIGNED\w*)$/;
const TLS_ALERT = /received fatal alert/i;

/**
 * connect-node reports a connection that failed or dropped as Internal (EPIPE) or Aborted
 * (ECONNRESET); gRPC clients, and our CLI's "cannot reach the server" hint, call that
 * Unavailable. Statuses sent by the server carry no Node error as their cause, so stay as is.
 */
function asUnavailable(error: unknown): unknown {
  if (!(error instanceof ConnectError)) return error;
  if (error.code !== Code.Internal && error.code !== Code.Aborted) return error;
  if (TLS_ALERT.test(error.rawMessage)) {
    return new ConnectError(error.rawMessage, Code.Unavailable, undefined, undefined, error.cause);
  }
  for (let cause = error.cause; cause instanceof Error; cause = cause.cause) {
    if (
      CONNECTION_LOST.test(String((cause as { code?: unknown }).code)) ||
      TLS_HANDSHAKE_FAILED.test(String((cause as { code?: unknown }).code)) ||
      TLS_ALERT.test(cause.message)
    ) {
      return new ConnectError(error.rawMessage, Code.Unavailable, undefined, undefined, cause);
    }
  }
  return error;
}

function unaryCall<T>(
  call: (request: unknown, options?: unknown) => Promise<T>,
): (request: unknown, options?: unknown) => Promise<T> {
  return (request, options) =>
    call(request, options).catch((error) => {
      throw asUnavailable(error);
    });
}

function cancelOnReturn<T>(
  call: (request: unknown, options: StreamOptions) => AsyncIterable<T>,
): (request: unknown, options?: StreamOptions) => AsyncIterableIterator<T> {
  return (request, options = {}) => {
    const abort = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, abort.signal]) : abort.signal;
    const it = call(request, { ...options, signal })[Symbol.asyncIterator]();
    const iterator: AsyncIterableIterator<T> = {
      next: () =>
        it.next().catch((error) => {
          throw asUnavailable(error);
        }),
      async return(value?: unknown): Promise<IteratorResult<T>> {
        abort.abort();
        // Settles the call's pending promises, which now reject with Canceled.
        await it.next().catch(() => {});
        return { done: true, value: value as T };
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  };
}

function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

function nodeOptions(tls: boolean | ClientTls | undefined): http2.SecureClientSessionOptions {
  const settings = { initialWindowSize: STREAM_WINDOW_BYTES };
  if (typeof tls !== "object") return { settings };
  const pem = (v: string | Uint8Array | undefined): string | undefined =>
    v === undefined || typeof v === "string" ? v : new TextDecoder().decode(v);
  return { settings, ca: pem(tls.ca), cert: pem(tls.cert), key: pem(tls.key) };
}

/**
 * A client of `service` at `address`, on one HTTP/2 connection opened at the first call (and
 * again after it drops).
 *
 * @param service The generated service descriptor.
 * @param address `host:port` (a bare host means port 443).
 * @param options TLS and token.
 * @returns The client; close it (or `using` it) to end the connection.
 */
export function connectClient<S extends DescService>(
  service: S,
  address: string,
  options: ClientOptions = {},
): Client<S> {
  const hostPort = /^(\[[^\]]+\]|[^:]+):\d+$/.test(address) ? address : `${address}:443`;
  const baseUrl = `${options.tls ? "https" : "http"}://${hostPort}`;
  const node = nodeOptions(options.tls);
  // No idle timeout (as the grpc-js and hand-written clients before it): the owner closes the
  // client. connect-node arms it when a stream's "close" arrives, which after `abort()` leaves
  // a 15-minute timer behind (unref'd, but a leak to Deno's test sanitizer).
  const idle = { idleConnectionTimeoutMs: Number.POSITIVE_INFINITY };
  const sessionManager = new SessionManager(baseUrl, idle, node);

  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    nodeOptions: node,
    readMaxBytes: MAX_RECEIVE_MESSAGE_BYTES,
    interceptors: options.token === undefined ? [] : [bearer(options.token)],
  });
  const client: Record<string, unknown> = createClient(service, transport);
  for (const { localName, methodKind } of service.methods) {
    const method = client[localName];
    if (methodKind === "unary") {
      client[localName] = unaryCall(method as Parameters<typeof unaryCall>[0]);
    } else if (methodKind === "server_streaming") {
      client[localName] = cancelOnReturn(method as Parameters<typeof cancelOnReturn>[0]);
    }
  }
  const close = (): void => sessionManager.abort();
  return Object.assign(client, { close, [Symbol.dispose]: close }) as Client<S>;
}

/**
 * The `google.rpc.ErrorInfo` the server sent with a failed call, from the
 * `grpc-status-details-bin` trailer.
 *
 * @param error What a call rejected with.
 * @returns The error info, or `undefined` when there is none (or it is not a call error).
 */
export function errorInfo(error: unknown): ErrorInfo | undefined {
  return error instanceof ConnectError ? error.findDetails(ErrorInfoSchema)[0] : undefined;
}
