#!/usr/bin/env bash
# End-to-end latency of labramd beside the Python baseline (issue 7 §8), through the
# shared harness ../shared/bench/e2e.sh: a pylsl producer (32 ch, 1000 Hz, 10-sample
# chunks, real time) → the system under test → a pylsl receiver timing every prediction.
# The two systems alternate, ROUNDS times each, on the same machine in the same run:
#   Python: pipeline.py (scipy + onnxruntime) on ../shared/golden/reference_torch_export.onnx
#   labramd: `labramd run --config configs/bench-anchor.yaml` (release build), on the
#            golden checkpoint exported by `labram-trainer export` (23 TUH channels,
#            10 patches) to models/bench-anchor.onnx
#
#   scripts/bench-e2e.sh [SECONDS=120] [ROUNDS=1]     # e.g. scripts/bench-e2e.sh 30 for a quick check
#   INT8=1 scripts/bench-e2e.sh 120 2                 # also the int8 model (labram-trainer quantize),
#                                                     # with 2 intra-op threads and with 1
#   FLOOR=1 scripts/bench-e2e.sh 120 2                # also the harness's own floor: examples/lsl_floor,
#                                                     # a relay of window ends with no processing
#                                                     # (producer lateness + two LSL hops)
#
# The daemon is the default build: linked to the liblsl 1.18 of the pylsl wheel (see
# .cargo/config.toml). The model is exported again whenever labram-trainer is newer than it,
# so the figures are always those of the current exporter.
#
# Prints, per system: windows received / expected, latency p50/p99/max, the model's own
# inference time, the overhead above it (per window: latency − inference), CPU use
# (% of one core while streaming) and peak memory, and the ratios labramd / Python.
# Raw files: target/bench-e2e/<time>/{py,labramd}-<round>/ (receiver.json, sut.json, logs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_RUN=${1:-120}
ROUNDS=${2:-1}
PY="$ROOT/.venv/bin/python"
BENCH="$ROOT/../shared/bench"
REF_ONNX="$ROOT/../shared/golden/reference_torch_export.onnx"
[ -x "$PY" ] || { echo "bench-e2e: $PY missing: run scripts/setup.sh" >&2; exit 1; }
[ -f "$BENCH/e2e.sh" ] || { echo "bench-e2e: $BENCH/e2e.sh missing (../shared/bench)" >&2; exit 1; }

echo "[bench-e2e] building labramd (release)" >&2
# FLOOR=1: the relay is built in the same invocation as the daemon.
cargo build --release -p labramd --bins ${FLOOR:+--example lsl_floor} 2>&1 | grep -Ev '^\s*(Compiling|Finished)' >&2 || true
MODEL=models/bench-anchor.onnx
cargo build --release -p labram-trainer --bins 2>&1 | grep -Ev '^\s*(Compiling|Finished)' >&2 || true
if [ ! -f "$MODEL" ] || [ target/release/labram-trainer -nt "$MODEL" ]; then
  echo "[bench-e2e] exporting the golden checkpoint to $MODEL (23 TUH channels, 10 patches)" >&2
  mkdir -p models
  target/release/labram-trainer export --checkpoint ../shared/golden/finetune_base.pth \
    --model labram_base_patch200_200 --num-classes 2 --patches 10 \
    --channels FP1,FP2,F3,F4,C3,C4,P3,P4,O1,O2,F7,F8,T3,T4,T5,T6,A1,A2,FZ,CZ,PZ,T1,T2 \
    --task "latency benchmark (untrained golden weights)" --output "$MODEL" >&2
