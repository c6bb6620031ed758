#!/usr/bin/env bash
# One-time (idempotent, fast when done) set-up of a fresh machine for labramd:
#   * Debian packages the native dependencies need (a C/C++ tool chain, libhdf5-dev),
#   * a project-local Python venv (.venv, ignored by git) with the pinned packages of
#     scripts/requirements.txt: libtorch for tch, libonnxruntime for ort, and the
#     reference tools (pyedflib, MNE, h5py, pylsl, onnx) the tests compare against,
#   * .deps/: stable, relative links that .cargo/config.toml points the build at.
# Nothing is downloaded at run time; everything comes from Debian and PyPI here.
#
#   bash scripts/setup.sh          # everything: what the tests and the trainer need (~3 GB)
#   bash scripts/setup.sh --demo   # only what the daemon needs (ONNX Runtime, liblsl; ~60 MB):
#                                  # scripts/demo.sh uses it, so a first prediction comes fast
set -euo pipefail
MODE=full
case "${1:-}" in
  --demo) MODE=demo ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--demo]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------
# The daemon alone needs only a C linker; the trainer's hdf5 crate needs libhdf5-dev;
# prometheus (server + promtool) checks monitoring/'s rules and runs tests/prometheus.rs.
pkgs=(build-essential pkg-config libhdf5-dev prometheus)
[ "$MODE" = demo ] && pkgs=(build-essential)
missing=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python venv ------------------------------------------------------------------
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
full_ready() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; }
if [ "$MODE" = demo ] && ! full_ready; then
  # The daemon's two native libraries, at the versions requirements.txt pins.
  DEMO_REQ="$(grep -E '^(onnxruntime|pylsl)==' "$REQ")"
  DEMO_STAMP="$VENV/.demo-requirements.sha256"
  demo_want="$(sha256sum <<<"$DEMO_REQ" | cut -d' ' -f1)"
  if [ ! -f "$DEMO_STAMP" ] || [ "$(cat "$DEMO_STAMP")" != "$demo_want" ]; then
    log "creating $VENV with the daemon's libraries only: $(tr '\n' ' ' <<<"$DEMO_REQ")"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q --no-cache-dir $DEMO_REQ
    echo "$demo_want" > "$DEMO_STAMP"
  fi
elif ! full_ready; then
  log "creating $VENV with $(basename "$REQ") (first run downloads ~3 GB of wheels)"
  # The venv takes ~5 GB and the first test build ~1.5 GB more: say so before pip's
  # "[Errno 28] No space left on device" would, and where.
  free_kb="$(df -Pk "$ROOT" | awk 'NR==2 {print $4}')"
  if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
    log "warning: only $((free_kb / 1024 / 1024)) GiB free on the disk of $ROOT; set-up and the first build need ~7 GiB"
  fi
  python3 -m venv "$VENV"
  # --no-cache-dir: pip's cache would keep a second copy of the ~3 GB of wheels.
  "$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade pip
  "$VENV/bin/python" -m pip install -q --no-cache-dir -r "$REQ"
  echo "$want" > "$STAMP"
fi

# --- stable links for the build (.cargo/config.toml) -------------------------------
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p .deps
[ -d "$SITE/torch" ] && ln -sfn "$SITE/torch" .deps/libtorch
ORT_LIB="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* | head -n1)"
ln -sfn "$ORT_LIB" .deps/libonnxruntime.so
# liblsl 1.18 from the pylsl wheel, linked instead of the 1.13 that lsl-sys would build
# (see .cargo/config.toml: the `[target.x86_64-unknown-linux-gnu.lsl]` override).
ln -sfn "$SITE/pylsl/lib" .deps/lsl
[ -f .deps/lsl/liblsl.so ] || { log "no liblsl.so in $SITE/pylsl/lib: is pylsl 1.18.6 installed?"; exit 1; }
rm -rf .deps/include   # the liblsl 1.13 build fix of earlier set-ups, no longer used
log "ready ($MODE): venv $VENV, libtorch $(readlink .deps/libtorch || echo 'not installed (--demo)'), onnxruntime $ORT_LIB, liblsl $(readlink .deps/lsl)"
