#!/usr/bin/env bash
# Installs everything ftlaunch needs to build and test, idempotently:
#   - Debian packages (compiler tool chain, CLI11, yaml-cpp, spdlog, nlohmann-json, Catch2,
#     OpenMPI, ccache, PCRE2, utf8proc, liburing, clang for the fuzz targets, headless Chromium
#     for the run-report test);
#   - a Python virtualenv OUTSIDE the checkout ($FTLAUNCH_VENV, default
#     $HOME/.cache/ftlaunch/venv) holding torch==2.11.0 (LibTorch comes from this wheel; the
#     PyPI build is the CUDA 13.0 one, matching the machine's toolkit), pyarrow, and the parity
#     test oracles (transformers, peft, tokenizers, safetensors, accelerate; tensorboard and
#     pillow read back the event files and report screenshots; deepspeed for its memory
#     estimator; bitsandbytes, whose portable 4-bit kernels the QLoRA tests match bit for bit;
#     datasets, whose CSV loader the CSV reader matches),
#     every one at a pinned version.
# A second run finds everything in place, installs nothing and takes seconds.
# On a machine whose python3 already has torch 2.11 and no registry (the GPU image), set
# FTLAUNCH_USE_SYSTEM_PYTHON=1: nothing is installed, the system python3 is used.
set -euo pipefail

venv="${FTLAUNCH_VENV:-$HOME/.cache/ftlaunch/venv}"
stamp_version=8   # bump when the package list below changes

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libcli11-dev libyaml-cpp-dev libspdlog-dev nlohmann-json3-dev catch2
  libopenmpi-dev openmpi-bin libpcre2-dev libutf8proc-dev liburing-dev clang
  python3-venv chromium-headless-shell
)
# Every reference is pinned: a parity test proves equality with one version, and a new release
# (or a different CPU path in one) must not turn CI red overnight. pyarrow's C++ libraries are
# linked into the build.
python_packages=(
  "torch==2.11.0" "numpy==2.4.6" "pyarrow==26.0.1"
  "transformers==5.24.0" "peft==0.21.2" "tokenizers==0.23.3" "safetensors==0.8.0" "accelerate==1.15.0"
  "tensorboard==2.21.0" "pillow==13.0.0" "deepspeed==0.19.8" "bitsandbytes==0.50.2" "datasets==5.2.0" "trl==1.16.0"
)

log() { printf '[setup] %s\n' "$*"; }

install_debian_packages() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages: all present"
    return
  fi
  log "Debian packages: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_venv() {
  local stamp="$venv/.ftlaunch-setup-$stamp_version"
  if [ -f "$stamp" ]; then
    log "Python venv: ready at $venv"
    return
  fi
  log "Python venv: creating $venv (torch 2.11.0 and the parity-test references; several GB, once)"
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "${python_packages[@]}"
  "$venv/bin/python" -c 'import torch, transformers, peft, tokenizers, safetensors, pyarrow' 
  touch "$stamp"
}

if [ "${FTLAUNCH_USE_SYSTEM_PYTHON:-0}" = "1" ]; then
  log "FTLAUNCH_USE_SYSTEM_PYTHON=1: using $(command -v python3) as it is"
  python3 -c 'import torch; print("[setup] torch", torch.__version__)'
  exit 0
fi
install_debian_packages
install_python_venv
