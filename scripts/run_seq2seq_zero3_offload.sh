#!/usr/bin/env bash
# The seed's third command (BART seq2seq LoRA, ZeRO-3 with CPU offload, 1 GPU), with ftlaunch in
# place of `accelerate launch`. Pass --dry_run to see the plan.
set -euo pipefail
cd "$(dirname "$0")/.."
exec build/bin/ftlaunch --config_file configs/ds_zero3_cpu.yaml "$@" examples/peft_lora_seq2seq_accelerate_ds_zero3_offload.py
