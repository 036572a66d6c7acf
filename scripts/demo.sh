#!/usr/bin/env bash
# The demo after `make up`: the legitimate consumer, then the attack table; the system stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release

P=.run/pki
echo
echo "== 0. a certificate-bound token (RFC 8705), fetched with curl and the consumer's certificate =="
token=$(curl -sS --fail-with-body --cacert $P/ca.crt --cert $P/consumer.crt --key $P/consumer.key \
  -d grant_type=client_credentials -d audience=spiffe://certbind.test/ns/demo/sa/orders \
  -d scope=orders:read https://127.0.0.1:9443/token \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
claims=$(python3 - "$token" <<'PY'
import base64, json, sys
part = sys.argv[1].split(".")[1]
print(json.dumps(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))), indent=2))
PY
)
echo "$claims"
bound=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cnf"]["x5t#S256"])' "$claims")
# The same thumbprint computed independently: SHA-256 over the certificate's DER, base64url.
openssl_x5t=$(openssl x509 -in $P/consumer.crt -outform DER | openssl dgst -sha256 -binary \
  | base64 | tr '+/' '-_' | tr -d '=\n')
echo "cnf.x5t#S256 in the token:          $bound"
echo "openssl thumbprint of consumer.crt: $openssl_x5t"
if [[ $bound == "$openssl_x5t" ]]; then echo "-> the token is bound to the consumer's certificate"; else
  echo "-> MISMATCH: the token is not bound to consumer.crt" >&2; exit 1; fi

echo
echo "== 1. the legitimate consumer (mTLS + bound token + policy) =="
$BIN/certbind-consumer --pki-dir .run/pki

echo
echo "== 1b. the same consumer behind a TLS-terminating hop: DPoP-bound tokens (RFC 9449) at the edge listener 8445 =="
$BIN/certbind-consumer --pki-dir .run/pki --dpop

echo
echo "== 1c. a usage-bound token (max_uses=3): every sidecar shares one count at the authz-server =="
usage=$(curl -sS --fail-with-body --cacert $P/ca.crt --cert $P/consumer.crt --key $P/consumer.key \
  -d grant_type=client_credentials -d audience=spiffe://certbind.test/ns/demo/sa/orders \
  -d scope=orders:read -d max_uses=3 https://127.0.0.1:9443/token \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
for i in 1 2 3 4; do
  answer=$(curl -sS -o /tmp/certbind-usage.$$ -w '%{http_code}' --cacert $P/ca.crt --cert $P/consumer.crt \
    --key $P/consumer.key -H "authorization: Bearer $usage" https://127.0.0.1:8443/orders/$i)
  reason=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("reason","admitted"))' \
    /tmp/certbind-usage.$$ 2>/dev/null || echo admitted)
  echo "use $i: $answer $reason"
  expected=200; [[ $i == 4 ]] && expected=401
  if [[ $answer != "$expected" ]]; then rm -f /tmp/certbind-usage.$$; echo "-> use $i: expected $expected" >&2; exit 1; fi
done
rm -f /tmp/certbind-usage.$$
echo "-> three uses admitted, the fourth refused (401 usage_exhausted)"

echo
echo "== 2. the attack table: bearer-token baseline vs certbind =="
scripts/attacks.sh

echo
echo "== 3. the inventory host is compromised: revoke its subject; every sidecar refuses within a second =="
$BIN/certbind-revoke-demo --pki-dir .run/pki

cat <<'TXT'

The system is still running (make down stops it). Try it yourself:
  curl --cacert .run/pki/ca.crt --cert .run/pki/consumer.crt --key .run/pki/consumer.key \
       -d grant_type=client_credentials -d audience=spiffe://certbind.test/ns/demo/sa/orders \
       -d scope=orders:read https://127.0.0.1:9443/token
  curl -s http://127.0.0.1:9901/stats | grep wasmcustom.certbind
More in README.md ("Try it yourself").
TXT
