#!/usr/bin/env bash
# Runs the 10-minute PKI lifecycle test (tests/tests/lifecycle_e2e.rs) beside the rest of
# `make test` instead of after it: `start` builds it and runs its binary in the background
# (output in target/lifecycle_e2e.log), `wait` waits for it, prints its output and fails as it did.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=target/lifecycle_e2e.log
PIDFILE=target/lifecycle_e2e.pid
RC=target/lifecycle_e2e.rc

case "${1:-}" in
  start)
    bin=$(cargo test --locked -p certbind-tests --test lifecycle_e2e --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "lifecycle_e2e":
        print(m["executable"])')
    [[ -x $bin ]] || { echo "lifecycle_e2e did not build" >&2; exit 1; }
    rm -f "$RC"
    ( set +e; "$bin" --nocapture >"$LOG" 2>&1; echo $? >"$RC" ) &
    echo $! >"$PIDFILE"
    echo "lifecycle_e2e running in the background (log $LOG)"
    ;;
  wait)
    [[ -f $PIDFILE ]] || { echo "lifecycle_e2e was not started" >&2; exit 1; }
    while [[ ! -f $RC ]]; do sleep 2; done
    cat "$LOG"
    rm -f "$PIDFILE"
    exit "$(cat "$RC")"
    ;;
  *) echo "usage: $0 start|wait" >&2; exit 2 ;;
esac
