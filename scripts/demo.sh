#!/usr/bin/env bash
# The live demo, from a fresh machine: set up, build, then stream a real EEG recording
# (data/eegmat-Subject25_2.edf, looped) through `labramd replay` as an LSL outlet, run the
# daemon on it with the default model in models/, and print every prediction as it arrives.
#
#   bash scripts/demo.sh              # until Ctrl-C
#   DEMO_SECONDS=30 bash scripts/demo.sh
#
# While it runs: Prometheus metrics at http://127.0.0.1:9464/metrics, health at /healthz,
# predictions as the LSL stream `labramd` (LabRecorder / pylsl can record it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Only what the daemon needs (ONNX Runtime and liblsl, no libtorch), and only the daemon
# is built: the first prediction comes within minutes of a fresh clone.
bash scripts/setup.sh --demo
echo "[demo] building labramd (release; the first build takes a few minutes)" >&2
cargo build --release --quiet -p labramd --bin labramd || { echo "demo: building labramd failed (see above)" >&2; exit 1; }
BIN="$ROOT/target/release"
CONFIG="${DEMO_CONFIG:-configs/demo.yaml}"

# The default model: the trained eegmat model shipped in models/ (see its card).
MODEL="$(sed -n 's/^ *path: *\([^ #]*\.onnx\).*/\1/p' "$CONFIG" | head -n1)"
[ -f "$MODEL" ] || { echo "demo: model $MODEL (from $CONFIG) is missing" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN/labramd" replay data/eegmat-Subject25_2.edf --loop --name labramd-demo &
pids+=($!)
if [ -n "${DEMO_SECONDS:-}" ]; then
  timeout --signal=INT "$DEMO_SECONDS" "$BIN/labramd" run --config "$CONFIG" --print || true
else
  "$BIN/labramd" run --config "$CONFIG" --print
fi
