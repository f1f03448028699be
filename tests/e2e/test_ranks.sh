#!/usr/bin/env bash
# `ftlaunch test` starts 1, 2 and 4 CPU ranks on this machine; every collective check holds.
source "$(dirname "$0")/lib.sh"
for n in 1 2 4; do
  expect_exit 0 "ftlaunch test: $n rank(s), backend cpu (ftlaunch)|All checks passed." -- \
    "$FTLAUNCH" --cpu --num_processes "$n" --main_process_port 0 test
done
# The same from a config file, and its plan as a dry run.
expect_exit 0 "All checks passed." -- "$FTLAUNCH" --config_file "$CONFIGS/multi_cpu_2.yaml" test
expect_exit 0 '"world_size": 2|"backend": "cpu"' -- "$FTLAUNCH" --config_file "$CONFIGS/multi_cpu_2.yaml" --dry_run test
finish
