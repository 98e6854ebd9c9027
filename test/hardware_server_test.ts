/**
 * The server's hardware flags (`--bmc-credentials`, `--bmc-concurrency`, `--http-advertise-url`)
 * and the routing provider in the running server.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  MachineSchema,
  MachineService,
  Operation_Phase as OperationPhase,
  OperationService,
} from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { Code, connectClient } from "../lib/client/mod.ts";
import { rejectsWithCode, SANITIZE } from "./helpers.ts";
import { runServer, spawnServer } from "../scripts/server_process.ts";

const PASSWORD = "never-print-me";

async function tempFile(text: string): Promise<string> {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(file, text);
  return file;
}

Deno.test(
  "server.ts refuses bad hardware flags with exit code 2, naming file, entry and field",
  SANITIZE,
  async (t) => {
    const bad = await tempFile(
      `credentials:\n  - bmc: 10.0.0.5\n    username: admin\n    password: ${PASSWORD}\n    insecure: maybe\n`,
    );
    try {
      for (
        const [args, pattern] of [
          [
            ["--bmc-concurrency", "0"],
            /--bmc-concurrency must be a whole number of at least 1: got "0"/,
          ],
          [
            ["--http-advertise-url", "10.0.2.100:8080"],
            /--http-advertise-url must be an http\(s\) URL/,
          ],
          [
            ["--bmc-credentials", "/nonexistent/bmc.yaml"],
            /--bmc-credentials \/nonexistent\/bmc.yaml: cannot read the file/,
          ],
          [
            ["--bmc-credentials", bad],
            new RegExp(
              `--bmc-credentials ${bad}: entry 1 \\(bmc "10.0.0.5"\\): insecure: must be true or false`,
            ),
          ],
        ] as const
      ) {
        await t.step(args.join(" "), async () => {
          const { code, stderr } = await runServer([...args]);
          assert.equal(code, 2);
          assert.match(stderr, pattern);
          assert.ok(!stderr.includes(PASSWORD), "no password in the error");
        });
      }
    } finally {
      await Deno.remove(bad);
    }
  },
);

Deno.test(
  "server.ts routes machines by spec.provider: bad addresses refused, a real machine needs its credential",
  SANITIZE,
  async () => {
    const file = await tempFile(
      `credentials:\n  - bmc: 10.0.0.5\n    username: admin\n    password: ${PASSWORD}\n`,
    );
    try {
      await using server = await spawnServer([
        "--timing",
        "zero",
        "--bmc-credentials",
        file,
        "--bmc-concurrency",
        "2",
        "--http-advertise-url",
        "http://10.0.2.100:8080",
      ]);
      using machines = connectClient(MachineService, server.address);
      using operations = connectClient(OperationService, server.address);
      await rejectsWithCode(
        machines.registerMachine({
          machine: create(MachineSchema, {
            machineId: "m-1",
            spec: { provider: "ipmi", bmcAddress: "10.0.0.5:0" },
          }),
        }),
        Code.InvalidArgument,
        /spec.bmc_address "10.0.0.5:0" is not an IPMI address/,
      );
      await machines.registerMachine({
        machine: create(MachineSchema, {
          machineId: "m-1",
          spec: { provider: "ipmi", bmcAddress: "10.0.0.9" },
        }),
      });
      const enter = await machines.enterMaintenance({ machineId: "m-1", requestId: "e" });
      for await (const _ of operations.streamOperationLogs({ operationId: enter.operationId })) {
        // The log stream ends when the operation does.
      }
      const reboot = await machines.rebootMachine({ machineId: "m-1", requestId: "r" });
      let log = "";
      for await (
        const chunk of operations.streamOperationLogs({ operationId: reboot.operationId })
      ) {
        log += new TextDecoder().decode(chunk.data);
      }
      // A configuration problem is permanent: the step does not spend its retries on it.
      assert.match(log, /Not retried: the failure is permanent/);
      assert.doesNotMatch(log, /Retry 1\//);
      const done = await operations.getOperation({ operationId: reboot.operationId });
      assert.equal(done.phase, OperationPhase.FAILED);
      assert.match(
        done.error!.message,
        /no credential for machine m-1 \(BMC 10\.0\.0\.9\) in --bmc-credentials/,
      );
      await server.stop();
      assert.match(
        server.stderr(),
        /Hardware: drivers redfish, ipmi; 1 credential entries from \S+; at most 2 calls in flight per BMC/,
      );
      assert.ok(!server.stderr().includes(PASSWORD), "the password is never logged");
    } finally {
      await Deno.remove(file);
    }
  },
);
