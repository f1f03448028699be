#!/usr/bin/env bash
# Two "machines" on loopback: two launchers (machine_rank 0 and 1), two processes each, meet at
# main_process_ip:main_process_port and pass the collective checks as one 4-rank job.
source "$(dirname "$0")/lib.sh"
port="$(free_port)"
common=(--cpu --num_processes 4 --num_machines 2 --main_process_ip 127.0.0.1 --main_process_port "$port")
"$FTLAUNCH" "${common[@]}" --machine_rank 1 test >"$WORK/m1.log" 2>&1 &
m1=$!
"$FTLAUNCH" "${common[@]}" --machine_rank 0 test >"$WORK/m0.log" 2>&1
rc0=$?
wait "$m1"; rc1=$?
if [ "$rc0" = 0 ] && [ "$rc1" = 0 ] && grep -qF "ftlaunch test: 4 rank(s)" "$WORK/m0.log" && grep -qF "All checks passed." "$WORK/m0.log"; then
  pass "machine 0 and machine 1 rendezvous as 4 ranks"
else
  fail "two-machine run: exits $rc0/$rc1"; cat "$WORK/m0.log" "$WORK/m1.log"
fi
expect_no_orphans "$port"
finish
