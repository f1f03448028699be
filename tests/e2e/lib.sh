# Helpers for the end-to-end tests. ctest sets FTLAUNCH (the binary) and FTL_SOURCE_DIR.
set -u
: "${FTLAUNCH:?ctest sets FTLAUNCH to the ftlaunch binary}"
: "${FTL_SOURCE_DIR:?ctest sets FTL_SOURCE_DIR}"
CONFIGS="$FTL_SOURCE_DIR/configs"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect_exit CODE "PATTERN1|PATTERN2..." -- command...: runs it, checks the exit code and that
# every |-separated fixed string appears in its combined output.
expect_exit() {
  local code="$1" patterns="$2"; shift 3
  local out rc what="${*//"$FTLAUNCH"/ftlaunch}"
  out="$("$@" 2>&1)"; rc=$?
  if [ "$rc" != "$code" ]; then fail "$what -> exit $rc, expected $code; output:"; echo "$out" | tail -20; return; fi
  local IFS='|'
  for p in $patterns; do
    if ! grep -qF -- "$p" <<<"$out"; then fail "$what -> output lacks '$p'; output:"; echo "$out" | tail -20; return; fi
  done
  pass "$what -> exit $code"
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])'; }

# Fails if any process from this test's binary is still alive (orphans).
expect_no_orphans() {
  sleep 0.5
  local left
  left="$(pgrep -f -- "$FTLAUNCH.*$1" || true)"
  if [ -n "$left" ]; then fail "orphan processes remain: $(ps -o pid,cmd -p $left | tail -n +2)"; pkill -9 -f -- "$FTLAUNCH.*$1"; else pass "no orphan processes"; fi
}

finish() { if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi; echo "all checks passed"; }
