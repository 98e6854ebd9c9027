/**
 * A typed gRPC client over `node:http2`, without grpc-js: promises for unary methods, async
 * iterables for server-streaming ones, built from protobuf-es service descriptors.
 *
 * Why not grpc-js here: on this runtime a grpc-js client costs ~35 ms to load (CommonJS through
 * Deno's `node:module`) and about twice the CPU per call of this client, which matters for the
 * CLI's start-up time and for a benchmark that shares two cores with the server it measures.
 * The wire protocol a client of our proto needs is small: HTTP/2 POST, length-prefixed
 * messages, status in trailers (or in the headers of a trailers-only response).
 *
 * What it does, as grpc-js does:
 * - one HTTP/2 connection per client, opened at the first call and opened again after it drops;
 * - errors are {@linkcode RpcError}s with `code`, `details` and `metadata` (the trailers), so the
 *   `google.rpc.Status` details trailer reaches `errorInfoOf`;
 * - deadlines (sent as `grpc-timeout` and enforced locally), cancellation by `AbortSignal`;
 * - TLS with the system roots, a given CA, or a client certificate; a bearer token.
 *
 * What it does not: compression (it never asks for any), retries, load balancing, client or
 * bidi streaming (our proto has none).
 *
 * @example
 * ```ts ignore
 * using client = createClient(MachineService, "127.0.0.1:50051");
 * const machine = await client.getMachine({ machineId: "m-1" });
 * for await (const event of client.watchOperations({})) console.log(event.operation?.phase);
 * ```
 *
 * @module
 */

import http2 from "node:http2";
import { Buffer } from "node:buffer";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type Message,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";

/** gRPC status codes used by the client itself (the server may send any). */
const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/**
 * The name of a gRPC status code.
 *
 * @param code A status code, e.g. 5.
 * @returns Its name, e.g. `NOT_FOUND`; `Code(N)` for a code outside the spec.
 */
export function statusName(code: number): string {
  return CODE_NAMES[code] ?? `Code(${code})`;
}

/** The largest message a client accepts, as grpc-js's default `grpc.max_receive_message_length`. */
export const MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Messages a stream buffers for a consumer that is not reading before it pauses the call. */
const STREAM_BUFFER = 64;

/**
 * HTTP/2 flow-control windows. The default 64 KiB connection window is shared by every stream
 * of a client: one paused stream (a consumer not reading) could hold all of it and stall the
 * others, and a busy event loop that is late with its WINDOW_UPDATEs throttles every watcher on
 * the connection. Each stream still buffers at most its own window before the server is held
 * back.
 */
const CONNECTION_WINDOW_BYTES = 8 * 1024 * 1024;
const STREAM_WINDOW_BYTES = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors and metadata
// ---------------------------------------------------------------------------------------------

/**
 * Response metadata (headers and trailers): lowercase keys; `-bin` keys hold bytes (decoded
 * from base64), the others strings. `get` has the shape of grpc-js's `Metadata.get`.
 */
export class ResponseMetadata {
  readonly #values = new Map<string, (string | Uint8Array)[]>();

  /**
   * Adds a value under a key.
   *
   * @param key The key (lowercased).
   * @param value A string, or bytes for a `-bin` key.
   */
  add(key: string, value: string | Uint8Array): void {
    const k = key.toLowerCase();
    const values = this.#values.get(k);
    if (values) values.push(value);
    else this.#values.set(k, [value]);
  }

