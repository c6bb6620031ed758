#!/usr/bin/env bash
# Memory soak of the daemon (a benchmark, not a test): `labramd replay --loop` streams
# data/eegmat-Subject25_2.edf and `labramd run` classifies it with configs/demo.yaml's
# model for SECONDS (default 3600); the daemon's resident memory (VmRSS, /proc) is
# sampled every INTERVAL seconds into OUT (CSV: elapsed_s,rss_kib,windows_published).
# Prints the first / last / peak RSS and the growth over the second half, where any
# leak shows after the allocator's and ONNX Runtime's warm-up.
#
#   bash scripts/soak.sh                   # an hour
#   SECONDS_TOTAL=600 INTERVAL=10 bash scripts/soak.sh out/soak.csv
# Needs the release binary (scripts/demo.sh or `cargo build --release -p labramd`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOTAL="${SECONDS_TOTAL:-3600}"
INTERVAL="${INTERVAL:-30}"
OUT="${1:-out/soak.csv}"
BIN="$ROOT/target/release/labramd"
[ -x "$BIN" ] || { echo "soak: $BIN is missing; build it with: cargo build --release -p labramd" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
PORT="${SOAK_PORT:-9469}"
CFG="$(mktemp)"
sed -e "s/name: labramd-demo/name: labramd-soak/" -e "s/127.0.0.1:9464/127.0.0.1:$PORT/" \
  -e "s/^  name: labramd  /  name: labramd-soak-out  /" configs/demo.yaml > "$CFG"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "$CFG"; }
trap cleanup EXIT INT TERM
"$BIN" replay data/eegmat-Subject25_2.edf --loop --name labramd-soak >/dev/null 2>&1 &
pids+=($!)
"$BIN" run --config "$CFG" >/dev/null 2>"$OUT.log" &
daemon=$!
pids+=("$daemon")
echo "elapsed_s,rss_kib,windows_published" > "$OUT"
start=$(date +%s)
while :; do
  sleep "$INTERVAL"
  now=$(( $(date +%s) - start ))
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status" 2>/dev/null) || { echo "soak: the daemon exited (log: $OUT.log)" >&2; exit 1; }
  pub=$(curl -s "127.0.0.1:$PORT/metrics" | awk '/^labramd_windows_published_total/ {print $2}')
  echo "$now,$rss,${pub:-0}" >> "$OUT"
  (( now >= TOTAL )) && break
done
awk -F, -v total="$TOTAL" 'NR > 1 { t[NR] = $1; r[NR] = $2; if ($2 > peak) peak = $2; n = NR; w = $3 }
  END {
    half = 0; for (i = 2; i <= n; i++) if (t[i] >= total / 2 && !half) half = i
    printf "soak: %d s, %s windows published; RSS first %d KiB, last %d KiB, peak %d KiB; second half %+d KiB (%d -> %d)\n",
      t[n], w, r[2], r[n], peak, r[n] - r[half], r[half], r[n]
  }' "$OUT"
