/**
 * The netboot broker's iPXE scripts in a real iPXE: a QEMU VM (software emulation, QEMU's user
 * network with its DHCP/TFTP) runs the first-stage script, retries while no repave awaits it,
 * fetches its script from the broker's routes over HTTP and calls back; the report completes the
 * wait. `.ci/run` installs qemu-system-x86 and ipxe-qemu.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { MachineSchema } from "../lib/gen/baremetal/v1/baremetal_pb.ts";
import { bootLoaderScript, createNetbootBroker, type HttpRoute } from "../lib/provider/netboot.ts";
import { SANITIZE } from "./helpers.ts";

const MAC = "52:54:00:00:00:01";
// QEMU's user network forwards the guest's connections to this address to the test's server.
const GUEST_ADDRESS = "10.0.2.100";

Deno.test(
  "a QEMU VM's iPXE fetches its script after a 404, calls back, and completes the repave",
  SANITIZE,
  async () => {
    const firstMiss = Promise.withResolvers<void>();
    const requests: string[] = [];
    // Mounted once the port, and so the base URL, is known.
    const routes: HttpRoute[] = [];
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (request) => {
        const url = new URL(request.url);
        const route = routes.find((r) => r.method === request.method && r.path === url.pathname);
        const answer = route ? route.handle(request) : new Response("no route\n", { status: 404 });
        return Promise.resolve(answer).then((response) => {
          requests.push(`${request.method} ${url.pathname} ${response.status}`);
          if (url.pathname === "/boot/ipxe" && response.status === 404) firstMiss.resolve();
          return response;
        });
      },
    );
    const port = server.addr.port;
    const baseUrl = `http://${GUEST_ADDRESS}:${port}`;
    const broker = createNetbootBroker({ baseUrl });
    routes.push(...broker.routes);
    const tftp = await Deno.makeTempDir();
    await Deno.writeTextFile(`${tftp}/boot.ipxe`, bootLoaderScript(baseUrl));
    const vm = new Deno.Command("qemu-system-x86_64", {
      args: [
        ...["-accel", "tcg", "-m", "128", "-nographic", "-nodefaults", "-serial", "stdio"],
        ...["-display", "none", "-no-reboot", "-boot", "n"],
        "-netdev",
        `user,id=n0,restrict=on,guestfwd=tcp:${GUEST_ADDRESS}:${port}-tcp:127.0.0.1:${port},tftp=${tftp},bootfile=boot.ipxe`,
        ...["-device", `virtio-net-pci,netdev=n0,mac=${MAC}`],
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const console = vm.output();
    const lines: string[] = [];
    try {
      // The expectation is registered only once the VM was turned away: the retry loop is tested.
      await firstMiss.promise;
      const machine = create(MachineSchema, { machineId: "vm-1", spec: { macAddresses: [MAC] } });
      const call = {
        operationId: "op-1",
        // Generous: software emulation on a shared CPU (the VM reports ~10 s after start here).
        signal: AbortSignal.timeout(180_000),
        log: (line: string) => lines.push(line),
      };
      const report = await broker.awaitReport(call, machine, {
        imageRef: "img",
        cloudInitRef: "ci",
      });
      assert.equal(report.result, "ok");
      assert.match(
        report.detail,
        /^iPXE 1\.\d.* on 52:54:00:00:00:01$/,
        `iPXE expanded its settings: ${JSON.stringify(report.detail)}`,
      );
    } finally {
      vm.kill("SIGKILL");
      const { stdout } = await console;
      lines.push(...new TextDecoder().decode(stdout).split("\n").slice(-20));
      await Deno.remove(tftp, { recursive: true });
    }
    assert.deepEqual(requests.slice(-2), ["GET /boot/ipxe 200", "GET /boot/report 200"]);
    assert.ok(
      lines.some((line) => line.includes(`${MAC} fetched its iPXE script`)),
      lines.join("\n"),
    );
  },
);