  /**
   * The values under a key.
   *
   * @param key The key, any case.
   * @returns Its values, in the order received; empty when absent.
   */
  get(key: string): (string | Uint8Array)[] {
    return [...(this.#values.get(key.toLowerCase()) ?? [])];
  }

  /**
   * Every key and its values.
   *
   * @returns A plain object copy.
   */
  toJSON(): Record<string, (string | Uint8Array)[]> {
    return Object.fromEntries([...this.#values].map(([k, v]) => [k, [...v]]));
  }
}

/** A failed call: the gRPC status the server (or the client itself) ended it with. */
export class RpcError extends Error {
  /** The gRPC status code, e.g. 5 for NOT_FOUND. */
  readonly code: number;
  /** The status message. */
  readonly details: string;
  /** The trailers (or headers of a trailers-only response); empty for client-side failures. */
  readonly metadata: ResponseMetadata;

  /**
   * @param code The gRPC status code.
   * @param details The status message.
   * @param metadata The response trailers.
   */
  constructor(code: number, details: string, metadata = new ResponseMetadata()) {
    super(`${code} ${statusName(code)}: ${details}`);
    this.name = "RpcError";
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }
}

// ---------------------------------------------------------------------------------------------
// Client types
// ---------------------------------------------------------------------------------------------

/** Per-call options of a {@linkcode Client} method. */
export interface ClientCallOptions {
  /**
   * Aborting it cancels the call: a pending promise, or the iteration, rejects with an
   * {@linkcode RpcError} whose code is `CANCELLED`.
   */
  signal?: AbortSignal;
  /**
   * When the call fails with `DEADLINE_EXCEEDED`; the server learns it as `grpc-timeout`.
   *
   * @default no deadline
   */
  deadline?: Date;
  /**
   * Request metadata (headers); keys ending in `-bin` take bytes.
   *
   * @default none
   */
  metadata?: Readonly<Record<string, string | Uint8Array>>;
}

/** Calls a unary method; rejects with an {@linkcode RpcError}. */
export type UnaryMethod<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: ClientCallOptions,
) => Promise<MessageShape<O>>;

/**
 * Calls a server-streaming method. The call starts at once (messages wait, bounded, until they
 * are read); iteration throws an {@linkcode RpcError} if the call fails, after every message
 * received before the failure; leaving the loop early, or calling `return()` without iterating,
 * cancels the call.
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
    /** Closes the connection; calls in progress fail with `CANCELLED`. */
    close(): void;
    /** Same as `close()`, for `using`. */
    [Symbol.dispose](): void;
  };

/** TLS settings of a client; PEM contents, not paths. */
export interface ClientTls {
  /** CA certificates to trust instead of the system roots. @default the system roots */
  ca?: string | Uint8Array;
  /** Client certificate chain, for mutual TLS (with `key`). @default none */
  cert?: string | Uint8Array;
  /** Private key of `cert`. @default none */
  key?: string | Uint8Array;
}

/** Options of {@linkcode createClient}. */
export interface CreateClientOptions {
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

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

/** The calls in progress on a connection, so that a dropped connection fails every one. */
interface Pending {
  fail(error: RpcError): void;
}

/** One HTTP/2 connection, opened on demand and again after it drops. */
class Connection {
  readonly #authority: string;
  readonly #options: http2.SecureClientSessionOptions;
  #session: http2.ClientHttp2Session | undefined;
  /** Calls in progress, with the session each runs on. */
  readonly #pending = new Map<Pending, http2.ClientHttp2Session>();
  #closed = false;

  constructor(address: string, tls: boolean | ClientTls | undefined) {
    // gRPC's default port, whatever the scheme.
    const hostPort = /^(\[[^\]]+\]|[^:]+):\d+$/.test(address) ? address : `${address}:443`;
    this.#authority = `${tls ? "https" : "http"}://${hostPort}`;
    const pem = (v: string | Uint8Array | undefined): string | Buffer | undefined =>
      v === undefined || typeof v === "string" ? v : Buffer.from(v);
    this.#options = typeof tls === "object"
      ? { ca: pem(tls.ca), cert: pem(tls.cert), key: pem(tls.key) }
      : {};
  }

  /** The open session, opening one when there is none (or the last one ended). */
  session(): http2.ClientHttp2Session {
    if (this.#closed) throw new RpcError(Code.CANCELLED, "Channel has been shut down");
    const current = this.#session;
    if (current && !current.closed && !current.destroyed) return current;
    const session = http2.connect(this.#authority, {
      ...this.#options,
      settings: { initialWindowSize: STREAM_WINDOW_BYTES },
    });
    session.once("remoteSettings", () => {
      if (!session.destroyed) session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
    });
    // Without a listener an "error" event would be thrown; the calls learn it from their
    // streams, or from failAll when the session ends before a stream could report it.
    session.on("error", (error: Error) => {
      if (this.#session === session) this.#session = undefined;
      this.#failAll(session, unavailable(error));
    });
    session.on("goaway", () => {
      // Calls already running finish; new ones go to a new connection.
      if (this.#session === session) this.#session = undefined;
    });
    session.on("close", () => {
      if (this.#session === session) this.#session = undefined;
      this.#failAll(session, new RpcError(Code.UNAVAILABLE, "Connection dropped"));
    });
    this.#session = session;
    return session;
  }

  /** Tracks a call on `session` until it settles. */
  track(session: http2.ClientHttp2Session, call: Pending): () => void {
    this.#pending.set(call, session);
    return () => this.#pending.delete(call);
  }

  #failAll(session: http2.ClientHttp2Session, error: RpcError): void {
    for (const [call, on] of [...this.#pending]) if (on === session) call.fail(error);
  }

  close(): void {
    this.#closed = true;
    const session = this.#session;
    this.#session = undefined;
    for (const call of [...this.#pending.keys()]) {
      call.fail(new RpcError(Code.CANCELLED, "Channel has been shut down"));
    }
    session?.close();
  }
}

function unavailable(error: Error): RpcError {
  const reason = error.message || String(error);
  return new RpcError(Code.UNAVAILABLE, `No connection established. Last error: ${reason}`);
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/** The HTTP/2 status of a response that is not gRPC, mapped as the gRPC spec says. */
function httpStatusCode(status: number): number {
  switch (status) {
    case 400:
      return Code.INTERNAL;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.UNAVAILABLE;
    default:
      return Code.UNKNOWN;
  }
}

/** `grpc-timeout` for `ms` milliseconds: at most 8 digits, in the finest unit that fits. */
function grpcTimeout(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  if (whole < 1e8) return `${whole}m`;
  if (whole / 1000 < 1e8) return `${Math.ceil(whole / 1000)}S`;
  return `${Math.min(99_999_999, Math.ceil(whole / 3_600_000))}H`;
}

function decodeGrpcMessage(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // not percent-encoded by the peer: show it as sent
  }
}

function readMetadata(headers: http2.IncomingHttpHeaders, into: ResponseMetadata): void {
  for (const [key, value] of Object.entries(headers)) {
    if (key.startsWith(":") || value === undefined) continue;
    const values = Array.isArray(value) ? value : [String(value)];
    for (const v of values) {
      if (!key.endsWith("-bin")) into.add(key, v);
      // Repeated binary values may arrive joined by commas, which base64 never contains.
      else {for (const part of v.split(",")) {
          into.add(key, new Uint8Array(Buffer.from(part, "base64")));
        }}
    }
  }
}

/** How one call's response is consumed: messages as they are parsed, then the end. */
interface CallSink {
  message(bytes: Uint8Array): void;
  end(error: RpcError | undefined): void;
}

/** A call in flight; `cancel` ends it with CANCELLED (a no-op once it ended). */
interface CallHandle {
  cancel(): void;
  pause(): void;
  resume(): void;
  isPaused(): boolean;
}

interface CallTarget {
  connection: Connection;
  path: string;
  input: DescMessage;
  token?: string;
}

function startCall(
  target: CallTarget,
  request: MessageInitShape<DescMessage>,
  options: ClientCallOptions,
  sink: CallSink,
): CallHandle {
  const { signal, deadline, metadata } = options;
  let ended = false;
  let stream: http2.ClientHttp2Stream | undefined;
  let untrack = (): unknown => undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finish = (error: RpcError | undefined): void => {
    if (ended) return;
    ended = true;
    untrack();
    if (timer !== undefined) clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    // A no-op once the stream closed; otherwise the server learns the call ended (its handler's
    // signal aborts).
    if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
    sink.end(error);
  };
  const onAbort = (): void => finish(new RpcError(Code.CANCELLED, "Cancelled on client"));
  const handle: CallHandle = {
    cancel: onAbort,
    pause: () => stream?.pause(),
    resume: () => stream?.resume(),
    isPaused: () => stream?.isPaused() ?? false,
  };
  if (signal?.aborted) {
    queueMicrotask(onAbort);
    return handle;
  }
  signal?.addEventListener("abort", onAbort, { once: true });

  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": target.path,
    "content-type": "application/grpc",
    te: "trailers",
    "user-agent": "bmdemo-client/1",
  };
  if (deadline !== undefined) {
    const left = deadline.getTime() - Date.now();
    if (left <= 0) {
      queueMicrotask(() => finish(new RpcError(Code.DEADLINE_EXCEEDED, "Deadline exceeded")));
      return handle;
    }
    headers["grpc-timeout"] = grpcTimeout(left);
    timer = setTimeout(
      () => finish(new RpcError(Code.DEADLINE_EXCEEDED, "Deadline exceeded")),
      left,
    );
  }
  for (const [key, value] of Object.entries(metadata ?? {})) {
    headers[key.toLowerCase()] = typeof value === "string"
      ? value
      : Buffer.from(value).toString("base64");
  }
  if (target.token) headers.authorization = `Bearer ${target.token}`;

  let body: Uint8Array;
  try {
    body = toBinary(target.input, create(target.input, request));
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    queueMicrotask(() =>
      finish(new RpcError(Code.INTERNAL, `Request serialization failure: ${reason}`))
    );
    return handle;
  }
  const framed = Buffer.allocUnsafe(5 + body.length);
  framed[0] = 0;
  framed.writeUInt32BE(body.length, 1);
  framed.set(body, 5);

  let session: http2.ClientHttp2Session;
  try {
    session = target.connection.session();
    stream = session.request(headers);
  } catch (error) {
    const failure = error instanceof RpcError ? error : unavailable(error as Error);
    queueMicrotask(() => finish(failure));
    return handle;
  }
  untrack = target.connection.track(session, { fail: finish });

  let trailers: ResponseMetadata | undefined;
  let status: number | undefined;
  let statusMessage = "";
  let httpStatus = 0;
  let grpcResponse = false;
  const takeStatus = (h: http2.IncomingHttpHeaders): void => {
    const raw = h["grpc-status"];
    if (raw === undefined) return;
    const parsed = Number(raw);
    status = Number.isInteger(parsed) && parsed >= 0 ? parsed : Code.UNKNOWN;
    // Only a failure exposes its metadata (RpcError.metadata): a success skips the copy.
    if (status !== Code.OK) readMetadata(h, trailers ??= new ResponseMetadata());
    const message = h["grpc-message"];
    statusMessage = typeof message === "string" ? decodeGrpcMessage(message) : "";
  };
  stream.on("response", (h) => {
    httpStatus = Number(h[":status"]);
    grpcResponse = String(h["content-type"] ?? "").startsWith("application/grpc");
    takeStatus(h); // a trailers-only response
  });
  stream.on("trailers", takeStatus);

  // Length-prefixed messages, reassembled across DATA frames.
  let buffered: Buffer | undefined;
  stream.on("data", (chunk: Buffer) => {
    if (ended) return;
    let data = buffered ? Buffer.concat([buffered, chunk]) : chunk;
    buffered = undefined;
    while (data.length >= 5) {
      const length = data.readUInt32BE(1);
      if (data[0] !== 0) {
        finish(new RpcError(Code.INTERNAL, "Compressed message received but none was asked for"));
        return;
      }
      if (length > MAX_RECEIVE_MESSAGE_BYTES) {
        finish(
          new RpcError(
            Code.RESOURCE_EXHAUSTED,
            `Received message larger than max (${length} vs. ${MAX_RECEIVE_MESSAGE_BYTES})`,
          ),
        );
        return;
      }
      if (data.length < 5 + length) break;
      sink.message(data.subarray(5, 5 + length));
      if (ended) return;
      data = data.subarray(5 + length);
    }
    if (data.length > 0) buffered = data;
  });
  let streamError: Error | undefined;
  stream.on("error", (error: Error) => {
    streamError ??= error;
  });
  stream.on("close", () => {
    if (ended) return;
    if (status !== undefined) {
      if (buffered !== undefined && status === Code.OK) {
        finish(new RpcError(Code.INTERNAL, "Response ended inside a message"));
      } else {
        finish(status === Code.OK ? undefined : new RpcError(status, statusMessage, trailers));
      }
      return;
    }
    if (httpStatus !== 0 && (httpStatus !== 200 || !grpcResponse)) {
      finish(
        new RpcError(
          httpStatusCode(httpStatus),
          `Received HTTP status code ${httpStatus}${grpcResponse ? "" : " (not a gRPC response)"}`,
        ),
      );
      return;
    }
    const rst = stream?.rstCode;
    if (httpStatus === 0 || session.destroyed || session.closed) {
      // No response, or the connection ended under the call (a stream torn down with its
      // session reads as CANCEL too): the server may not even have seen the call.
      finish(
        streamError !== undefined && httpStatus === 0
          ? unavailable(streamError)
          : new RpcError(Code.UNAVAILABLE, "Connection dropped"),
      );
    } else if (rst === http2.constants.NGHTTP2_REFUSED_STREAM) {
      finish(new RpcError(Code.UNAVAILABLE, "Stream refused by server"));
    } else if (rst === http2.constants.NGHTTP2_CANCEL) {
      finish(new RpcError(Code.CANCELLED, "Call cancelled by the server"));
    } else if (rst !== undefined && rst !== http2.constants.NGHTTP2_NO_ERROR) {
      finish(new RpcError(Code.INTERNAL, `Received RST_STREAM with code ${rst}`));
    } else {
      finish(new RpcError(Code.UNKNOWN, "Server ended the call without a status"));
    }
  });
  stream.end(framed);
  return handle;
}

function callUnary(
  target: CallTarget,
  output: DescMessage,
  request: MessageInitShape<DescMessage>,
  options: ClientCallOptions = {},
): Promise<Message> {
  return new Promise((resolve, reject) => {
    let response: Message | undefined;
    let received = 0;
    let failure: RpcError | undefined;
    const handle = startCall(target, request, options, {
      message(bytes) {
        received++;
        if (received > 1) {
          failure = new RpcError(Code.UNIMPLEMENTED, "Too many responses received");
          handle.cancel();
          return;
        }
        try {
          response = fromBinary(output, bytes);
        } catch (error) {
          const reason = error instanceof Error ? error.message : String(error);
          failure = new RpcError(Code.INTERNAL, `Response message parsing error: ${reason}`);
          handle.cancel();
        }
      },
      end(error) {
        if (failure !== undefined) reject(failure);
        else if (error !== undefined) reject(error);
        else if (response === undefined) {
          reject(new RpcError(Code.UNIMPLEMENTED, "No message received"));
        } else resolve(response);
      },
    });
  });
}

function callServerStreaming(
  target: CallTarget,
  output: DescMessage,
  request: MessageInitShape<DescMessage>,
  options: ClientCallOptions = {},
): AsyncIterableIterator<Message> {
  // Our own queue: every message received is delivered, then the error (a status that ends the
  // stream, e.g. RESOURCE_EXHAUSTED for a watcher that fell behind, must not swallow what came
  // before it). Above STREAM_BUFFER unread messages the stream is paused, so HTTP/2 flow control
  // holds the server back.
  const queue: Message[] = [];
  let failure: RpcError | undefined;
  let ended = false;
  let closed = false;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  // The call starts now, not at the first next(): a caller can open a stream, then act, and
  // receive what its action caused.
  const handle = startCall(target, request, options, {
    message(bytes) {
      try {
        queue.push(fromBinary(output, bytes));
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        failure ??= new RpcError(Code.INTERNAL, `Response message parsing error: ${reason}`);
        handle.cancel();
        return;
      }
      if (queue.length >= STREAM_BUFFER) handle.pause();
      notify();
    },
    end(error) {
      failure ??= error;
      ended = true;
      notify();
    },
  });
  const finish = (): void => {
    closed = true;
    handle.cancel();
    notify();
  };
  return {
    async next(): Promise<IteratorResult<Message>> {
      while (!closed) {
        const message = queue.shift();
        if (message !== undefined) {
          if (queue.length < STREAM_BUFFER / 2 && handle.isPaused()) handle.resume();
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

/**
 * Creates a typed client of a service over one HTTP/2 connection (opened at the first call).
 *
 * @param service The generated service descriptor, e.g. `MachineService`.
 * @param address `host:port` of the server, e.g. `127.0.0.1:50051` (port 443 when omitted).
 * @param options TLS and bearer token.
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
  const connection = new Connection(address, options.tls);
  const methods: Record<string, unknown> = {};
  for (const method of service.methods) {
    if (method.localName === "close") {
      throw new TypeError(
        `Cannot create a client of "${service.typeName}" as method "${method.name}" clashes ` +
          `with close()`,
      );
    }
    const target: CallTarget = {
      connection,
      path: `/${service.typeName}/${method.name}`,
      input: method.input,
      token: options.token,
    };
    const output = method.output;
    switch (method.methodKind) {
      case "unary":
        methods[method.localName] = (
          request: MessageInitShape<DescMessage>,
          o?: ClientCallOptions,
        ) => callUnary(target, output, request, o);
        break;
      case "server_streaming":
        methods[method.localName] = (
          request: MessageInitShape<DescMessage>,
          o?: ClientCallOptions,
        ) => callServerStreaming(target, output, request, o);
        break;
      default:
        throw new TypeError(
          `Method "${service.typeName}.${method.name}" is ${method.methodKind}: only unary and ` +
            `server-streaming methods are supported`,
        );
    }
  }
  const close = (): void => connection.close();
  // The map holds exactly one function of the right kind per method localName.
  return Object.assign(methods, { close, [Symbol.dispose]: close }) as Client<S>;
}
