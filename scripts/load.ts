/**
 * Load generator: N concurrent gRPC clients for a bounded time against a bmdemo server, plus
 * watchers that read every event. Each client registers its own machines, then loops mixing
 * reads (GetMachine, ListMachines, ListOperations) with operations on its own machines
 * (enter/exit maintenance, reboot, reimage). MACHINE_BUSY and PHASE_PRECONDITION are expected
 * when racing and counted; any other error is reported. Afterwards it waits until every
 * operation is terminal, and checks that every watcher that kept up saw every event of every
 * operation.
 *
 * ```bash
 * deno run --allow-net --allow-env --allow-read --allow-run scripts/load.ts --clients 200 --seconds 20
 * deno run --allow-net --allow-env --allow-read scripts/load.ts --server 127.0.0.1:50051
 * ```
 *
 * Without `--server` it starts `server.ts` as a separate process on a free port, with
 * `--timing normal` unless `--timing slow|zero` is given (zero: the real server without simulated
 * delays, the heaviest load), and reports that process's peak RSS (VmHWM from /proc).
 *
 * @module
 */

import { parseScriptArgs, usageError } from "./cli_args.ts";
import {
  MachineService,
  type Operation,
  Operation_OperationType as OperationType,
  Operation_Phase as OperationPhase,
  OperationEvent_Kind as EventKind,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";

import {
  type Client,
  connectClient,
  ConnectError,
  errorInfo,
  statusName,
} from "../lib/client/mod.ts";
import { isTerminalPhase } from "../lib/model/lifecycle.ts";
import {
  EXPECTED_REASONS,
  succeededEventCount,
  watcherMismatches,
  type WatcherResult,
} from "./load_checks.ts";

/** Options of {@linkcode runLoad}. */
export interface LoadOptions {
  /** `host:port` of the server. */
  address: string;
  /** Concurrent clients. */
  clients: number;
  /** How long the clients run, in milliseconds. */
  durationMs: number;
  /** gRPC channels the clients share (round robin). @default min(clients, 20) */
  channels?: number;
  /** Watchers reading every event. @default 4 */
  watchers?: number;
  /** Machines each client owns. @default 2 */
  machinesPerClient?: number;
  /** Prefix of machine ids, so runs do not collide. @default "load" */
  prefix?: string;
  /**
   * Resolves once every operation is terminal.
   *
   * @default polls ListOperations (all pages) every 100 ms
   */
  settled?: () => Promise<void>;
  /** Called every `progressMs` with the RPCs and operations so far. @default none */
  progress?: (rpcs: number, operationsStarted: number) => void;
  /** Interval of `progress`. @default 5000 */
  progressMs?: number;
  /** How long to wait for operations and watchers after the clients stop. @default 60 s */
  settleTimeoutMs?: number;
}

/** Outcome of {@linkcode runLoad}. */
export interface LoadResult {
  elapsedMs: number;
  /** RPCs that completed (OK or not), watch streams excluded. */
  rpcs: number;
  /** Operations the clients created. */
  operationsStarted: number;
  /** Every operation on the server after the run (all pages of ListOperations). */
  operations: Operation[];
  /** Errors by `CODE/REASON`. */
  errors: Record<string, number>;
  /** Errors other than {@linkcode EXPECTED_REASONS}. */
  unexpected: string[];
  /** One per watcher. */
  watchers: WatcherResult[];
}

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)];
}

