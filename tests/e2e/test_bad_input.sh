#!/usr/bin/env bash
# Bad input gets exit code 2 and a message naming the file, key or value and the rule.
source "$(dirname "$0")/lib.sh"
job=(train --model_name_or_path m)

expect_exit 2 "/nonexistent/cfg.yaml|does not exist" -- "$FTLAUNCH" --config_file /nonexistent/cfg.yaml --dry_run "${job[@]}"

printf 'distributed_type: DEEPSPEED\nnum_processes: [2\n' >"$WORK/syntax.yaml"
expect_exit 2 "syntax.yaml:|YAML syntax error" -- "$FTLAUNCH" --config_file "$WORK/syntax.yaml" --dry_run "${job[@]}"

printf 'distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config:\n  zero_stage: four\n' >"$WORK/type.yaml"
expect_exit 2 "type.yaml:4|deepspeed_config.zero_stage|integer|four" -- "$FTLAUNCH" --config_file "$WORK/type.yaml" --dry_run "${job[@]}"

printf 'distributed_type: DEEPSPEED\nnum_processes: 2\nmixed_precision: bf15\n' >"$WORK/value.yaml"
expect_exit 2 "value.yaml:3|mixed_precision|no, fp16, bf16, fp8|bf15" -- "$FTLAUNCH" --config_file "$WORK/value.yaml" --dry_run "${job[@]}"

expect_exit 2 "- ds gradient_accumulation_steps=4 vs hf gradient_accumulation_steps=2" -- \
  "$FTLAUNCH" --config_file "$CONFIGS/deepspeed_config.yaml" --dry_run "${job[@]}" --gradient_accumulation_steps 2

printf 'distributed_type: DEEPSPEED\nnum_processes: 1\ndeepspeed_config:\n  zero_stage: 2\n  offload_param_device: cpu\n' >"$WORK/stage.yaml"
expect_exit 2 "stage.yaml|offload_param_device|zero_stage 3|got 2" -- "$FTLAUNCH" --config_file "$WORK/stage.yaml" --dry_run "${job[@]}"

printf 'distributed_type: DEEPSPEED\nnum_processes: 1\ndeepspeed_config:\n  zero_stage: 3\n  offload_optimizer_device: nvme\n' >"$WORK/nvme.yaml"
expect_exit 2 "nvme.yaml|offload_optimizer_nvme_path|required" -- "$FTLAUNCH" --config_file "$WORK/nvme.yaml" --dry_run "${job[@]}"

printf 'distributed_type: MULTI_GPU\nnum_processes: 5\nnum_machines: 2\nmain_process_ip: 10.0.0.1\n' >"$WORK/uneven.yaml"
expect_exit 2 "uneven.yaml|num_processes|5 processes|num_machines 2" -- "$FTLAUNCH" --config_file "$WORK/uneven.yaml" --dry_run "${job[@]}"

expect_exit 2 "unknown argument --learning-rat|did you mean '--learning_rate'" -- \
  "$FTLAUNCH" --config_file "$CONFIGS/deepspeed_config_z3_qlora.yaml" --dry_run "${job[@]}" --learning-rat 1e-4
expect_exit 2 "--per_device_train_batch_size|at least 1|0" -- \
  "$FTLAUNCH" --config_file "$CONFIGS/deepspeed_config_z3_qlora.yaml" --dry_run "${job[@]}" --per_device_train_batch_size 0
expect_exit 2 "--zero_stagee" -- "$FTLAUNCH" --zero_stagee 3 --dry_run "${job[@]}"
expect_exit 2 "--zero_stage|0, 1, 2, 3|7" -- "$FTLAUNCH" --use_deepspeed --zero_stage 7 --dry_run "${job[@]}"
expect_exit 2 "'finetune.py' is not a job" -- "$FTLAUNCH" --dry_run finetune.py --lr 1

printf 'distributed_type: DEEPSPEED\nnum_processes: 1\nnum_proceses: 2\n' >"$WORK/unknown.yaml"
expect_exit 0 "unknown.yaml:3|unknown key num_proceses|did you mean 'num_processes'" -- \
  "$FTLAUNCH" --config_file "$WORK/unknown.yaml" --dry_run "${job[@]}"

# A real launch on a model that is neither a folder nor in the hub cache: every rank says what to
# download, and the launcher reports the failed rank.
mkdir -p "$WORK/empty_hub"
HF_HUB_CACHE="$WORK/empty_hub" expect_exit 2 "not in the hub cache|huggingface-cli download m|exited with status 2" -- \
  "$FTLAUNCH" --config_file "$CONFIGS/multi_cpu_2.yaml" "${job[@]}" --output_dir "$WORK/out"
# The seq2seq example without facebook/bart-large in the hub cache: says what to download.
HF_HUB_CACHE="$WORK/empty_hub" expect_exit 2 "facebook/bart-large|not in the hub cache" -- \
  "$FTLAUNCH" --cpu peft_lora_seq2seq_accelerate_ds_zero3_offload.py --output_dir "$WORK/seq2seq_out"
finish
