# syntax=docker/dockerfile:1
# certbind's Rust services for `docker compose` (docker-compose.yml): one image with the
# authz-server, the PDP, the demo workloads (echo, consumer, attacker), the filter's .wasm and
# what the init step needs to generate the PKI and render Envoy's config. Envoy itself runs
# from the official envoyproxy/envoy image.

# ---------------------------------------------------------------- build: native bins + .wasm
FROM rust:1.95-bookworm AS build
# Pin the toolchain of the image (rust-toolchain.toml says "stable", which would download
# whatever stable is today) and add the filter's target.
ENV RUSTUP_TOOLCHAIN=1.95.0 CARGO_TERM_COLOR=never
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p certbind-authz -p certbind-pdp -p certbind-demo --bins \
 && cargo build --release --locked --target wasm32-wasip1 -p certbind-filter \
 && mkdir -p /out/bin /out/share \
 && cp target/release/certbind-authz target/release/certbind-pdp target/release/certbind-echo \
       target/release/certbind-consumer target/release/certbind-attacker /out/bin/ \
 && cp target/wasm32-wasip1/release/certbind_filter.wasm /out/share/

# ------------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim AS runtime
# envsubst renders the Envoy template; ca-certificates for nothing but sanity of TLS tooling.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gettext-base ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/certbind certbind \
 && mkdir -p /var/lib/certbind/pki /var/lib/certbind/authz /var/lib/certbind/envoy \
 && chown -R certbind:certbind /var/lib/certbind
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/share/certbind_filter.wasm /usr/local/share/certbind/certbind_filter.wasm
COPY authz-server/clients.yaml /etc/certbind/clients.yaml
COPY pdp/policies/ /etc/certbind/policies/
COPY envoy/sidecar.yaml.tmpl /etc/certbind/sidecar.yaml.tmpl
COPY demo/docker/init.sh /usr/local/bin/certbind-init
USER certbind
WORKDIR /var/lib/certbind
CMD ["certbind-init"]
