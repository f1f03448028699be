"""The launcher's watchdog: a rank that stops making progress stops the job, named with its phase.

A 2-rank CPU run of test_sft_parity's case (a long --max_steps, --ddp_timeout 6) trains; once
rank 0 has logged a loss, rank 1 is frozen with SIGSTOP (a hung rank: it answers no signal but
SIGKILL). Checks:
  the launcher exits non-zero within --ddp_timeout + 15 s of the freeze
  its message names rank 1, "made no progress", and the phase rank 1 was in (a "step N: ..." phase)
  it lists where each rank was
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


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = sft.make_inputs(work)
        cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "out"), 2, 1,
                                   extra=("--max_steps", "100000", "--ddp_timeout", str(TIMEOUT), "--save_strategy", "no"),
                                   launcher=("--cpu", "--num_processes", "2", "--main_process_port", "0"))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        time.sleep(1.0)
        os.kill(pids[1], signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            proc.wait(timeout=TIMEOUT + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        elapsed = time.monotonic() - frozen_at
        for t in threads:
            t.join()
        text = "".join(errors) + "".join(lines)
        check(proc.returncode != 0 and elapsed <= TIMEOUT + 15,
              f"the job stops {elapsed:.1f} s after rank 1 froze (exit {proc.returncode}, bound {TIMEOUT + 15} s)")
        named = [l.strip() for l in text.splitlines() if "made no progress" in l]
        check(any(l.startswith("[ftlaunch] error: rank 1 made no progress") and "rank 1: step " in l for l in named),
              f"the message names rank 1 and its phase: {named[:1]}")
        check("where each rank was" in text and "rank 0:" in text, "the message lists where each rank was")
        left = [pid for pid in pids.values() if os.path.exists(f"/proc/{pid}")]
        check(not left, f"no worker process is left ({left})")
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    finish("a frozen rank stops the job, named with its phase")


if __name__ == "__main__":
    main()
