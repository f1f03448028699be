#!/usr/bin/env bash
# Set up, build, and run ftlaunch on this machine with an embedded default:
#   1. `ftlaunch test` on 2 CPU ranks (configs/multi_cpu_2.yaml): rendezvous, every collective
#      checked, a bandwidth figure;
#   2. the plan of the seed's LoRA + ZeRO-3 command (configs/deepspeed_config.yaml), as a dry run.
# The SFT trainer itself is not in this build yet (issue 4); this script will run it once it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
echo
echo "== ftlaunch --config_file configs/multi_cpu_2.yaml test"
build/bin/ftlaunch --config_file configs/multi_cpu_2.yaml test
echo
echo "== the seed's LoRA + ZeRO-3 command, planned (--dry_run)"
build/bin/ftlaunch --config_file configs/deepspeed_config.yaml --dry_run train \
  --model_name_or_path "meta-llama/Llama-2-70b-hf" --dataset_name "smangrul/ultrachat-10k-chatml" \
  --chat_template_format chatml --max_seq_len 2048 --bf16 True --packing True \
  --per_device_train_batch_size 8 --gradient_accumulation_steps 4 --use_peft_lora True \
  --lora_r 8 --lora_alpha 16 --lora_dropout 0.1 --lora_target_modules all-linear \
  --output_dir llama-sft-lora-deepspeed |
  python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["launch_plan"]; z=d["deepspeed_config"]
print(f"ranks: {p[\"world_size\"]} on {p[\"num_machines\"]} machine(s), device {p[\"device\"]}, ZeRO stage {z[\"zero_optimization\"][\"stage\"]}, "
      f"mixed precision {d[\"mixed_precision\"]}, global batch {z[\"train_batch_size\"]} sequences")'
