//! Shared helpers for certbind's end-to-end tests: prerequisites, free ports, child processes,
//! the Envoy template renderer, a rustls HTTP client, forged tokens and a whole `System`.
//!
//! Everything here fails loudly: a missing prerequisite is an [`Error::Missing`] whose message
//! says how to get it, never a skipped test.

pub mod capture;
pub mod client;
pub mod envoy;
pub mod error;
pub mod fake;
pub mod oci;
pub mod ports;
pub mod postgres;
pub mod prereq;
pub mod proc;
pub mod render;
pub mod replicas;
pub mod switch;
pub mod system;
pub mod tokens;

pub use client::{Request, Response, TlsClient};
pub use error::Error;
pub use system::{System, SystemBuilder};

/// The demo trust domain (CONTRACT §2).
pub const TRUST_DOMAIN: &str = "certbind.test";

/// `spiffe://certbind.test/ns/demo/sa/<name>`: the SPIFFE ID of a demo workload.
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/{name}")
}
