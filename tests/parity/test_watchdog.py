"""The launcher's watchdog: a rank that stops making progress stops the job, named with its phase.

Case 1: a 2-rank CPU run of test_sft_parity's case (a long --max_steps, --ddp_timeout 6) trains;
once rank 0 has logged a loss, rank 1 is frozen with SIGSTOP (a hung rank: it answers no signal
but SIGKILL). Case 2: the same under ZeRO-3 (every tensor partitioned, prefetch off), rank 1 freezing itself
(FTLAUNCH_TEST_STOP_IN_PHASE) as it is about to gather decoder layer 0's weights in step 2's
backward; case 3: the same with prefetch on. Checks, each case:
  the launcher exits non-zero within --ddp_timeout + 15 s of the freeze
  its message names rank 1, "made no progress", and the phase rank 1 was in (a "step N: ..."
  phase; case 2: exactly the gather it froze in, layer and pass named)
  it lists where each rank was (case 2: rank 0 waiting in that same gather; case 3: rank 1 started
  that gather and its gradient buckets' reductions ahead, so rank 0 waits in one of them, in step 2)
  no worker process is left
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
import test_zero  # noqa: E402

TIMEOUT = 6


def workers_of(launcher_pid):
    """{rank: pid} of the launcher's children, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            out[int(env[b"RANK"])] = int(entry)
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return out


GATHER = "step 2: micro-batch 1/1: backward of decoder layer 0: gathering its weights (ZeRO-3)"


def run_frozen(cmd, env, freeze_from_outside):
    """Runs `cmd`, freezes rank 1 (from outside once training logs a loss, or by itself through
    env), and returns (exit code, seconds from the freeze to the end, output, worker pids)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines, errors = [], []
    training = threading.Event()

    def read(stream, into):
        for line in stream:
            into.append(line)
            if "'loss'" in line or '"loss"' in line or "loss" in line and "step" in line:
                training.set()
    threads = [threading.Thread(target=read, args=(proc.stdout, lines)),
               threading.Thread(target=read, args=(proc.stderr, errors))]
    for t in threads:
        t.start()
    started = training.wait(120)
    check(started, "the 2-rank run is training (a loss was logged)")
    pids = workers_of(proc.pid)
    check(sorted(pids) == [0, 1], f"found both workers: {pids}")
    if freeze_from_outside:
        time.sleep(1.0)
        os.kill(pids[1], signal.SIGSTOP)
    frozen_at = time.monotonic()  # case 2: rank 1 froze itself in step 2, before this loss line
    try:
        proc.wait(timeout=TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    elapsed = time.monotonic() - frozen_at
    for t in threads:
        t.join()
    return proc.returncode, elapsed, "".join(errors) + "".join(lines), pids


def check_stopped(code, elapsed, text, pids, case):
    check(code != 0 and elapsed <= TIMEOUT + 15,
          f"{case}: the job stops {elapsed:.1f} s after rank 1 froze (exit {code}, bound {TIMEOUT + 15} s)")
    check("where each rank was" in text and "rank 0:" in text, f"{case}: the message lists where each rank was")
    left = [pid for pid in pids.values() if os.path.exists(f"/proc/{pid}")]
    check(not left, f"{case}: no worker process is left ({left})")
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return [l.strip() for l in text.splitlines() if "made no progress" in l]


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = sft.make_inputs(work)
        long_run = ("--max_steps", "100000", "--ddp_timeout", str(TIMEOUT), "--save_strategy", "no")
        cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "out"), 2, 1, extra=long_run,
                                   launcher=("--cpu", "--num_processes", "2", "--main_process_port", "0"))
        code, elapsed, text, pids = run_frozen(cmd, os.environ.copy(), freeze_from_outside=True)
        named = check_stopped(code, elapsed, text, pids, "stage 0")
        check(any(l.startswith("[ftlaunch] error: rank 1 made no progress") and "rank 1: step " in l for l in named),
              f"stage 0: the message names rank 1 and its phase: {named[:1]}")

        # Without prefetch rank 0 waits in the very gather rank 1 froze before. With it (the
        # default) rank 1 started that gather, and the reduction of its gradient buckets
        # (overlap_comm), ahead on its communication thread, which the freeze stops too: rank 0
        # waits in the first of those rank 1 had not finished its share of, somewhere in step 2.
        for case, zero, rank0_phases in (("ZeRO-3", {"stage3_prefetch_bucket_size": 0}, (GATHER,)),
                                         ("ZeRO-3 with prefetch", {}, ("step 2: ",))):
            yaml = test_zero.zero3_everything_partitioned(work, 2, case.replace(" ", "_"), zero=zero)
            cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, case.replace(" ", "_")), 2, 1,
                                       extra=long_run, launcher=("--config_file", yaml))
            env = dict(os.environ, FTLAUNCH_TEST_STOP_IN_PHASE="1:" + GATHER)
            code, elapsed, text, pids = run_frozen(cmd, env, freeze_from_outside=False)
            named = check_stopped(code, elapsed, text, pids, case)
            check(any(l.startswith("[ftlaunch] error: rank 1 made no progress") and "rank 1: " + GATHER in l for l in named),
                  f"{case}: the message names rank 1 and the gather it froze in: {named[:1]}")
            waiting = [l.strip() for l in text.splitlines() if l.strip().startswith("rank 0: ")]
            check(any(p in l for l in waiting for p in rank0_phases),
                  f"{case}: rank 0 is shown waiting in '{rank0_phases[0]}': {waiting[:1]}")
    finish("a frozen rank stops the job, named with its phase down to the layer and the gather")


if __name__ == "__main__":
    main()
