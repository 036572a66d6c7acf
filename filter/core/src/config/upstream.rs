//! The `jwks` and `pdp` sections: where the keys and the decisions come from, and the JWKS
//! timing policy they convert to.

use crate::jwks::JwksPolicy;
use serde::Deserialize;

/// Where and how often the JWKS is fetched, and how long a good one may be served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The Envoy cluster of the authz-server.
    pub cluster: String,
    /// The `:authority` of the fetch.
    pub authority: String,
    /// The path of the fetch (default `/.well-known/jwks.json`).
    #[serde(default = "default_jwks_path")]
    pub path: String,
    /// A good JWKS is refetched this often, seconds (default 300).
    #[serde(default = "default_refresh_interval_s")]
    pub refresh_interval_s: u64,
    /// An unknown `kid` triggers at most one refetch per this many seconds (default 30).
    #[serde(default = "default_min_refetch_interval_s")]
    pub min_refetch_interval_s: u64,
    /// The last good JWKS is served at most this long after it was fetched (default 3600).
    #[serde(default = "default_max_stale_s")]
    pub max_stale_s: u64,
    /// A request arriving before the first JWKS waits this long, then gets 503 (default 5000).
    #[serde(default = "default_first_fetch_wait_ms")]
    pub first_fetch_wait_ms: u64,
    /// Timeout of one JWKS fetch, milliseconds (default 2000).
    #[serde(default = "default_jwks_timeout_ms")]
    pub timeout_ms: u64,
}

impl JwksConfig {
    /// The JWKS timing policy, in milliseconds.
    pub fn policy(&self) -> JwksPolicy {
        JwksPolicy {
            refresh_ms: self.refresh_interval_s.saturating_mul(1000),
            min_refetch_ms: self.min_refetch_interval_s.saturating_mul(1000),
            max_stale_ms: self.max_stale_s.saturating_mul(1000),
            fetch_timeout_ms: self.timeout_ms,
        }
    }
}

/// Where the policy decision point is and how long the filter waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdpConfig {
    /// The Envoy cluster of the PDP (mTLS with the sidecar's identity).
    pub cluster: String,
    /// The `:authority` of the call.
    pub authority: String,
    /// The path of the call (default `/v1/decision`).
    #[serde(default = "default_pdp_path")]
    pub path: String,
    /// Timeout of one decision call, milliseconds (default 200).
    #[serde(default = "default_pdp_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_jwks_path() -> String {
    "/.well-known/jwks.json".to_owned()
}
fn default_refresh_interval_s() -> u64 {
    300
}
fn default_min_refetch_interval_s() -> u64 {
    30
}
fn default_max_stale_s() -> u64 {
    3600
}
pub(super) fn default_first_fetch_wait_ms() -> u64 {
    5000
}
fn default_jwks_timeout_ms() -> u64 {
    2000
}
fn default_pdp_path() -> String {
    "/v1/decision".to_owned()
}
fn default_pdp_timeout_ms() -> u64 {
    200
}
