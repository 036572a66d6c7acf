#!/usr/bin/env bash
# Starts / stops the whole certbind system in the background on the fixed ports of CONTRACT §2.
# Pids go to .run/pids/<name>.pid and logs to .run/logs/<name>.log; `up` is idempotent and
# `down` stops exactly what `up` started.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=.run
PKI=$RUN/pki
BIN=target/release
PIDS=$RUN/pids
LOGS=$RUN/logs
ENVOY=.venv/bin/envoy
WASM=target/wasm32-wasip1/release/certbind_filter.wasm
mkdir -p "$PIDS" "$LOGS"

# name | port | command (ports are CONTRACT §2's)
services() {
  cat <<SERVICES
authz|9443|$BIN/certbind-authz serve --listen 127.0.0.1:9443 --pki-dir $PKI --state-dir $RUN/authz --clients authz-server/clients.yaml --issuer https://127.0.0.1:9443
pdp|9191|$BIN/certbind-pdp serve --listen 127.0.0.1:9191 --policies pdp/policies/demo.yaml --cert $PKI/pdp.crt --key $PKI/pdp.key --ca $PKI/ca.crt --callers spiffe://certbind.test/ns/demo/sa/envoy
orders|7001|$BIN/certbind-echo orders 127.0.0.1:7001
billing|7002|$BIN/certbind-echo billing 127.0.0.1:7002
envoy|8443|$ENVOY -c $RUN/envoy.yaml --disable-hot-restart --concurrency 2 --log-level warn
SERVICES
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() {
  local pidfile=$PIDS/$1.pid
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

render_envoy() {
  export CB_PKI_DIR=$PWD/$PKI CB_WASM=$PWD/$WASM CB_ADMIN_PORT=9901 \
    CB_ORDERS_PORT=8443 CB_BILLING_PORT=8444 CB_EDGE_PORT=8445 \
    CB_BASELINE_ORDERS_PORT=8080 CB_BASELINE_BILLING_PORT=8081 \
    CB_AUTHZ_PORT=9443 CB_PDP_PORT=9191 CB_ORDERS_UPSTREAM_PORT=7001 CB_BILLING_UPSTREAM_PORT=7002 \
    CB_MODE=enforce CB_ISSUER=https://127.0.0.1:9443 CB_LISTEN_ADDRESS=127.0.0.1 \
    CB_AUTHZ_HOST=127.0.0.1 CB_PDP_HOST=127.0.0.1 CB_ORDERS_UPSTREAM_HOST=127.0.0.1 \
    CB_BILLING_UPSTREAM_HOST=127.0.0.1 CB_CLUSTER_TYPE=STATIC
  envsubst < envoy/sidecar.yaml.tmpl > $RUN/envoy.yaml
  "$ENVOY" --mode validate -c $RUN/envoy.yaml --log-level error >/dev/null
}

up() {
  [[ -x $ENVOY ]] || { echo "Envoy is missing: run 'make deps'" >&2; exit 1; }
  [[ -f $WASM ]] || { echo "the filter is missing: run 'make wasm'" >&2; exit 1; }
  [[ -f $PKI/ca.crt ]] || { echo "no PKI: run 'make pki'" >&2; exit 1; }
  # Envoy reads every certificate through the SDS secrets `pki init` writes (make rotate-certs).
  [[ -f $PKI/sds/ca.yaml ]] || { echo "no SDS secrets in $PKI/sds: run 'make pki'" >&2; exit 1; }
  render_envoy
  local name port cmd
  while IFS='|' read -r name port cmd; do
    if alive "$name"; then
      echo "  $name already running (pid $(cat $PIDS/$name.pid))"
      continue
    fi
    if port_open "$port"; then
      echo "port $port ($name) is taken by another process; free it or run 'make down'" >&2
      exit 1
    fi
    # setsid: the service outlives this shell and `down` can signal its whole group.
    setsid $cmd >"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! >"$PIDS/$name.pid"
    for _ in $(seq 1 100); do
      port_open "$port" && break
      alive "$name" || { echo "$name failed to start; see $LOGS/$name.log:" >&2; tail -n 20 "$LOGS/$name.log" >&2; exit 1; }
      sleep 0.1
    done
    port_open "$port" || { echo "$name did not open port $port within 10 s; see $LOGS/$name.log" >&2; exit 1; }
    echo "  $name up on 127.0.0.1:$port (pid $(cat $PIDS/$name.pid), log $LOGS/$name.log)"
  done < <(services)
  # The renewer keeps the PKI alive for as long as the system runs: every leaf reissued at 2/3
  # of its life, the CA rolled over before it ends; every process above picks the files up.
  if alive renewer; then
    echo "  renewer already running (pid $(cat $PIDS/renewer.pid))"
  else
    setsid $BIN/certbind-authz pki renew --watch --dir $PKI >"$LOGS/renewer.log" 2>&1 < /dev/null &
    echo $! >"$PIDS/renewer.pid"
    sleep 0.2
    alive renewer || { echo "the renewer failed to start; see $LOGS/renewer.log:" >&2; tail -n 20 "$LOGS/renewer.log" >&2; exit 1; }
    echo "  renewer running (pid $(cat $PIDS/renewer.pid), log $LOGS/renewer.log)"
  fi
}

down() {
  local name
  for pidfile in "$PIDS"/*.pid; do
    [[ -e $pidfile ]] || continue
    name=$(basename "$pidfile" .pid)
    if alive "$name"; then
      kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$name" || break; sleep 0.1; done
      alive "$name" && kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
      echo "  $name stopped"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
