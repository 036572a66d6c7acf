#!/usr/bin/env bash
# The attack table against the running system (`make up`): baseline vs certbind, one row each.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f .run/pids/envoy.pid ]] || { echo "the system is not running: run 'make up' first" >&2; exit 1; }
exec target/release/certbind-attacker --pki-dir .run/pki --state-dir .run/authz \
  --json .run/attacks.json --markdown docs/attacks.md "$@"
