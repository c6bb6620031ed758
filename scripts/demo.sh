#!/usr/bin/env bash
# The live demo, from a fresh machine: set up, build, then stream two real EEG recordings of one
# person the shipped model never saw back to back as one LSL stream with `labramd replay` (rest,
# 182 s, then mental arithmetic, 62 s, looped; see data/README.md), run the daemon on
# it with the default model in models/, and print every prediction as it arrives, with a line
# where each recording starts (from the replay's marker stream).
#
#   bash scripts/demo.sh                      # until Ctrl-C
#   DEMO_SECONDS=300 bash scripts/demo.sh     # one full cycle (244 s) and the next switch
#
# While it runs: Prometheus metrics at http://127.0.0.1:9464/metrics, health at /healthz,
# predictions as the LSL stream `labramd` (LabRecorder / pylsl can record it), the replay's
# recording starts as `labramd-demo-markers`.
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

# Rest, then arithmetic, as one stream `labramd-demo` (the name configs/demo.yaml's input.name
# resolves), its timestamps running on across the switch; `labramd-demo-markers` carries each
# file's stem at its first sample.
REST=data/eegmat-Subject25_1.edf
TASK=data/eegmat-Subject25_2.edf
STREAM=labramd-demo

# Prints a line where each recording starts, stamped like the predictions (LSL time), so the
# switch shows between them. pylsl is in .venv (setup.sh --demo installs it for liblsl).
PRINTER='
import sys, pylsl
name, what = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
found = pylsl.resolve_byprop("name", name, 1, 30)
if not found:
    sys.exit(f"[demo] no stream {name}: the recording switches are not shown")
inlet = pylsl.StreamInlet(found[0])
tc = inlet.time_correction(timeout=5)
inlet.open_stream(timeout=10)
while True:
    m, t = inlet.pull_sample()
    print(f"{t + tc:>12.3f}  ---- now replaying {what.get(m[0], m[0])} ----", flush=True)
'

pids=()
printer=""
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  [ -z "$printer" ] || kill -TERM "$printer" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [ -x .venv/bin/python ]; then
  .venv/bin/python -c "$PRINTER" "$STREAM-markers" \
    "eegmat-Subject25_1=REST ($REST, 182 s)" \
    "eegmat-Subject25_2=MENTAL ARITHMETIC ($TASK, 62 s)" &
  printer=$!
fi
# --wait-consumers: the replay waits (up to 30 s) for the daemon to subscribe, so that the
# daemon sees the rest recording from its start.
"$BIN/labramd" replay "$REST" "$TASK" --loop --name "$STREAM" --wait-consumers 30 &
pids+=($!)
cat <<EOF
[demo] streaming $REST (rest, 182 s), then $TASK (mental arithmetic, 62 s), looped.
[demo] one line per prediction: LSL time of the window's last sample, predicted class, its
[demo] probability, end-to-end latency. A window spans 4 s, so after a switch the predictions
[demo] take a few seconds to see only the new recording. Ctrl-C stops.
EOF
if [ -n "${DEMO_SECONDS:-}" ]; then
  timeout --signal=INT "$DEMO_SECONDS" "$BIN/labramd" run --config "$CONFIG" --print || true
else
  "$BIN/labramd" run --config "$CONFIG" --print
fi
