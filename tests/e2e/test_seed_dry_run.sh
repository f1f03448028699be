#!/usr/bin/env bash
# The seed's three commands, with ftlaunch in place of `accelerate launch`, print their plans.
source "$(dirname "$0")/lib.sh"

seed_flags=(--seed 100 --model_name_or_path "meta-llama/Llama-2-70b-hf" --dataset_name "smangrul/ultrachat-10k-chatml"
  --chat_template_format "chatml" --add_special_tokens False --append_concat_token False --splits "train,test"
  --max_seq_len 2048 --num_train_epochs 1 --logging_steps 5 --log_level "info" --logging_strategy "steps"
  --eval_strategy "epoch" --save_strategy "epoch" --push_to_hub --hub_private_repo True --hub_strategy "every_save"
  --bf16 True --packing True --learning_rate 1e-4 --lr_scheduler_type "cosine" --weight_decay 1e-4 --warmup_ratio 0.0
  --max_grad_norm 1.0)
lora=("${seed_flags[@]}" --output_dir "llama-sft-lora-deepspeed" --per_device_train_batch_size 8
  --per_device_eval_batch_size 8 --gradient_accumulation_steps 4 --gradient_checkpointing True --use_reentrant False
  --dataset_text_field "content" --use_flash_attn True --use_peft_lora True --lora_r 8 --lora_alpha 16 --lora_dropout 0.1
  --lora_target_modules "all-linear" --use_4bit_quantization False)
qlora=("${seed_flags[@]}" --output_dir "llama-sft-qlora-dsz3" --per_device_train_batch_size 2
  --per_device_eval_batch_size 2 --gradient_accumulation_steps 2 --gradient_checkpointing True --use_reentrant True
  --dataset_text_field "content" --use_flash_attn True --use_peft_lora True --lora_r 8 --lora_alpha 16 --lora_dropout 0.1
  --lora_target_modules "all-linear" --use_4bit_quantization True --use_nested_quant True
  --bnb_4bit_compute_dtype "bfloat16" --bnb_4bit_quant_storage_dtype "bfloat16")

check_plan() {  # check_plan NAME JSON-FILE python-assertions
  if "${FTL_PYTHON:-python3}" -c "
import json, sys
d = json.load(open(sys.argv[1]))
ds, plan = d['deepspeed_config'], d['launch_plan']
$3" "$2"; then pass "$1"; else fail "$1"; fi
}

"$FTLAUNCH" --config_file "$CONFIGS/deepspeed_config.yaml" --dry_run train "${lora[@]}" >"$WORK/lora.json" 2>"$WORK/lora.err" \
  || { fail "LoRA dry run exited $?"; cat "$WORK/lora.err"; }
check_plan "seed 1: 8 ranks, ZeRO-3, bf16, global batch 256" "$WORK/lora.json" '
assert plan["world_size"] == 8 and len(plan["local_ranks"]) == 8, plan["world_size"]
assert ds["zero_optimization"]["stage"] == 3
assert d["mixed_precision"] == "bf16" and ds["bf16"]["enabled"] is True
assert ds["train_batch_size"] == 256 and ds["gradient_accumulation_steps"] == 4
assert d["train_args"]["max_seq_length"] == 2048 and d["train_args"]["lora_target_modules"] == "all-linear"
assert [r["env"]["RANK"] for r in plan["local_ranks"]] == [str(i) for i in range(8)]'
grep -qF "nothing is uploaded" "$WORK/lora.err" && pass "hub flags get one warning" || fail "no hub warning"

"$FTLAUNCH" --config_file "$CONFIGS/deepspeed_config_z3_qlora.yaml" --dry_run train "${qlora[@]}" >"$WORK/qlora.json" 2>"$WORK/qlora.err" \
  || { fail "QLoRA dry run exited $?"; cat "$WORK/qlora.err"; }
check_plan "seed 2: 2 ranks, ZeRO-3, 4-bit NF4 nested, bf16 storage" "$WORK/qlora.json" '
assert plan["world_size"] == 2
assert ds["zero_optimization"]["stage"] == 3 and ds["zero3_init_flag"] is True
assert ds["gradient_accumulation_steps"] == 2 and ds["train_batch_size"] == 8
t = d["train_args"]
assert t["use_4bit_quantization"] and t["use_nested_quant"] and t["bnb_4bit_quant_storage_dtype"] == "bfloat16"'

"$FTLAUNCH" --config_file "$CONFIGS/ds_zero3_cpu.yaml" --dry_run examples/peft_lora_seq2seq_accelerate_ds_zero3_offload.py \
  >"$WORK/s2s.json" 2>"$WORK/s2s.err" || { fail "seq2seq dry run exited $?"; cat "$WORK/s2s.err"; }
check_plan "seed 3: 1 rank, ZeRO-3, optimizer and parameters offloaded to CPU" "$WORK/s2s.json" '
assert plan["world_size"] == 1
z = ds["zero_optimization"]
assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
assert d["mixed_precision"] == "no" and ds["gradient_clipping"] == 1.0
assert d["train_args"]["model_name_or_path"] == "facebook/bart-large" and d["train_args"]["lora_alpha"] == 32'

# train.py as the job token, the same as `train`
"$FTLAUNCH" --config_file "$CONFIGS/deepspeed_config_z3_qlora.yaml" --dry_run train.py "${qlora[@]}" >"$WORK/py.json" 2>/dev/null
cmp -s <(grep -v '"token"' "$WORK/py.json") <(grep -v '"token"' "$WORK/qlora.json") && pass "train.py == train" || fail "train.py plan differs from train"
finish
