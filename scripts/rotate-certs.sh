#!/usr/bin/env bash
# Rotates the consumer's and the sidecar's certificates on the running system (`make up`)
# without restarting Envoy: `certbind-authz pki rotate` writes new pairs from the same CA into
# .run/pki (key, then certificate, each by an atomic rename); Envoy's file-based SDS secrets
# watch that directory and reread them. Shows the served serial change under the same pid,
# a consumer running across the rotation with no failed call, and the old-certificate token
# refused with 401 binding_mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

PKI=.run/pki
BIN=target/release
PIDS=.run/pids
ADMIN=127.0.0.1:9901
ORDERS=spiffe://certbind.test/ns/demo/sa/orders

[[ -f $PIDS/envoy.pid ]] && kill -0 "$(cat $PIDS/envoy.pid)" 2>/dev/null \
  || { echo "the system is not running: run 'make up' first" >&2; exit 1; }
[[ -f $PKI/sds/ca.yaml ]] || { echo "no SDS secrets in $PKI/sds: run 'make pki' and restart ('make down up')" >&2; exit 1; }

# The serial of the certificate a listener serves now (TLS with the consumer's certificate).
served_serial() {
  python3 - "$1" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=".run/pki/ca.crt")
ctx.load_cert_chain(".run/pki/consumer.crt", ".run/pki/consumer.key")
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        # Without leading zeros, so it compares with what `pki rotate` prints.
        print(tls.getpeercert()["serialNumber"].lower().lstrip("0"))
PY
}
# Every serial in Envoy's admin /certs.
admin_serials() {
  curl -sf "http://$ADMIN/certs" | python3 -c '
import json, sys
for c in json.load(sys.stdin)["certificates"]:
    for leaf in c.get("cert_chain", []):
        uris = [san["uri"] for san in leaf.get("subject_alt_names", []) if "uri" in san]
        print(leaf["serial_number"], *uris)' | sort -u
}
token_for_consumer() {
  curl -s --cacert $PKI/ca.crt --cert $PKI/consumer.crt --key $PKI/consumer.key \
    -d grant_type=client_credentials -d audience=$ORDERS -d scope=orders:read \
    https://127.0.0.1:9443/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

pid=$(cat $PIDS/envoy.pid)
before=$(served_serial 8443)
echo "== before: Envoy pid $pid, orders listener serves serial $before"
old_token=$(token_for_consumer)

# The consumer runs across the rotation: 6 rounds a second apart, rotation after the first.
$BIN/certbind-consumer --pki-dir $PKI --rounds 6 --interval-s 1 --no-least-privilege \
  > .run/logs/rotate-consumer.log 2>&1 &
consumer=$!
sleep 1.5
echo "== certbind-authz pki rotate --dir $PKI"
rotated=$($BIN/certbind-authz pki rotate --dir $PKI)
echo "$rotated" | sed 's/^/  /'
want=$(echo "$rotated" | sed -n 's|.*/orders\.crt: rotated (serial 0*\([0-9a-f]*\))|\1|p')
for _ in $(seq 1 100); do
  [[ $(served_serial 8443) == "$want" ]] && break
  sleep 0.05
done
after=$(served_serial 8443)
echo "== after: Envoy pid $(cat $PIDS/envoy.pid), orders listener serves serial $after"
[[ $after == "$want" && $after != "$before" ]] || { echo "Envoy did not pick up the new certificate" >&2; exit 1; }
[[ $(cat $PIDS/envoy.pid) == "$pid" ]] && kill -0 "$pid" || { echo "Envoy was restarted" >&2; exit 1; }
echo "== Envoy's /certs (serial, SPIFFE ID):"
admin_serials | sed 's/^/  /'

if wait $consumer; then consumer_ok=1; else consumer_ok=0; fi
calls=$(grep -c '^round' .run/logs/rotate-consumer.log || true)
failed=$(grep '^round' .run/logs/rotate-consumer.log | grep -c FAIL || true)
echo "== the consumer across the rotation: $calls calls, $failed failed (.run/logs/rotate-consumer.log)"
grep '^round' .run/logs/rotate-consumer.log | sed 's/^/  /'
[[ $consumer_ok == 1 && $failed == 0 ]] || { echo "the consumer failed across the rotation" >&2; exit 1; }

echo "== the token bound to the consumer's old certificate, sent with its new one:"
answer=$(curl -s --cacert $PKI/ca.crt --cert $PKI/consumer.crt --key $PKI/consumer.key \
  -H "authorization: Bearer $old_token" https://127.0.0.1:8443/orders/1)
echo "  $answer"
[[ $answer == *binding_mismatch* ]] || { echo "the old-certificate token was not refused" >&2; exit 1; }
echo "  a fresh token: $(curl -s -o /dev/null -w '%{http_code}' --cacert $PKI/ca.crt --cert $PKI/consumer.crt \
  --key $PKI/consumer.key -H "authorization: Bearer $(token_for_consumer)" https://127.0.0.1:8443/orders/1)"