fi
SYSTEMS="py labramd"
[ -n "${FLOOR:-}" ] && SYSTEMS="$SYSTEMS floor"
OUT="target/bench-e2e/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
if [ -n "${INT8:-}" ]; then
  echo "[bench-e2e] INT8=1: also the int8 model (labram-trainer quantize) as labramd-int8" >&2
  target/release/labram-trainer quantize --model "$MODEL" --output "$OUT/bench-anchor-int8.onnx" >&2
  sed "s|path: models/bench-anchor.onnx|path: $OUT/bench-anchor-int8.onnx|" configs/bench-anchor.yaml > "$OUT/daemon-int8.yaml"
  # One intra-op thread: the int8 model at 1 thread is about as fast as the float one at 2,
  # and leaves the second core to the LSL threads, the producer and the receiver.
  sed "s|threads: 2|threads: 1|" "$OUT/daemon-int8.yaml" > "$OUT/daemon-int8-1t.yaml"
  SYSTEMS="$SYSTEMS labramd-int8 labramd-int8-1t"
fi

for r in $(seq 1 "$ROUNDS"); do
  echo "[bench-e2e] round $r/$ROUNDS: Python baseline, ${SECONDS_RUN} s" >&2
  PY="$PY" "$BENCH/e2e.sh" "$OUT/py-$r" "$SECONDS_RUN" "$PY" "$BENCH/pipeline.py" \
    --model "$REF_ONNX" --out "$OUT/py-$r/sut.json" >&2
  for sys in $SYSTEMS; do
    [ "$sys" = py ] && continue
    if [ "$sys" = floor ]; then
      echo "[bench-e2e] round $r/$ROUNDS: harness floor (lsl_floor relay), ${SECONDS_RUN} s" >&2
      PY="$PY" "$BENCH/e2e.sh" "$OUT/floor-$r" "$SECONDS_RUN" target/release/examples/lsl_floor \
        --summary "$OUT/floor-$r/sut.json" >&2
      continue
    fi
    cfg=configs/bench-anchor.yaml
    # labramd-<variant> reads the config written beside its model: $OUT/daemon-<variant>.yaml
    [ "$sys" != labramd ] && cfg="$OUT/daemon-${sys#labramd-}.yaml"
    echo "[bench-e2e] round $r/$ROUNDS: $sys, ${SECONDS_RUN} s" >&2
    PY="$PY" "$BENCH/e2e.sh" "$OUT/$sys-$r" "$SECONDS_RUN" target/release/labramd run \
      --config "$cfg" --summary "$OUT/$sys-$r/sut.json" >&2
  done
done

"$PY" - "$OUT" "$ROUNDS" "$SECONDS_RUN" $SYSTEMS <<'PYEOF'
import json, os, platform, sys
import numpy as np

out, rounds, secs, systems = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[5:]


def load(kind, r):
    d = os.path.join(out, f"{kind}-{r}")
    rec = json.load(open(os.path.join(d, "receiver.json")))
    sut = json.load(open(os.path.join(d, "sut.json")))
    return rec, sut


def per_window(rec, sut):
    """Receiver latency and the system's own inference time, matched by timestamp."""
    pw = sut["per_window"]
    infer = {round(t, 4): ms for t, ms in zip(pw["t_last"], pw["infer_ms"])}
    lat, inf = [], []
    for ts, l in zip(rec["timestamps"], rec["latency_all_ms"]):
        key = round(ts, 4)
        if key in infer:
            lat.append(l)
            inf.append(infer[key])
    return np.array(lat), np.array(inf)


