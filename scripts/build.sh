#!/usr/bin/env bash
# Configures and builds ftlaunch into build/ (binary: build/bin/ftlaunch).
# LibTorch is found through the Python that has torch: the setup venv
# ($FTLAUNCH_VENV, default $HOME/.cache/ftlaunch/venv) or, if that has none, the system python3
# (the GPU image). Extra CMake arguments pass through: scripts/build.sh -DCMAKE_BUILD_TYPE=Debug
# FTLAUNCH_BUILD_TARGETS="ftlaunch ..." builds only those targets (scripts/gpu_check.sh), and
# FTLAUNCH_BUILD_JOBS sets the parallel jobs (default: the cores).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FTLAUNCH_VENV:-$HOME/.cache/ftlaunch/venv}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  python="$venv/bin/python"
else
  python="$(command -v python3)"
fi
torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')" || {
  echo "build.sh: no Python with torch found; run scripts/setup.sh first" >&2; exit 2; }

# Hopper (H100/H200) is the target; naming the arch also spares TorchConfig its GPU probe,
# which cannot run on machines without a GPU.
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
cuda_args=(-DCMAKE_CUDA_ARCHITECTURES=90)
# TorchConfig looks for the CUDA toolkit when the wheel is a CUDA build.
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ftlaunch/ccache}"
# Hash paths relative to the checkout, so a fresh clone elsewhere hits the same cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DPython3_EXECUTABLE="$python" -DFTL_PYTHON="$python" "${cuda_args[@]}" "$@" >build-configure.log 2>&1 || {
  cat build-configure.log >&2; exit 1; }
targets=()
for target in ${FTLAUNCH_BUILD_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build build -j "${FTLAUNCH_BUILD_JOBS:-$(nproc)}" "${targets[@]}"
