#!/usr/bin/env bash
# The seed's two-process presenter flow: starts a real bmdemo server process, runs the guided
# tour against it with the CLI, and stops exactly the server it started when the script exits
# (normally, on error or on Ctrl+C).
#
#   scripts/run-bmdemo.sh [--slow] [--port N]
#
# --slow uses the slow hardware timings (for live presentations); --port picks the server port
# (default: a free one). The tour pauses for Enter only when stdin is a terminal. The server's
# output is kept in a log file after the script exits; its path is the last line printed.
set -euo pipefail
cd "$(dirname "$0")/.."

slow=()
port=0
while [ $# -gt 0 ]; do
  case "$1" in
    --slow) slow=(--slow); shift ;;
    --port) port="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-bmdemo.sh: unknown argument $1 (use --slow, --port N or --help)" >&2; exit 2 ;;
  esac
done

# Kept after exit (the path is printed last), so what the server said can be read afterwards.
log=$(mktemp "${TMPDIR:-/tmp}/bmdemo-server.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    echo "Stopping the server (pid $server_pid)..."
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  echo "The server's log is kept at $log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Started directly (no wrapper process), so $! is the server itself and cleanup stops exactly it.
# Same V8 flags as `deno task server` (see SERVER_V8_FLAGS in scripts/server_process.ts).
deno run --allow-net --allow-env --v8-flags=--max-semi-space-size=2,--expose-gc server.ts --port "$port" "${slow[@]}" >"$log" 2>&1 &
server_pid=$!

address=""
for _ in $(seq 1 100); do
  address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$address" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "The server failed to start:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "The server did not report its address within 10 s; its log:" >&2
  cat "$log" >&2
  exit 1
fi
echo "Server (pid $server_pid) listening on $address; its log (kept after exit): $log"

deno run --allow-net --allow-env cli.ts tour --server "$address"