/** Every operation, reading all pages. */
export async function listAllOperations(
  client: Client<typeof OperationService>,
): Promise<Operation[]> {
  const all: Operation[] = [];
  let pageToken = "";
  do {
    const page = await client.listOperations({ pageSize: 1000, pageToken });
    all.push(...page.operations);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

/**
 * Runs the load; see the module documentation.
 *
 * @param options Address, client count, duration.
 * @returns Counts, errors and what each watcher saw.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const channelCount = options.channels ?? Math.min(options.clients, 20);
  const machinesPerClient = options.machinesPerClient ?? 2;
  const prefix = options.prefix ?? "load";
  const channels = Array.from({ length: channelCount }, () => ({
    machines: connectClient(MachineService, options.address),
    operations: connectClient(OperationService, options.address),
  }));
  const watchChannel = connectClient(OperationService, options.address);
  const errors: Record<string, number> = {};
  const unexpected: string[] = [];
  let rpcs = 0;
  let operationsStarted = 0;

  async function rpc<T>(call: () => Promise<T>): Promise<T | undefined> {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof ConnectError)) throw error;
      const reason = errorInfo(error)?.reason ?? "-";
      const key = `${statusName(error.code)}/${reason}`;
      errors[key] = (errors[key] ?? 0) + 1;
      if (!EXPECTED_REASONS.includes(reason) && unexpected.length < 50) {
        unexpected.push(`${key}: ${error.rawMessage}`);
      }
      return undefined;
    } finally {
      rpcs++;
    }
  }

  // Watchers first, each synchronised on the snapshot marker so it misses nothing.
  const watchers: WatcherResult[] = [];
  const watching: Promise<void>[] = [];
  const stopWatching = new AbortController();
  for (let i = 0; i < (options.watchers ?? 4); i++) {
    const result: WatcherResult = { perOperation: new Map(), events: 0 };
    watchers.push(result);
    const stream = watchChannel.watchOperations({ sendInitialSnapshot: true }, {
      signal: stopWatching.signal,
    });
    const marker = await stream.next();
    if (marker.value?.kind !== EventKind.SNAPSHOT_COMPLETE) throw new Error("no snapshot marker");
    watching.push((async () => {
      try {
        for await (const event of stream) {
          const id = event.snapshot!.operationId;
          result.perOperation.set(id, (result.perOperation.get(id) ?? 0) + 1);
          result.events++;
        }
      } catch (error) {
        if (!stopWatching.signal.aborted) {
          result.error = error instanceof ConnectError
            ? `${statusName(error.code)}: ${error.rawMessage}`
            : String(error);
        }
      }
    })());
  }

  const start = performance.now();
  const progress = options.progress;
  const ticker = progress &&
    setInterval(() => progress(rpcs, operationsStarted), options.progressMs ?? 5000);
  const deadline = start + options.durationMs;
  const actions = [
    OperationType.ENTER_MAINTENANCE,
    OperationType.EXIT_MAINTENANCE,
    OperationType.REBOOT,
    OperationType.REIMAGE,
  ];
  await Promise.all(Array.from({ length: options.clients }, async (_, c) => {
    const { machines, operations } = channels[c % channelCount];
    const own = Array.from({ length: machinesPerClient }, (_, m) => `${prefix}-c${c}-m${m}`);
    for (const machineId of own) {
      await rpc(() =>
        machines.registerMachine({ machine: { machineId, labels: { client: `c${c}` } } })
      );
    }
    let n = 0;
    while (performance.now() < deadline) {
      const machineId = pick(own);
      const requestId = `${prefix}-c${c}-${n++}`;
      const roll = Math.random();
      if (roll < 0.2) await rpc(() => machines.getMachine({ machineId }));
      else if (roll < 0.3) await rpc(() => machines.listMachines({ pageSize: 50 }));
      else if (roll < 0.4) {
        await rpc(() => operations.listOperations({ filter: `machine_id=${machineId}` }));
      } else if (roll < 0.45) await rpc(() => operations.listOperations({ pageSize: 100 }));
      else {
        const type = pick(actions);
        const request = { machineId, requestId };
        const op = await rpc(() => {
          switch (type) {
            case OperationType.ENTER_MAINTENANCE:
              return machines.enterMaintenance(request);
            case OperationType.EXIT_MAINTENANCE:
              return machines.exitMaintenance(request);
            case OperationType.REBOOT:
              return machines.rebootMachine(request);
            default:
              return machines.reimageMachine(request);
          }
        });
        if (op) operationsStarted++;
      }
    }
  }));
  const clientsDone = performance.now();
  clearInterval(ticker);

  // Every operation terminal, then every watcher caught up (or ended).
  const reader = channels[0].operations;
  const settleDeadline = clientsDone + (options.settleTimeoutMs ?? 60_000);
  const poll = () => new Promise((resolve) => setTimeout(resolve, 100));
  if (options.settled) await options.settled();
  else {
    while ((await listAllOperations(reader)).some((op) => !isTerminalPhase(op.phase))) {
      if (performance.now() > settleDeadline) break;
      await poll();
    }
  }
  const all = await listAllOperations(reader);
  const caughtUp = (w: WatcherResult) =>
    w.error !== undefined ||
    [...w.perOperation.keys()].length >= all.length &&
      all.every((op) =>
        op.phase !== OperationPhase.SUCCEEDED ||
        (w.perOperation.get(op.operationId) ?? 0) >= succeededEventCount(op.type)
      );
  while (!watchers.every(caughtUp) && performance.now() < settleDeadline) await poll();
  stopWatching.abort();
  await Promise.all(watching);
  watchChannel.close();
  for (const channel of channels) {
    channel.machines.close();
    channel.operations.close();
  }
  return {
    elapsedMs: clientsDone - start,
    rpcs,
    operationsStarted,
    operations: all,
    errors,
    unexpected,
    watchers,
  };
}

const LOAD_PROGRAM = "deno task load";
const LOAD_HELP = `usage: ${LOAD_PROGRAM} [flags]

Load generator: concurrent gRPC clients mixing reads and operations on their own machines for a
bounded time, plus watchers that must see every event. Without --server it starts server.ts on a
free port and reports its peak RSS. Exit 1 on an unexpected error or an unfinished operation.

  --server host:port        load that server instead of starting one
  --clients N               concurrent clients (default 200)
  --seconds N               how long the load runs (default 20)
  --watchers N              WatchOperations subscribers (default 4)
  --machines N              machines per client (default 2)
  --channels N              gRPC channels the clients share (default: min(clients, 20))
  --timing normal|slow|zero timings of the server it starts (default normal)
  -h, --help                this help`;

/** VmHWM of a process; read with `cat` because Deno refuses /proc to a plain --allow-read. */
async function peakRss(pid: number): Promise<string> {
  try {
    const { stdout } = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
    return /VmHWM:\s*(.+)/.exec(new TextDecoder().decode(stdout))?.[1].trim() ?? "unknown";
  } catch {
    return "unknown (no /proc)";
  }
}

if (import.meta.main) {
  const { values: args } = parseScriptArgs({
    options: {
      server: { type: "string" },
      clients: { type: "string", default: "200" },
      seconds: { type: "string", default: "20" },
      watchers: { type: "string", default: "4" },
      machines: { type: "string", default: "2" },
      channels: { type: "string" },
      timing: { type: "string", default: "normal" },
    },
  }, { program: LOAD_PROGRAM, help: LOAD_HELP });
  for (const name of ["clients", "seconds", "watchers", "machines", "channels"] as const) {
    const value = args[name];
    if (value !== undefined && !(Number.isInteger(Number(value)) && Number(value) >= 0)) {
      usageError(LOAD_PROGRAM, `--${name} must be a whole number: got "${value}"`);
    }
  }
  let address = args.server;
  let stopServer: (() => Promise<unknown>) | undefined;
  let pid: number | undefined;
  if (!address) {
    const { spawnServer } = await import("./server_process.ts");
    if (!["normal", "slow", "zero"].includes(args.timing)) {
      usageError(LOAD_PROGRAM, `--timing must be one of normal, slow, zero: got "${args.timing}"`);
    }
    const server = await spawnServer(["--log-level", "warn", "--timing", args.timing]);
    address = server.address;
    pid = server.child.pid;
    stopServer = () => server.stop("SIGTERM");
    console.log(`started server.ts (pid ${pid}) on ${address}`);
  }
  const clients = Number(args.clients);
  const seconds = Number(args.seconds);
  console.log(`${clients} clients for ${seconds} s against ${address}`);
  const result = await runLoad({
    address,
    clients,
    durationMs: seconds * 1000,
    watchers: Number(args.watchers),
    machinesPerClient: Number(args.machines),
    channels: args.channels ? Number(args.channels) : undefined,
    prefix: `load-${Date.now().toString(36)}`,
    progress: (() => {
      let last = { rpcs: 0, ops: 0, at: performance.now() };
      return (rpcs: number, ops: number) => {
        const now = performance.now();
        const s = (now - last.at) / 1000;
        console.log(
          `  … ${((rpcs - last.rpcs) / s).toFixed(0)} RPCs/s, ${
            ((ops - last.ops) / s).toFixed(0)
          } operations/s`,
        );
        last = { rpcs, ops, at: now };
      };
    })(),
  });
  const secs = result.elapsedMs / 1000;
  const ops = result.operations;
  const byPhase: Record<string, number> = {};
  for (const op of ops) {
    byPhase[OperationPhase[op.phase]] = (byPhase[OperationPhase[op.phase]] ?? 0) + 1;
  }
  const expected = new Map<string, number>();
  for (const op of ops) {
    if (op.phase === OperationPhase.SUCCEEDED) {
      expected.set(op.operationId, succeededEventCount(op.type));
    }
  }
  const events = [...expected.values()].reduce((a, b) => a + b, 0);
  console.log(
    `operations started: ${result.operationsStarted} (${
      (result.operationsStarted / secs).toFixed(1)
    }/s)`,
  );
  console.log(`operations on the server by phase: ${JSON.stringify(byPhase)}`);
  console.log(`RPCs: ${result.rpcs} (${(result.rpcs / secs).toFixed(1)}/s)`);
  for (const [i, w] of result.watchers.entries()) {
    // Only SUCCEEDED operations have a known event count; compare those.
    const seen = new Map([...w.perOperation].filter(([id]) => expected.has(id)));
    const wrong = watcherMismatches({ ...w, perOperation: seen }, expected);
    console.log(
      `watcher ${i}: ${w.events} events (${(w.events / secs).toFixed(1)}/s)` +
        (w.error ? `, ended: ${w.error}` : "") +
        `, ${
          wrong.length === 0
            ? "saw every event of every SUCCEEDED operation"
            : `${wrong.length} mismatches, e.g. ${wrong[0]}`
        }`,
    );
  }
  console.log(
    `events of SUCCEEDED operations: ${events} (${(events / secs).toFixed(1)}/s per watcher)`,
  );
  console.log(`errors by code/reason: ${JSON.stringify(result.errors)}`);
  if (result.unexpected.length > 0) {
    console.log(`unexpected errors:\n  ${result.unexpected.join("\n  ")}`);
  }
  const nonTerminal = ops.filter((op) => !isTerminalPhase(op.phase)).length;
  console.log(`non-terminal operations after the run: ${nonTerminal}`);
  if (pid !== undefined) console.log(`server peak RSS (VmHWM): ${await peakRss(pid)}`);
  await stopServer?.();
  if (result.unexpected.length > 0 || nonTerminal > 0) Deno.exit(1);
}
