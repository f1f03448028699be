#!/usr/bin/env bash
# The seed's third command (BART seq2seq LoRA, ZeRO-3 with CPU offload, 1 GPU), with ftlaunch in
# place of `accelerate launch`:
#   scripts/run_seq2seq_zero3_offload.sh [launcher flags] [-- job flags]
# e.g. --dry_run to see the plan, or, on a machine without a GPU and without bart-large in the hub
# cache: --cpu -- --model_name_or_path DIR --dataset_name examples/data/twitter_complaints_tiny
set -euo pipefail
cd "$(dirname "$0")/.."
launcher=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  launcher+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift
exec build/bin/ftlaunch --config_file configs/ds_zero3_cpu.yaml "${launcher[@]}" \
  examples/peft_lora_seq2seq_accelerate_ds_zero3_offload.py "$@"
