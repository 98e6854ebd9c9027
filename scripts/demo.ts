/**
 * `deno task demo`: the presenter demo in one command. Starts a bmdemo server in this process on
 * a free loopback port and runs the guided tour (`bmdemo-cli tour`) against it, then stops the
 * server. Pauses for Enter between sections only when stdin is a terminal, so it also runs
 * straight through in CI.
 *
 * Ctrl+C ends it at once, at any point (exit 130): the tour cancels the operations it started
 * and this script stops its server (each bounded: a cancel waits at most 2 s, the server's
 * shutdown 5 s). It stops at the first command that fails, with that command's error (an
 * unreachable server: one error, before any narration). Its server has the fault
 * `--fault repave-image:2@machine-4` (FAULT_DEMO), which the tour's "When Hardware Fails" shows.
 *
 *   deno task demo            normal timings (a reimage takes ~3.4 s)
 *   deno task demo --slow     slow timings for live presentations (~29 s per reimage)
 *   deno task demo --server host:port   run the tour against an external server instead
 *   deno task demo --no-web   without the live dashboard (otherwise served on a free loopback
 *                             port with its /metrics, its URL printed before the first pause)
 *   deno task demo --lab      run the tour on a hardware lab (scripts/lab.ts): machine-1..4 driven
 *                             by the real Redfish and IPMI drivers over loopback; machine-4's
 *                             BMC refuses its first 2 power changes (LAB_FAULT_DEMO), which the
 *                             tour's "When Hardware Fails" shows
 *
 * @module
 */

import { main } from "../lib/cli/main.ts";
import { terminalIo } from "../lib/cli/terminal.ts";
import { createEngine } from "../lib/engine/mod.ts";
import { startSurfaces } from "../lib/serve/surfaces.ts";
import { parseScriptArgs, usageError } from "./cli_args.ts";
import { type Lab, labIpmiBmc, startLab } from "./lab.ts";
import { FAULT_DEMO, LAB_FAULT_DEMO } from "../lib/cli/tour_scenes.ts";
import { createFakeProvider } from "../lib/provider/fake.ts";
import { parseFault, withFaults } from "../lib/provider/fault_flag.ts";

const HELP = `usage: deno task demo [flags]

The presenter demo: starts a bmdemo server on a free loopback port and runs the
guided tour against it, pausing for Enter between sections on a terminal. Ctrl+C
ends it at once (exit 130). The tour fits the terminal's width (COLUMNS overrides).

  --slow               slow timings for live presentations (~29 s per reimage)
  --server host:port   run the tour against that server instead of starting one
  --no-web             do not serve the live dashboard (by default its URL is printed first:
                       open it on the screen the audience sees)
  --lab                run the tour on a hardware lab (deno task lab --machines 4): machine-1..4
                       driven by the real Redfish and IPMI drivers against BMCs on loopback;
                       machine-4's BMC refuses its first 2 power changes (a real BMC fault)
  -h, --help           this help`;

const { values } = parseScriptArgs({
  options: {
    slow: { type: "boolean", default: false },
    server: { type: "string" },
    "no-web": { type: "boolean", default: false },
    lab: { type: "boolean", default: false },
  },
}, { program: "deno task demo", help: HELP });

const interrupt = new AbortController();
// Under `deno task`, one Ctrl+C arrives twice (from the terminal and forwarded by the task
// runner), so a second signal cannot mean "exit now": every cleanup step is bounded instead.
Deno.addSignalListener("SIGINT", () => interrupt.abort());

if (values.lab && values.server) {
  usageError("deno task demo", "--lab starts its own server: pass only one of --lab and --server");
}
let lab: Lab | undefined;
if (values.lab) {
  console.log("Starting the hardware lab (4 machines: Redfish and IPMI BMCs on loopback)...");
  lab = await startLab({
    machines: 4,
    serverArgs: values.slow ? ["--timing", "slow"] : [],
    log: (line) => console.log(line),
  });
  for (const m of lab.machines) console.log(`  ${m.machineId}: ${m.provider} ${m.bmcAddress}`);
  // --fault affects simulated machines only: on the lab, the fault is in the BMC itself.
  const { machineId, powerChanges } = LAB_FAULT_DEMO;
  await labIpmiBmc(lab, machineId).failPowerChanges(powerChanges);
  console.log(`  fault: ${machineId}'s BMC refuses its next ${powerChanges} power changes`);
}

// The same composition as server.ts: the dashboard serves /metrics beside it.
const surfaces = values.server || lab ? undefined : await startSurfaces(
  // A fault on one machine the tour's "When Hardware Fails" section reimages; the others work.
  createEngine({
    provider: withFaults(
      createFakeProvider({ timing: values.slow ? "slow" : "normal" }),
      [parseFault(FAULT_DEMO)],
    ),
  }),
  {
    grpc: { host: "127.0.0.1", port: 0 },
    http: values["no-web"] ? undefined : { host: "127.0.0.1", port: 0 },
    metrics: values["no-web"] ? false : undefined, // served only on the dashboard's port
  },
);
const server = surfaces?.server;
const address = values.server ?? lab?.server ?? server!.address;
const web = surfaces?.http;
const dashboardUrl = web?.url ?? (lab && !values["no-web"] ? lab.httpUrl : undefined);
if (server) {
  console.log(`Started a bmdemo server on ${address}${values.slow ? " (slow timings)" : ""}.`);
}
if (dashboardUrl) console.log(`Live dashboard: ${dashboardUrl}`);
let code: number;
try {
  const dashboard = dashboardUrl ? ["--dashboard", dashboardUrl] : [];
  code = await main(["tour", "--server", address, ...dashboard], terminalIo(interrupt.signal));
} finally {
  await surfaces?.shutdown();
  await lab?.stop();
}
Deno.exit(code);
