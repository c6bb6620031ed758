#!/usr/bin/env bash
# One-time (idempotent, fast when done) set-up of a fresh machine for labramd:
#   * Debian packages the native dependencies need (cmake for liblsl, libhdf5-dev),
#   * a project-local Python venv (.venv, ignored by git) with the pinned packages of
#     scripts/requirements.txt: libtorch for tch, libonnxruntime for ort, and the
#     reference tools (pyedflib, MNE, h5py, pylsl, onnx) the tests compare against,
#   * .deps/: stable, relative links that .cargo/config.toml points the build at.
# Nothing is downloaded at run time; everything comes from Debian and PyPI here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------
missing=()
for pkg in cmake build-essential pkg-config libhdf5-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python venv ------------------------------------------------------------------
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  log "creating $VENV with $(basename "$REQ") (first run downloads ~3 GB of wheels)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$REQ"
  echo "$want" > "$STAMP"
fi

# --- stable links for the build (.cargo/config.toml) -------------------------------
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p .deps/include
ln -sfn "$SITE/torch" .deps/libtorch
ORT_LIB="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* | head -n1)"
ln -sfn "$ORT_LIB" .deps/libonnxruntime.so
# liblsl 1.13 (bundled by lsl-sys) uses an old Boost that puts PTHREAD_STACK_MIN in an
# `#if`; since glibc 2.34 that macro is a sysconf() call. This header, force-included
# through CXXFLAGS (see .cargo/config.toml), makes it a constant again.
cat > .deps/include/labramd_pthread_fix.h <<'H'
#pragma once
#include <limits.h>
#include <pthread.h>
#undef PTHREAD_STACK_MIN
#define PTHREAD_STACK_MIN 16384
H
log "ready: venv $VENV, libtorch $(readlink .deps/libtorch), onnxruntime $ORT_LIB"
