#!/usr/bin/env bash
# One call on the GPU machine (the `device` tool): build what the GPU checks need with the image's
# torch, then, most important first, the checks that need a GPU: the NCCL communicator, the 4-bit
# dequant kernel, the RMSNorm/SwiGLU/RoPE kernels and span attention, issue 8's LoRA bench against
# the HF stack (loss check on the first shape), ftlaunch's own variants (QLoRA, ZeRO-3 offload,
# checkpointing auto), ZeRO-3's overhead. The unit and parity suites run on CPU in CI and are not
# repeated here.
#
# Every stage fits one deadline, FTL_GPU_SECONDS (default 560: a device call may run 600 s); a
# stage that has too little time left is skipped and says so. Each summary row is appended to
# $OUT/summary.txt as soon as it is known, so a call cut short still brings the rows back with
# the logs; the table is printed last.
# Usage: bash scripts/gpu_check.sh [scale]
# `scale` instead builds and runs only issue 8's scale check: ftlaunch's QLoRA on a 70B-shaped NF4
# checkpoint (written with random codes; ~40 GB of disk) on one GPU, tokens/s and peak memory.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/ftl_gpu_check}"
mkdir -p "$out"
: >"$out/summary.txt"
deadline=$(( $(date +%s) + ${FTL_GPU_SECONDS:-560} ))

row() { printf '%-46s %s\n' "$1" "$2" | tee -a "$out/summary.txt"; }
seconds_left() { echo $(( deadline - $(date +%s) )); }
# budget CAP MIN: the seconds a stage may take (at most CAP), or nothing when fewer than MIN are left.
budget() {
  local left; left=$(seconds_left)
  if [ "$left" -lt "$2" ]; then return 1; fi
  echo $(( left < $1 ? left : $1 ))
}
verdict() { [ "$1" = 0 ] && echo ok || { [ "$1" = 124 ] && echo "TIMED OUT" || echo "FAILED (exit $1)"; }; }
finish() {
  echo
  for log in nccl_test dequant model_kernels; do [ -f "$out/$log.log" ] && tail -25 "$out/$log.log"; done
  for log in bench_lora bench_variants zero_overhead bench_scale; do
    [ -f "$out/$log.log" ] && { echo "== $log.log"; tail -30 "$out/$log.log"; }
  done
  echo
  cat "$out/summary.txt"
  exit 0
}

nvidia-smi -L | tee "$out/gpus.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpus.txt"

# What the image may lack (nlohmann-json, PCRE2) comes carried in .gpu_deps/ (scripts/make_gpu_deps.sh);
# CMake prefers the image's own packages and falls back to these.
if [ -d .gpu_deps/usr ]; then
  export CMAKE_PREFIX_PATH="${CMAKE_PREFIX_PATH:+$CMAKE_PREFIX_PATH:}$PWD/.gpu_deps/usr"
  echo "carried build dependencies in .gpu_deps on CMAKE_PREFIX_PATH"
fi

start=$(date +%s)
if FTLAUNCH_BUILD_JOBS=16 FTLAUNCH_BUILD_TARGETS=ftlaunch timeout "$(seconds_left)" bash scripts/build.sh >"$out/build.log" 2>&1; then
  row "build ftlaunch (sm_90, image torch)" "ok in $(( $(date +%s) - start )) s"
else
  row "build ftlaunch" "FAILED (build.log)"; tail -40 "$out/build.log"; cp build-configure.log "$out/" 2>/dev/null
  finish
fi
# The kernel checks (CUDA builds only); the bench needs only ftlaunch, so it runs even if these fail.
start=$(date +%s)
if timeout "$(seconds_left)" cmake --build build -j 16 --target ftl_bench_dequant ftl_bench_model_kernels \
    >>"$out/build.log" 2>&1; then
  row "build the kernel checks" "ok in $(( $(date +%s) - start )) s"
else
  row "build the kernel checks" "FAILED (build.log)"; tail -20 "$out/build.log"
fi

if [ "${1:-}" = scale ]; then
  if t=$(budget 540 120); then
    timeout "$t" python3 bench/bench_lora.py build --device cuda --shapes 70b:1 --prequantized --steps 3 --warmup 2 \
      >"$out/bench_scale.log" 2>&1
    row "70B QLoRA on one GPU (bench_scale.log)" "$(verdict $?)"
  else
    row "70B QLoRA on one GPU" "skipped: $(seconds_left) s left"
  fi
  finish