def summary(kind):
    lat, inf, n, exp, cpu, rss, drops = [], [], 0, 0, [], [], 0
    for r in range(1, rounds + 1):
        rec, sut = load(kind, r)
        l, i = per_window(rec, sut)
        lat.append(l); inf.append(i)
        n += rec["n"]
        if kind == "py":
            exp += sut["windows_expected"]
        else:
            exp += sut["windows"] + sum(sut["windows_dropped"].values())
            drops += sum(sut["windows_dropped"].values()) + sut["ring_overruns"]
        gaps = (rec.get("gaps") or {}).get("missing_by_timestamp_gaps") or 0
        drops += gaps
        cpu.append(sut["cpu_percent"]); rss.append(sut["peak_rss_mb"])
    lat, inf = np.concatenate(lat), np.concatenate(inf)
    ovh = lat - inf
    p = lambda x, q: float(np.percentile(x, q)) if len(x) else float("nan")
    return dict(n=n, expected=exp, drops=drops,
                lat=(p(lat, 50), p(lat, 99), float(lat.max()) if len(lat) else float("nan")),
                inf=(p(inf, 50), p(inf, 99)), ovh=(p(ovh, 50), p(ovh, 99), float(ovh.max()) if len(ovh) else float("nan")),
                cpu=float(np.mean(cpu)), rss=float(np.max(rss)))


py = summary("py")
ds = {name: summary(name) for name in systems}
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" :\t") if os.path.exists("/proc/cpuinfo") else platform.machine()
print(f"machine: {os.cpu_count()} CPUs, {cpu} · load average at the end {os.getloadavg()[0]:.1f} · "
      f"{rounds} round(s) × {secs:.0f} s per system, alternating · raw: {out}")
fmt = lambda v, d=2: f"{v:.{d}f}"
rows = [
    ("windows received / expected", lambda s: f"{s['n']} / {s['expected']}", None),
    ("drops (missing + dropped)", lambda s: f"{s['drops']}", None),
    ("latency p50 (ms)", lambda s: fmt(s["lat"][0]), lambda s: s["lat"][0]),
    ("latency p99 (ms)", lambda s: fmt(s["lat"][1]), lambda s: s["lat"][1]),
    ("latency max (ms)", lambda s: fmt(s["lat"][2]), lambda s: s["lat"][2]),
    ("own inference p50 (ms)", lambda s: fmt(s["inf"][0]), lambda s: s["inf"][0]),
    ("own inference p99 (ms)", lambda s: fmt(s["inf"][1]), lambda s: s["inf"][1]),
    ("overhead above inference p50 (ms)", lambda s: fmt(s["ovh"][0]), lambda s: s["ovh"][0]),
    ("overhead above inference p99 (ms)", lambda s: fmt(s["ovh"][1]), lambda s: s["ovh"][1]),
    ("overhead above inference max (ms)", lambda s: fmt(s["ovh"][2]), lambda s: s["ovh"][2]),
    ("CPU while streaming (% of one core)", lambda s: fmt(s["cpu"], 1), lambda s: s["cpu"]),
    ("peak memory RSS (MiB)", lambda s: fmt(s["rss"], 0), lambda s: s["rss"]),
]
w = max(len(r[0]) for r in rows)
head = "| " + " " * w + " | Python baseline | " + " | ".join(f"{n} | {n} / Python" for n in ds) + " |"
print(head)
print("|" + "-" * (w + 2) + "|---:|" + "---:|---:|" * len(ds))
for name, show, val in rows:
    cells = [show(py)]
    for s in ds.values():
        cells.append(show(s))
        cells.append("" if val is None else f"{val(s) / val(py):.2f}")
    print(f"| {name:{w}} | " + " | ".join(cells) + " |")
ok = lambda c: "met" if c else "NOT met"
for n, s in ds.items():
    if n == "floor":
        print(f"harness floor (relay, no processing): latency p50 {s['lat'][0]:.2f} / p99 {s['lat'][1]:.2f} / "
              f"max {s['lat'][2]:.2f} ms: what any system's overhead above inference includes on this machine")
        continue
    print(f"targets ({n}): overhead p99 {s['ovh'][1]:.2f} ms <= 1 ms: {ok(s['ovh'][1] <= 1.0)}; "
          f"p99 ratio {s['lat'][1] / py['lat'][1]:.2f} <= 0.7: {ok(s['lat'][1] / py['lat'][1] <= 0.7)}; "
          f"zero drops: {ok(s['drops'] == 0 and s['n'] == s['expected'])}")
PYEOF
