"""Times ONNX models at batch 1 in onnxruntime-python, one process per model and round.

Usage: .venv/bin/python scripts/bench_ort_models.py [--rounds 3] [--calls 40] MODEL.onnx...

Each model gets a 23-channel x 10-patch window (random, fixed seed), 2 intra-op threads, 1
inter-op thread, ORT_ENABLE_ALL, 5 warm-up calls, then `--calls` timed calls; the models run one
after another in separate processes (ONNX Runtime's spinning pools of one session would slow
another's), alternating over `--rounds`. Prints the median per model and round and the ratio to
the last model given (put the reference last).
"""
import argparse
import json
import subprocess
import sys

ONE = r"""
import sys, time, json
import numpy as np, onnxruntime as ort
m, n = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((1, 23, 10, 200)).astype(np.float32) * 30
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
s = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
feeds = {"eeg": x, s.get_inputs()[1].name: np.arange(24, dtype=np.int64)}
for _ in range(5):
    s.run(None, feeds)
t = []
for _ in range(n):
    t0 = time.perf_counter(); s.run(None, feeds); t.append((time.perf_counter() - t0) * 1e3)
print(json.dumps(float(np.median(t))))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=40)
    a = ap.parse_args()
    med = {m: [] for m in a.models}
    for _ in range(a.rounds):
        for m in a.models:
            out = subprocess.run([sys.executable, "-c", ONE, m, str(a.calls)], check=True, capture_output=True, text=True)
            med[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = a.models[-1]
    for m, v in med.items():
        ratio = sum(v) / sum(med[ref])
        print(f"{m}: median ms per round {' / '.join(f'{x:.1f}' for x in v)}; ratio to {ref.split('/')[-1]}: {ratio:.2f}")


if __name__ == "__main__":
    main()
