#!/usr/bin/env bash
# A worker killed mid-run brings the whole job down within seconds, with a message naming the
# rank and its fate; SIGTERM to the launcher reaches every worker; no process outlives the job.
source "$(dirname "$0")/lib.sh"

# The pid of the launcher's worker with RANK=$2 (launcher pid $1), once it is running.
worker_pid() {
  for _ in $(seq 100); do
    for child in $(pgrep -P "$1"); do
      if tr '\0' '\n' </proc/"$child"/environ 2>/dev/null | grep -qx "RANK=$2"; then echo "$child"; return; fi
    done
    sleep 0.1
  done
}

port="$(free_port)"
"$FTLAUNCH" --cpu --num_processes 3 --main_process_port "$port" test --repeat 1000000 >"$WORK/kill.log" 2>&1 &
launcher=$!
victim="$(worker_pid "$launcher" 1)"
[ -n "$victim" ] || fail "rank 1 never started"
sleep 1
kill -9 "$victim"
start=$(date +%s)
wait "$launcher"; rc=$?
took=$(( $(date +%s) - start ))
if [ "$rc" != 0 ] && grep -qF "rank 1 (pid $victim) was killed by signal 9" "$WORK/kill.log"; then
  pass "killed worker: launcher exit $rc naming rank 1"
else
  fail "killed worker: exit $rc"; cat "$WORK/kill.log"
fi
[ "$took" -le 10 ] && pass "job stopped ${took}s after the kill" || fail "job took ${took}s to stop"
expect_no_orphans "$port"

port="$(free_port)"
"$FTLAUNCH" --cpu --num_processes 2 --main_process_port "$port" test --repeat 1000000 >"$WORK/term.log" 2>&1 &
launcher=$!
[ -n "$(worker_pid "$launcher" 1)" ] || fail "workers never started"
sleep 1
kill -TERM "$launcher"
wait "$launcher"; rc=$?
if [ "$rc" = 143 ] && grep -qF "passing it to the workers" "$WORK/term.log"; then
  pass "SIGTERM forwarded, launcher exit 143"
else
  fail "SIGTERM: exit $rc"; cat "$WORK/term.log"
fi
expect_no_orphans "$port"

# A launcher killed outright (SIGKILL, no chance to clean up) still leaves no workers behind.
port="$(free_port)"
"$FTLAUNCH" --cpu --num_processes 2 --main_process_port "$port" test --repeat 1000000 >/dev/null 2>&1 &
launcher=$!
[ -n "$(worker_pid "$launcher" 0)" ] || fail "workers never started"
kill -9 "$launcher"
wait "$launcher" 2>/dev/null
expect_no_orphans "$port"
finish
