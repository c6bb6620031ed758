#!/usr/bin/env bash
# Export the golden (seeded, UNTRAINED) fine-tuning checkpoint from ../shared/golden
# to models/labram-base-golden.onnx plus its model card models/labram-base-golden.yaml
# (`trained: false`, 23 TUH channels, 10-patch windows, classes class_0/class_1).
# The .onnx (about 23 MB) is a build output: it is not committed.
#
# Usage: scripts/export-golden.sh [extra `labram-trainer export` arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GOLDEN="$ROOT/../shared/golden/finetune_base.pth"
[ -f "$GOLDEN" ] || { echo "export-golden: $GOLDEN not found (the shared golden set sits beside the repository)" >&2; exit 1; }
cargo build --release -p labram-trainer --bin labram-trainer 2>&1 | grep -Ev '^\s*(Compiling|Finished)' >&2 || true
mkdir -p models
target/release/labram-trainer export \
  --checkpoint "$GOLDEN" \
  --model labram_base_patch200_200 \
  --num-classes 2 \
  --patches 10 \
  --task "golden parity checkpoint (seeded initialisation, untrained)" \
  --output models/labram-base-golden.onnx "$@"
echo "wrote models/labram-base-golden.onnx and models/labram-base-golden.yaml" >&2
