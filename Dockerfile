# certbind's Rust services for `docker compose` (docker-compose.yml): one image with the
# authz-server, the PDP, the demo workloads (echo, consumer, attacker), the filter's .wasm and
# what the init step needs to generate the PKI and render Envoy's config. Envoy itself runs
# from the official envoyproxy/envoy image.
#
# Build arguments (the defaults are what a user gets; `make compose-test` overrides all three
# because its machine has no image registry, see the README's docker section):
#   RUST_IMAGE  the image that compiles the binaries            [rust:1.95-bookworm]
#   BASE_IMAGE  the runtime image                               [debian:bookworm-slim]
#   BINARIES    `source`: compile here from the build context;  [source]
#               `prebuilt`: take the binaries and the .wasm from `.prebuilt/` in the build
#               context instead (scripts/compose-test.sh puts the host's release build there)
#
# No BuildKit-only syntax (no `# syntax=` line, no RUN --mount): the classic builder of
# docker-compose v1 and an engine without buildx build this file as it is.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build: native bins + .wasm
FROM ${RUST_IMAGE} AS build
ARG BINARIES=source
# Names the stage's image, so a test can remove its own leftovers (`docker image prune --filter`).
LABEL org.certbind.stage=build
# Pin the toolchain (rust-toolchain.toml says "stable", which would download whatever stable
# is today) and add the filter's target.
ENV RUSTUP_TOOLCHAIN=1.95.0 CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN set -eu; \
    bins="certbind-authz certbind-pdp certbind-echo certbind-consumer certbind-attacker"; \
    mkdir -p /out/bin /out/share; \
    case "$BINARIES" in \
      source) \
        rustup target add wasm32-wasip1; \
        cargo build --release --locked -p certbind-authz -p certbind-pdp -p certbind-demo --bins; \
        cargo build --release --locked --target wasm32-wasip1 -p certbind-filter; \
        scripts/trim-wasm.sh target/wasm32-wasip1/release; \
        for b in $bins; do cp "target/release/$b" /out/bin/; done; \
        cp target/wasm32-wasip1/release/certbind_filter.wasm /out/share/ ;; \
      prebuilt) \
        for b in $bins; do cp ".prebuilt/$b" /out/bin/; done; \
        cp .prebuilt/certbind_filter.wasm /out/share/ ;; \
      *) echo "BINARIES must be 'source' or 'prebuilt', not '$BINARIES'" >&2; exit 1 ;; \
    esac

# ------------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime
# envsubst renders the Envoy template; curl is the health checks' and the curl checks' client.
# Installed unless the base image already has them (the test's stand-in base does: it has no
# registry or mirror at build time).
RUN set -eu; \
    if ! command -v envsubst >/dev/null || ! command -v curl >/dev/null; then \
      apt-get update; \
      apt-get install -y --no-install-recommends gettext-base ca-certificates curl; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --uid 10001 --home-dir /var/lib/certbind certbind; \
    mkdir -p /var/lib/certbind/pki /var/lib/certbind/authz /var/lib/certbind/envoy; \
    chown -R certbind:certbind /var/lib/certbind
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/share/certbind_filter.wasm /usr/local/share/certbind/certbind_filter.wasm
COPY authz-server/clients.yaml /etc/certbind/clients.yaml
COPY pdp/policies/ /etc/certbind/policies/
COPY envoy/sidecar.yaml.tmpl /etc/certbind/sidecar.yaml.tmpl
COPY demo/docker/init.sh /usr/local/bin/certbind-init
USER certbind
WORKDIR /var/lib/certbind
CMD ["certbind-init"]
