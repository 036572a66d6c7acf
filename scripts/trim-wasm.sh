#!/bin/sh
# Exports only the proxy-wasm callbacks each filter implements, so the host does not enter V8
# for the others on every stream (filter/trim says why). `make wasm` and the Dockerfile run it
# after cargo has built the modules.
#   scripts/trim-wasm.sh DIR    DIR: cargo's wasm32-wasip1/release directory
# A module missing from DIR is left alone; trimming twice changes nothing.
set -eu
dir=${1:?usage: scripts/trim-wasm.sh target/wasm32-wasip1/release}
trim() {
    module=$dir/$1
    shift
    [ -f "$module" ] || return 0
    cargo run --release --locked --quiet -p certbind-wasm-trim -- "$module" "$@"
}
# certbind (filter/plugin: root.rs, http.rs). Counters left when a root context goes are
# handed over by its Drop, in proxy_on_delete, so proxy_on_done is not needed.
trim certbind_filter.wasm \
    proxy_on_context_create proxy_on_vm_start proxy_on_configure proxy_on_tick \
    proxy_on_request_headers proxy_on_request_body proxy_on_request_trailers \
    proxy_on_http_call_response proxy_on_delete
# The benchmark's floor filter (bench/noop-filter), trimmed the same way so it stays a floor.
trim certbind_noop_filter.wasm \
    proxy_on_context_create proxy_on_vm_start proxy_on_configure \
    proxy_on_request_headers proxy_on_delete
