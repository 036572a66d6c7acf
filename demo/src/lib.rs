//! certbind's demo workloads as a library: an HTTPS client, token forging, the authz-server
//! client, the consumer's flow and the attack table, so the bins and the end-to-end test share
//! one implementation.

pub mod attacks;
pub mod authz;
pub mod client;
pub mod consumer;
pub mod control;
pub mod dpop;
pub mod forge;
pub mod report;
pub mod usage;

/// The fixed addresses of CONTRACT §2 (what `make up` uses).
pub mod defaults {
    pub const AUTHZ: &str = "127.0.0.1:9443";
    pub const ORDERS: &str = "127.0.0.1:8443";
    pub const BILLING: &str = "127.0.0.1:8444";
    pub const EDGE: &str = "127.0.0.1:8445";
    /// The edge listener's public origin (the `htu` of proofs sent to it).
    pub const EDGE_ORIGIN: &str = "https://127.0.0.1:8445";
    pub const BASELINE_ORDERS: &str = "127.0.0.1:8080";
    pub const BASELINE_BILLING: &str = "127.0.0.1:8081";
    pub const ISSUER: &str = "https://127.0.0.1:9443";
    pub const PKI_DIR: &str = ".run/pki";
    pub const STATE_DIR: &str = ".run/authz";
    pub const PDP_PID_FILE: &str = ".run/pids/pdp.pid";
    pub const AUTHZ_PID_FILE: &str = ".run/pids/authz.pid";
    pub const JSON: &str = ".run/attacks.json";
    pub const MARKDOWN: &str = "docs/attacks.md";
}
