#!/usr/bin/env bash
# The demo after `make up`: the legitimate consumer, then the attack table; the system stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release

echo
echo "== 1. the legitimate consumer (mTLS + bound token + policy) =="
$BIN/certbind-consumer --pki-dir .run/pki

echo
echo "== 2. the attack table: bearer-token baseline vs certbind =="
scripts/attacks.sh

cat <<'TXT'

The system is still running (make down stops it). Try it yourself:
  curl --cacert .run/pki/ca.crt --cert .run/pki/consumer.crt --key .run/pki/consumer.key \
       -d grant_type=client_credentials -d audience=spiffe://certbind.test/ns/demo/sa/orders \
       -d scope=orders:read https://127.0.0.1:9443/token
  curl -s http://127.0.0.1:9901/stats | grep certbind
More in README.md ("Try it yourself").
TXT
