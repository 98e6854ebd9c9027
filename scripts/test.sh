#!/usr/bin/env bash
# The test command (`deno task test`): format, lint, type-check, codegen freshness, then every
# test. Ends with the line "N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
case "${1:-}" in
-h | --help)
  cat <<'EOF'
usage: deno task test [deno test flags] [files]

Runs what CI runs: deno install --frozen, deno fmt --check, deno lint, deno check of every
module, codegen freshness (deno task proto, then git diff lib/gen), then deno test --doc with
every permission. Ends with "N passed, N failed"; exits non-zero on any failure.

  [deno test flags]   passed to deno test, e.g. --filter "pattern" or --fail-fast
  [files]             test only these files
  -h, --help          this help
EOF
  exit 0
  ;;
esac
cd "$(dirname "$0")/.."
export NO_COLOR=1

step() { printf '\n== %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; echo "0 passed, 1 failed"; exit 1; }

step "deno install (lock file is frozen: a dependency change must update deno.lock)"
deno install --frozen >/dev/null || fail "deno install --frozen (run deno install and commit deno.lock)"

step "deno fmt --check"
deno fmt --check || fail "deno fmt --check (run deno fmt)"

step "deno lint"
deno lint || fail "deno lint"

step "deno check (every module)"
# Tracked and new files that exist (a file deleted but not yet committed is skipped).
mapfile -t modules < <(git ls-files --cached --others --exclude-standard -- '*.ts' |
  grep -v '^lib/gen/' | while read -r f; do [ -f "$f" ] && echo "$f"; done)
deno check "${modules[@]}" || fail "deno check"

step "codegen freshness (deno task proto, then git diff lib/gen)"
deno task proto || fail "deno task proto"
if ! git diff --exit-code -- lib/gen || [ -n "$(git status --porcelain -- lib/gen)" ]; then
  git status --short -- lib/gen
  fail "lib/gen is stale: run deno task proto and commit the result"
fi

step "deno test"
log=$(mktemp)
deno test --doc --allow-read --allow-write --allow-net --allow-env --allow-run --allow-sys "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -1)
rm -f "$log"
passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
if [ -z "$summary" ]; then
  echo "0 passed, 1 failed"
  exit 1
fi
echo
echo "${passed} passed, ${failed} failed"
if [ "$status" -ne 0 ] || [ "$failed" != "0" ]; then exit 1; fi
