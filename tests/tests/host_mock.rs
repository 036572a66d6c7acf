//! The real `certbind_filter.wasm` in wasmtime under a proxy-wasm host the test controls:
//! `cargo test -p certbind-tests --test host_mock` (after `make wasm`).

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

// The host and scenario modules are a toolkit: not every scenario uses every helper.
#[allow(dead_code)]
mod host_mock {
    pub mod abi;
    pub mod certs;
    pub mod contract;
    pub mod host;
    pub mod scenario;
    pub mod tokens;
    pub mod vm;

    mod audience;
    mod caches;
    mod crypto;
    mod dpop;
    mod jwks;
    mod lifecycle;
    mod pdp;
    mod refusals;
    mod revocations;
    mod robust;
    mod smoke;
    mod usage;
}
