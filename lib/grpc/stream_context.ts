/**
 * Sending on a server stream: {@linkcode ServerStreamContext}'s `send` with backpressure by a
 * byte budget, batched writes (many messages per HTTP/2 write) and detection of a client that
 * stopped reading. Both reach into grpc-js internals (the version is pinned) and fall back to
 * grpc-js' own per-message writes, or no stall detection, when those are not as expected.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type * as grpc from "@grpc/grpc-js";
import type { DescMessage, Message } from "@bufbuild/protobuf";
import { type CallSettings, ServerCallContext } from "./call_context.ts";
import type { StreamContext } from "./handler_contract.ts";

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
export class ServerStreamContext extends ServerCallContext implements StreamContext<DescMessage> {
  // An own property, not a method, so a handler may pass `call.send` around unbound.
  readonly send: (message: Message) => Promise<void>;
  // Bytes written and not yet handed to HTTP/2, and the sender waiting for room, if any.
  #unsent = 0;
  #room: (() => void) | undefined;

  /**
   * @param stream The grpc-js server stream; its writes are batched from here on.
   * @param settings The method's settings: shutdown signal, byte budget, stall hook, encoder.
   */
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
    // the window moves. See docs/lifecycle.md, "Events and logs".)
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
