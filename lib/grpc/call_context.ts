/**
 * The server side of a {@linkcode CallContext}: the link between a grpc-js call and the
 * `AbortSignal` its handler sees (made on first read), and the settings an adapter passes to
 * every call of a method.
 *
 * @module
 */

import type { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import type { Message } from "@bufbuild/protobuf";
import type { CallContext, MethodObserver } from "./handler_contract.ts";
import type { ToStatus } from "./handler_status.ts";

/** What the adapter of one method passes to each of its calls. */
export interface CallSettings {
  toStatus: ToStatus;
  shutdown: AbortSignal | undefined;
  maxStreamBufferBytes: number;
  onStall: (() => void) | undefined;
  encode: (message: Message) => Uint8Array;
  observer: MethodObserver | undefined;
}

/** A grpc-js unary call or writable stream: both emit `cancelled` and keep `cancelled` set. */
export type ServerCall = EventEmitter & {
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
export class ServerCallContext implements CallContext {
  readonly #call: ServerCall;
  readonly #shutdown: AbortSignal | undefined;
  #controller: AbortController | undefined;
  #cleanup: (() => void) | undefined;
  #peer: string | undefined;
  #finished = false;

  /**
   * @param call The grpc-js call.
   * @param shutdown The server's shutdown signal, if any.
   */
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

function cancelledReason(): DOMException {
  return new DOMException(
    "The call was cancelled by the client or its deadline passed",
    "AbortError",
  );
}
