#!/bin/sh
# certbind-init (docker compose): generates the demo PKI (kept when still valid) and renders
# Envoy's config next to a copy of the filter's .wasm, into the volumes Envoy mounts.
# Every container mounts the two volumes at the same paths as this one, so the absolute paths
# `pki init` writes into the SDS secrets are Envoy's paths too. Each service is its own host on
# the compose network: the listeners bind every address, the clusters resolve the services'
# names. The CERTBIND_* overrides exist so the script can be checked outside Docker.
set -eu
PKI=${CERTBIND_PKI:-/var/lib/certbind/pki}
OUT=${CERTBIND_ENVOY_OUT:-/var/lib/certbind/envoy}
TEMPLATE=${CERTBIND_TEMPLATE:-/etc/certbind/sidecar.yaml.tmpl}
WASM=${CERTBIND_WASM:-/usr/local/share/certbind/certbind_filter.wasm}

# The servers' certificates also carry their compose host names (Envoy's listeners present the
# orders and billing certificates), so curl and the services' health checks verify them.
certbind-authz pki init --dir "$PKI" \
  --dns authz=authz --dns pdp=pdp \
  --dns orders=envoy --dns billing=envoy
# Envoy runs as the same uid and reads the keys; nothing else shares these volumes.
cp "$WASM" "$OUT/certbind_filter.wasm"

export CB_PKI_DIR="$PKI" CB_WASM="$OUT/certbind_filter.wasm" \
  CB_ADMIN_PORT=9901 CB_ORDERS_PORT=8443 CB_BILLING_PORT=8444 CB_EDGE_PORT=8445 \
  CB_BASELINE_ORDERS_PORT=8080 CB_BASELINE_BILLING_PORT=8081 \
  CB_AUTHZ_PORT=9443 CB_PDP_PORT=9191 CB_ORDERS_UPSTREAM_PORT=7001 CB_BILLING_UPSTREAM_PORT=7002 \
  CB_LISTEN_ADDRESS=0.0.0.0 CB_CLUSTER_TYPE=STRICT_DNS \
  CB_AUTHZ_HOST=authz CB_PDP_HOST=pdp CB_ORDERS_UPSTREAM_HOST=orders CB_BILLING_UPSTREAM_HOST=billing \
  CB_ISSUER=https://authz:9443 CB_MODE="${CB_MODE:-enforce}" \
  CB_JWKS_EXTRA="${CB_JWKS_EXTRA:-}" CB_PDP_EXTRA="${CB_PDP_EXTRA:-}" \
  CB_FILTER_EXTRA="${CB_FILTER_EXTRA:-}" CB_REVOCATION_EXTRA="${CB_REVOCATION_EXTRA:-}" \
  CB_USAGE_EXTRA="${CB_USAGE_EXTRA:-}"
# Only the CB_ variables are substituted, whatever else the environment holds.
VARS=$(env | sed -n 's/^\(CB_[A-Z_]*\)=.*/${\1}/p' | tr '\n' ' ')
envsubst "$VARS" < "$TEMPLATE" > "$OUT/envoy.yaml.tmp"
mv "$OUT/envoy.yaml.tmp" "$OUT/envoy.yaml"
echo "certbind-init: PKI in $PKI, Envoy config and filter in $OUT"
