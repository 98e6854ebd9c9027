/**
 * A TCP proxy the browser flows reach the server through, to cut, hold and redirect the
 * dashboard's connections.
 *
 * @module
 */

/** A running {@linkcode tcpProxy}. */
export interface TcpProxy {
  /** Its URL, `http://127.0.0.1:<port>/`. */
  readonly url: string;
  /** Closes every connection through it. */
  cut(): void;
  /** Sends new connections to `port` from now on. */
  retarget(port: number): void;
  /** Makes new connections wait (accepted, not forwarded) until {@linkcode TcpProxy.release}. */
  hold(): void;
  /** Forwards the connections held. */
  release(): void;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/**
 * A TCP proxy to `port` on loopback: `cut()` closes every connection through it, `hold()` makes
 * new ones wait (accepted, not forwarded) until `release()`, `retarget()` sends new ones to
 * another port (a server restarted behind the same address).
 *
 * @param port The port connections are forwarded to.
 * @returns The proxy; `close()` it.
 */
export function tcpProxy(port: number): TcpProxy {
  let target = port;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const pipes = new Set<Promise<unknown>>();
  let gate: PromiseWithResolvers<void> | undefined;
  const pipe = (from: Deno.Conn, to: Deno.Conn) =>
    from.readable.pipeTo(to.writable).catch(() => {}).finally(() => {
      for (const conn of [from, to]) {
        if (open.delete(conn)) {
          try {
            conn.close();
          } catch {
            // Already closed by the other direction.
          }
        }
      }
    });
  const accepting = (async () => {
    for await (const inbound of listener) {
      open.add(inbound);
      const forward = (async () => {
        await gate?.promise;
        if (!open.has(inbound)) return;
        const outbound = await Deno.connect({ hostname: "127.0.0.1", port: target });
        open.add(outbound);
        await Promise.all([pipe(inbound, outbound), pipe(outbound, inbound)]);
      })().catch(() => {});
      pipes.add(forward);
      forward.finally(() => pipes.delete(forward));
    }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/`,
    cut() {
      for (const conn of [...open]) {
        open.delete(conn);
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
    },
    retarget(next: number) {
      target = next;
    },
    hold() {
      gate = Promise.withResolvers<void>();
    },
    release() {
      gate?.resolve();
      gate = undefined;
    },
    async close() {
      this.release();
      listener.close();
      this.cut();
      await accepting.catch(() => {});
      await Promise.all([...pipes]);
    },
  };
}
