#!/bin/sh
# certbind-init (docker compose): generates the demo PKI (kept when still valid) and renders
# Envoy's config next to a copy of the filter's .wasm, into the volumes Envoy mounts.
# The values are `make up`'s (CONTRACT §2); paths default to the containers' (the CERTBIND_*
# overrides exist so the script can be checked outside Docker).
set -eu
PKI=${CERTBIND_PKI:-/var/lib/certbind/pki}
OUT=${CERTBIND_ENVOY_OUT:-/var/lib/certbind/envoy}
TEMPLATE=${CERTBIND_TEMPLATE:-/etc/certbind/sidecar.yaml.tmpl}
WASM=${CERTBIND_WASM:-/usr/local/share/certbind/certbind_filter.wasm}
# Where the Envoy container mounts the two volumes.
ENVOY_PKI=${CERTBIND_ENVOY_PKI:-/etc/certbind/pki}
ENVOY_DIR=${CERTBIND_ENVOY_DIR:-/etc/certbind/envoy}

certbind-authz pki init --dir "$PKI"
# Envoy runs as the same uid and reads the keys; nothing else shares these volumes.
cp "$WASM" "$OUT/certbind_filter.wasm"

export CB_PKI_DIR="$ENVOY_PKI" CB_WASM="$ENVOY_DIR/certbind_filter.wasm" \
  CB_ADMIN_PORT=9901 CB_ORDERS_PORT=8443 CB_BILLING_PORT=8444 CB_EDGE_PORT=8445 \
  CB_BASELINE_ORDERS_PORT=8080 CB_BASELINE_BILLING_PORT=8081 \
  CB_AUTHZ_PORT=9443 CB_PDP_PORT=9191 CB_ORDERS_UPSTREAM_PORT=7001 CB_BILLING_UPSTREAM_PORT=7002 \
  CB_ISSUER=https://127.0.0.1:9443 CB_MODE="${CB_MODE:-enforce}" \
  CB_JWKS_EXTRA="" CB_PDP_EXTRA="" CB_FILTER_EXTRA="" CB_REVOCATION_EXTRA="" CB_USAGE_EXTRA=""
# Only the CB_ variables are substituted, whatever else the environment holds.
VARS=$(env | sed -n 's/^\(CB_[A-Z_]*\)=.*/${\1}/p' | tr '\n' ' ')
envsubst "$VARS" < "$TEMPLATE" > "$OUT/envoy.yaml.tmp"
mv "$OUT/envoy.yaml.tmp" "$OUT/envoy.yaml"
echo "certbind-init: PKI in $PKI, Envoy config and filter in $OUT"
