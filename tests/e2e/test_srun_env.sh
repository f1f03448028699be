#!/usr/bin/env bash
# Inside an `srun` step every task is a worker: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID give the
# ranks and the first host of SLURM_STEP_NODELIST hosts the store. Two tasks, as srun would start them.
source "$(dirname "$0")/lib.sh"
port="$(free_port)"
for task in 0 1; do
  SLURM_JOB_ID=42 SLURM_STEP_ID=0 SLURM_PROCID=$task SLURM_LOCALID=$task SLURM_NTASKS=2 SLURM_STEP_NUM_NODES=1 \
  SLURM_STEP_NODELIST=localhost MASTER_PORT="$port" "$FTLAUNCH" --cpu test >"$WORK/task$task.log" 2>&1 &
done
wait %1; rc0=$?
wait %2; rc1=$?
if [ "$rc0" = 0 ] && [ "$rc1" = 0 ] && grep -qF "backend cpu (srun)" "$WORK/task0.log" && grep -qF "All checks passed." "$WORK/task0.log"; then
  pass "two srun tasks form a 2-rank job"
else
  fail "srun tasks exited $rc0/$rc1"; cat "$WORK"/task*.log
fi
finish
