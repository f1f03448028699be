"""What every parity script reports through: check() prints ok/FAIL per claim and remembers the
failures; finish() exits non-zero when there were any."""
import sys

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


def finish(passed_message):
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print(passed_message)
