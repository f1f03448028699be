#!/usr/bin/env bash
# Set up, build, and run ftlaunch on this machine with an embedded default:
#   1. `ftlaunch test` on 2 CPU ranks (configs/multi_cpu_2.yaml): rendezvous, every collective
#      checked, a bandwidth figure;
#   2. the seed's LoRA command (peft's train.py flags) on 2 CPU ranks, on a small model made here
#      (random init, ~4M parameters), a tokenizer trained on this repository's docs and a small
#      ChatML dataset in the shape of smangrul/ultrachat-10k-chatml (scripts/make_tiny_assets.py):
#      60 optimizer steps, evaluation and a checkpoint on the way; the loss falls within a couple
#      of minutes on 2 cores. --bf16 is off: CPUs without bf16 units run bf16 matmuls slowly.
#   3. the plan of the seed's LoRA + ZeRO-3 command (configs/deepspeed_config.yaml), as a dry run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
python="${FTLAUNCH_VENV:-$HOME/.cache/ftlaunch/venv}/bin/python"
[ -x "$python" ] || python=python3
assets="${FTLAUNCH_QUICKSTART_DIR:-build/quickstart}"

echo
echo "== ftlaunch --config_file configs/multi_cpu_2.yaml test"
build/bin/ftlaunch --config_file configs/multi_cpu_2.yaml test

echo
echo "== the seed's LoRA command on a small model, 2 CPU ranks"
[ -f "$assets/model/model.safetensors" ] || "$python" scripts/make_tiny_assets.py "$assets" 2>&1 | grep -v "Writing model shards"
rm -rf "$assets/run"
build/bin/ftlaunch --config_file configs/multi_cpu_2.yaml train \
  --seed 100 --model_name_or_path "$assets/model" --dataset_name "$assets/chat" \
  --chat_template_format chatml --add_special_tokens False --append_concat_token False \
  --splits "train,test" --max_seq_len 256 --max_steps 60 --logging_steps 5 --log_level info \
  --logging_strategy steps --eval_strategy steps --eval_steps 30 --save_strategy steps --save_steps 30 \
  --bf16 False --packing True --learning_rate 5e-3 --lr_scheduler_type cosine --weight_decay 1e-4 \
  --warmup_ratio 0.0 --max_grad_norm 1.0 --output_dir "$assets/run" --per_device_train_batch_size 4 \
  --per_device_eval_batch_size 4 --gradient_accumulation_steps 2 --gradient_checkpointing True \
  --use_reentrant False --dataset_text_field content --use_peft_lora True --lora_r 8 --lora_alpha 16 \
  --lora_dropout 0.1 --lora_target_modules all-linear
"$python" - "$assets/run/trainer_state.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))["log_history"]
train = [e["loss"] for e in h if "loss" in e]
evals = [round(e["eval_loss"], 3) for e in h if "eval_loss" in e]
print(f"loss {train[0]:.3f} -> {train[-1]:.3f} over {len(train)} logged steps; eval loss {evals}")
print(f"adapter: {sys.argv[1].rsplit('/', 1)[0]}/adapter_model.safetensors (loads with peft.PeftModel.from_pretrained)")
PY

echo
echo "== the seed's LoRA + ZeRO-3 command, planned (--dry_run)"
build/bin/ftlaunch --config_file configs/deepspeed_config.yaml --dry_run train \
  --model_name_or_path "meta-llama/Llama-2-70b-hf" --dataset_name "smangrul/ultrachat-10k-chatml" \
  --chat_template_format chatml --max_seq_len 2048 --bf16 True --packing True \
  --per_device_train_batch_size 8 --gradient_accumulation_steps 4 --use_peft_lora True \
  --lora_r 8 --lora_alpha 16 --lora_dropout 0.1 --lora_target_modules all-linear \
  --output_dir llama-sft-lora-deepspeed |
  python3 -c '
import json, sys
d = json.load(sys.stdin)
p, z = d["launch_plan"], d["deepspeed_config"]
print("ranks: %s on %s machine(s), device %s, ZeRO stage %s, mixed precision %s, global batch %s sequences"
      % (p["world_size"], p["num_machines"], p["device"], z["zero_optimization"]["stage"], d["mixed_precision"],
         z["train_batch_size"]))'
