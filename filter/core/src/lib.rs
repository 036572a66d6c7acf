//! certbind-core: the filter's pure logic, shared with the authz-server and the PDP.
//! No I/O, no proxy-wasm, no clock of its own: time comes in as an argument.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod backoff;
pub mod binding;
pub mod cache;
pub mod caller;
pub mod cert;
#[cfg(any(test, feature = "x509-reference"))]
pub mod cert_reference;
pub mod config;
pub mod decision;
pub mod dpop;
pub mod dpop_replay;
pub mod es256;
pub mod flow;
pub mod host_es256;
#[cfg(any(test, feature = "reference-host"))]
pub mod host_es256_reference;
pub mod jose;
pub mod json;
pub mod jwk;
pub mod jwks;
pub mod jwks_share;
pub mod pending;
pub mod reason;
pub mod revocation;
pub mod revocation_guard;
pub mod revocation_share;
pub mod shared;
#[cfg(test)]
mod test_rng;
pub mod token;
pub mod usage;
pub mod validity;
