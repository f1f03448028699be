#!/usr/bin/env bash
# `ftlaunch config` asks accelerate's questions on stdin and writes a YAML that ftlaunch (and the
# dry run) reads back; `--default` writes a single-machine config and never overwrites one.
source "$(dirname "$0")/lib.sh"

# multi-GPU, 1 machine, no debug, DeepSpeed, no JSON, stage 3, offload optimizer cpu, params nvme
# at /scratch/nvme, GA 4, clipping 1.0, save 16-bit, zero.Init, 8 GPUs, bf16.
answers=$'2\n1\nno\nyes\nno\n3\ncpu\nnvme\n/scratch/nvme\n4\nyes\n1.0\nyes\nyes\n8\nbf16\n'
out="$WORK/ds.yaml"
printf '%s' "$answers" | "$FTLAUNCH" config --config_file "$out" >"$WORK/q.log" 2>&1 || { fail "questionnaire exited $?"; cat "$WORK/q.log"; }
grep -qF "ftlaunch configuration saved at $out" "$WORK/q.log" && pass "questionnaire saved" || fail "no saved message"
"${FTL_PYTHON:-python3}" -c "
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
d = c['deepspeed_config']
assert c['distributed_type'] == 'DEEPSPEED' and c['num_processes'] == 8 and c['mixed_precision'] == 'bf16', c
assert d['zero_stage'] == 3 and d['offload_optimizer_device'] == 'cpu' and d['offload_param_device'] == 'nvme', d
assert d['offload_param_nvme_path'] == '/scratch/nvme' and d['gradient_accumulation_steps'] == 4, d
assert d['gradient_clipping'] == 1.0 and d['zero3_save_16bit_model'] is True and d['zero3_init_flag'] is True, d
" "$out" && pass "answers land in the YAML (read by PyYAML)" || { fail "YAML content"; cat "$out"; }
expect_exit 0 '"stage": 3|"/scratch/nvme"' -- "$FTLAUNCH" --config_file "$out" --dry_run train --model_name_or_path m --gradient_accumulation_steps 4

# A wrong answer is asked again; a closed stdin is a clear error, and nothing is written.
printf '7\n0\nyes\nno\nno\n' | "$FTLAUNCH" config --config_file "$WORK/retry.yaml" >"$WORK/retry.log" 2>&1
grep -qF "Please select one of the options above." "$WORK/retry.log" && [ -f "$WORK/retry.yaml" ] \
  && pass "invalid menu answer re-asked" || { fail "retry"; cat "$WORK/retry.log"; }
expect_exit 2 "no answer on standard input" -- "$FTLAUNCH" config --config_file "$WORK/none.yaml" </dev/null
[ ! -e "$WORK/none.yaml" ] && pass "nothing written after an aborted questionnaire" || fail "partial file left"

expect_exit 0 "ftlaunch configuration saved" -- "$FTLAUNCH" config --default --config_file "$WORK/default.yaml"
expect_exit 0 '"world_size": 1' -- "$FTLAUNCH" --config_file "$WORK/default.yaml" --dry_run test
before="$(md5sum <"$WORK/default.yaml")"
expect_exit 2 "Configuration already exists at $WORK/default.yaml" -- "$FTLAUNCH" config --default --config_file "$WORK/default.yaml"
[ "$before" = "$(md5sum <"$WORK/default.yaml")" ] && pass "existing config untouched" || fail "existing config changed"
finish
