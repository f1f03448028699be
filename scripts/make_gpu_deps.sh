#!/usr/bin/env bash
# Fills .gpu_deps/ (ignored by git) with the build dependencies the GPU machine's image may lack
# and cannot fetch (it reaches no registry): nlohmann-json's headers, and PCRE2's and utf8proc's
# headers and static libraries, unpacked from Debian's packages. `run` carries it (carry [".gpu_deps"]);
# scripts/gpu_check.sh puts it on CMAKE_PREFIX_PATH, and CMake falls back to it when the image
# has no such package. Usage: bash scripts/make_gpu_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev)
downloads="$(mktemp -d)"
trap 'rm -rf "$downloads"' EXIT
(cd "$downloads" && apt-get download "${packages[@]}" >/dev/null)
rm -rf .gpu_deps
for deb in "$downloads"/*.deb; do dpkg -x "$deb" .gpu_deps; done
echo "make_gpu_deps: $(du -sh .gpu_deps | cut -f1) in .gpu_deps from ${packages[*]}"
