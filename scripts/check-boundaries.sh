#!/usr/bin/env bash
# Checks the dependency boundary between the three crates (issue 16), which
# `cargo test --workspace` cannot see because it merges every member's features:
#   * labram-core links neither LSL, tokio, axum, Prometheus nor libtorch;
#   * labram-trainer links neither LSL, tokio, axum nor Prometheus;
#   * labramd (the daemon) never links libtorch.
# Prints the offending dependency chain and exits non-zero when one is crossed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0
forbid() {
  local pkg="$1"
  shift
  local tree
  tree="$(cargo tree -p "$pkg" -e normal --prefix none --offline 2>/dev/null || cargo tree -p "$pkg" -e normal --prefix none)"
  for dep in "$@"; do
    if grep -Eq "^${dep} v" <<<"$tree"; then
      echo "boundary crossed: $pkg depends on $dep (cargo tree -p $pkg -e normal -i $dep shows how)" >&2
      cargo tree -p "$pkg" -e normal -i "$dep" >&2 || true
      status=1
    fi
  done
}
forbid labram-core lsl lsl-sys tokio axum prometheus tch torch-sys
forbid labram-trainer lsl lsl-sys tokio axum prometheus
forbid labramd tch torch-sys
if ((status == 0)); then
  echo "boundaries hold: core and trainer without LSL/tokio/axum/Prometheus, daemon without libtorch"
fi
exit "$status"
