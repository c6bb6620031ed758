#!/usr/bin/env bash
# Sets up a fresh machine (idempotent) and runs every check CI runs: formatting,
# clippy with warnings as errors, the crate boundaries, and all tests of the workspace.
#
# Every check runs even when an earlier one fails (and every test, with
# --no-fail-fast: one failing unit test must not hide the integration tests'
# results); the script exits non-zero if any failed, and lists which.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh || exit 1

failed=()
check() {
  local name="$1"
  shift
  echo "== $name"
  "$@" || failed+=("$name")
}
check "cargo fmt --check" cargo fmt --all -- --check
check "cargo clippy (all targets, -D warnings)" cargo clippy --workspace --all-targets -- -D warnings
check "crate boundaries (cargo tree)" bash scripts/check-boundaries.sh
check "promtool check + test rules (monitoring/prometheus)" bash -c 'promtool check rules monitoring/prometheus/*.yml && promtool test rules monitoring/prometheus/tests/*.yml'
# labram-core alone, with only its own features (the workspace build merges the others').
check "labram-core builds and tests alone" cargo test -p labram-core --no-fail-fast
check "cargo test" cargo test --workspace --no-fail-fast

if ((${#failed[@]})); then
  printf '== FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "== all checks passed"