fi

gpus=$(nvidia-smi -L | wc -l)
if t=$(budget 60 30); then
  timeout "$t" build/bin/ftlaunch --num_processes "$gpus" --main_process_port 0 test --repeat 3 >"$out/nccl_test.log" 2>&1
  row "ftlaunch test, $gpus rank(s), NCCL" "$(verdict $?)"
fi
build/bin/ftlaunch env >"$out/env.log" 2>&1

if t=$(budget 60 20); then
  timeout "$t" build/bin/ftl_bench_dequant >"$out/dequant.log" 2>&1
  row "4-bit dequant kernel vs CPU (bit for bit)" "$(verdict $?)"
  row "4-bit dequant bandwidth" "$(grep -o '[0-9]*% of copy' "$out/dequant.log" || echo 'not measured')"
fi
if t=$(budget 90 20); then
  timeout "$t" build/bin/ftl_bench_model_kernels >"$out/model_kernels.log" 2>&1
  row "RMSNorm/SwiGLU/RoPE kernels, span attention" "$(verdict $?)"
  for kernel in rms_norm swiglu rope; do
    row "$kernel fwd+bwd vs composite" "$(grep "^$kernel .*forward+backward" "$out/model_kernels.log" | grep -o 'composite [0-9.]* us ([0-9.]*x)' || echo 'not measured')"
  done
  row "packed attention over spans vs masked SDPA" "$(grep -o 'masked SDPA [0-9.]* us ([0-9.]*x)' "$out/model_kernels.log" || echo 'not measured')"
fi

# Issue 8's table: ftlaunch against transformers + PEFT on DESIGN.md's shapes (loss check on the
# first), then our QLoRA, checkpointing-auto, composite-kernel and ZeRO-3 + cpu offload runs
# against our LoRA.
# Each run's line is in the log as soon as it ends.
if ! python3 -c 'import transformers, peft' 2>/dev/null; then
  row "LoRA bench vs HF" "not measured (no transformers/peft in the image)"
  finish
fi
if t=$(budget 330 120); then
  start=$(date +%s)
  timeout "$t" python3 bench/bench_lora.py build --device cuda --shapes 1.5b:8,8b:4 >"$out/bench_lora.log" 2>&1
  row "LoRA bench vs HF (bench_lora.log)" "$(verdict $?) in $(( $(date +%s) - start )) s"
  grep -E '^\[ *[0-9]+ s\] \[[^]]*\] [^:]*: [0-9]+ tokens/s|^loss check' "$out/bench_lora.log" | sed 's/^/  /' | tee -a "$out/summary.txt"
else
  row "LoRA bench vs HF" "skipped: $(seconds_left) s left"
fi
if t=$(budget 200 90); then
  start=$(date +%s)
  timeout "$t" python3 bench/bench_lora.py build --device cuda --shapes 8b:4 --no_hf --qlora --auto_checkpointing \
    --composite_kernels --offload \
    >"$out/bench_variants.log" 2>&1
  row "our variants, 8B (bench_variants.log)" "$(verdict $?) in $(( $(date +%s) - start )) s"
  grep -E '^\[ *[0-9]+ s\] \[[^]]*\] [^:]*: [0-9]+ tokens/s' "$out/bench_variants.log" | sed 's/^/  /' | tee -a "$out/summary.txt"
else
  row "our variants, 8B" "skipped: $(seconds_left) s left"
fi

# ZeRO-3's overhead on one GPU (issue 5's target: < 5%); the bench makes its model with transformers.
if t=$(budget 90 60); then
  timeout "$t" python3 bench/bench_zero_overhead.py build --device cuda --steps 30 >"$out/zero_overhead.log" 2>&1
  rc=$?
  row "ZeRO-3 1 rank vs no ZeRO (tokens/s)" "$(grep -o 'ZeRO-3 / plain tokens/s: [0-9.]*' "$out/zero_overhead.log" || verdict $rc)"
else
  row "ZeRO-3 1 rank vs no ZeRO" "skipped: $(seconds_left) s left"
fi
finish
