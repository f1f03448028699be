#!/usr/bin/env bash
# One call on the GPU machine (the `device` tool): build with the image's torch, run the unit
# tests, then the GPU checks (NCCL communicator on the visible GPUs, the 4-bit, RMSNorm, SwiGLU and RoPE kernels, issue 8's
# LoRA bench against the HF stack, ZeRO-3's overhead), and print a short table last. Logs go to
# $OUT when it is set. Usage: bash scripts/gpu_check.sh [scale]
# `scale` instead builds and runs only issue 8's scale check: ftlaunch's QLoRA on a 70B-shaped NF4
# checkpoint (written with random codes; ~40 GB of disk) on one GPU, tokens/s and peak memory.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/ftl_gpu_check}"
mkdir -p "$out"
summary=()
row() { summary+=("$(printf '%-44s %s' "$1" "$2")"); }

nvidia-smi -L | tee "$out/gpus.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpus.txt"

# What the image may lack (nlohmann-json, PCRE2) comes carried in .gpu_deps/ (scripts/make_gpu_deps.sh);
# CMake prefers the image's own packages and falls back to these.
if [ -d .gpu_deps/usr ]; then
  export CMAKE_PREFIX_PATH="${CMAKE_PREFIX_PATH:+$CMAKE_PREFIX_PATH:}$PWD/.gpu_deps/usr"
  echo "carried build dependencies in .gpu_deps on CMAKE_PREFIX_PATH"
fi

start=$(date +%s)
if FTLAUNCH_BUILD_JOBS=16 bash scripts/build.sh >"$out/build.log" 2>&1; then
  row "build (sm_90, image torch)" "ok in $(( $(date +%s) - start )) s"
else
  row "build" "FAILED (build.log)"; tail -40 "$out/build.log"; cp build-configure.log "$out/" 2>/dev/null
  printf '%s\n' "${summary[@]}"; exit 1
fi

if [ "${1:-}" = scale ]; then
  timeout 540 python3 bench/bench_lora.py build --device cuda --shapes 70b:1 --prequantized --steps 3 --warmup 2 \
    >"$out/bench_scale.log" 2>&1
  row "70B QLoRA on one GPU (bench_scale.log)" "exit $?"
  tail -8 "$out/bench_scale.log"
  printf '%s\n' "${summary[@]}"
  exit 0
fi

# The unit tests (seconds); the parity suite runs on CPU in CI and would not fit the device budget.
start=$(date +%s)
(cd build && timeout 300 ctest -L unit --output-on-failure) >"$out/ctest.log" 2>&1
rc=$?
row "ctest -L unit" "$(grep -E 'tests passed' "$out/ctest.log" | tail -1) in $(( $(date +%s) - start )) s"
[ "$rc" = 0 ] || grep -E "Failed|\*\*\*" "$out/ctest.log" | head -20

gpus=$(nvidia-smi -L | wc -l)
timeout 120 build/bin/ftlaunch --num_processes "$gpus" --main_process_port 0 test --repeat 3 >"$out/nccl_test.log" 2>&1
rc=$?
row "ftlaunch test, $gpus rank(s), NCCL" "$([ $rc = 0 ] && echo ok || echo FAILED) (exit $rc)"
build/bin/ftlaunch env >"$out/env.log" 2>&1

timeout 120 build/bin/ftl_bench_dequant >"$out/dequant.log" 2>&1
rc=$?
row "4-bit dequant kernel vs CPU (bit for bit)" "$([ $rc = 0 ] && echo ok || echo FAILED) (exit $rc)"
row "4-bit dequant bandwidth" "$(grep -o '[0-9]*% of copy' "$out/dequant.log" || echo 'not measured')"
timeout 120 build/bin/ftl_bench_model_kernels >"$out/model_kernels.log" 2>&1
rc=$?
row "RMSNorm/SwiGLU/RoPE kernels, span attention" "$([ $rc = 0 ] && echo ok || echo FAILED) (exit $rc)"
for kernel in rms_norm swiglu rope; do
  row "$kernel fwd+bwd vs composite" "$(grep "^$kernel .*forward+backward" "$out/model_kernels.log" | grep -o 'composite [0-9.]* us ([0-9.]*x)' || echo 'not measured')"
done
row "packed attention over spans vs masked SDPA" "$(grep -o 'masked SDPA [0-9.]* us ([0-9.]*x)' "$out/model_kernels.log" || echo 'not measured')"

# Issue 8's table: ftlaunch against transformers + PEFT on DESIGN.md's shapes (loss check on the
# first), and our QLoRA and ZeRO-3 + cpu offload runs against our LoRA.
if python3 -c 'import transformers, peft' 2>/dev/null; then
  start=$(date +%s)
  timeout 480 python3 bench/bench_lora.py build --device cuda --shapes 1.5b:8,8b:4 --qlora --offload --auto_checkpointing >"$out/bench_lora.log" 2>&1
  rc=$?
  row "LoRA bench vs HF (bench_lora.log)" "$([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") in $(( $(date +%s) - start )) s"
else
  row "LoRA bench vs HF" "not measured (no transformers/peft in the image)"
fi

# ZeRO-3's overhead on one GPU (issue 5's target: < 5%); the bench makes its model with transformers.
if python3 -c 'import transformers' 2>/dev/null; then
  timeout 120 python3 bench/bench_zero_overhead.py build --device cuda --steps 30 >"$out/zero_overhead.log" 2>&1
  row "ZeRO-3 1 rank vs no ZeRO (tokens/s)" "$(grep -o 'ZeRO-3 / plain tokens/s: [0-9.]*' "$out/zero_overhead.log" || echo FAILED)"
else
  row "ZeRO-3 1 rank vs no ZeRO (tokens/s)" "not measured (no transformers in the image to make the model)"
fi

echo
cat "$out/nccl_test.log" "$out/dequant.log" "$out/model_kernels.log"
echo
tail -30 "$out/bench_lora.log" 2>/dev/null
echo
printf '%s\n' "${summary[@]}"
