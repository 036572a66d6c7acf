//! The `dpop` section: how proofs are checked on a `binding: dpop` listener.

use super::error::{ConfigError, MAX_CACHE_SIZE, MAX_DPOP_AGE_S, MAX_DPOP_SKEW_S};
use crate::dpop::{ProofWindow, normalize_htu};
use crate::jose;
use serde::Deserialize;

/// How DPoP proofs are checked on a `binding: dpop` listener (RFC 9449 §4.3, §11.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// `https://host[:port]` as the callers reach this listener (in front of any
    /// TLS-terminating hop): the proof's `htu` must be this origin plus the request path.
    pub public_origin: String,
    /// How old a proof's `iat` may be, seconds (default 60).
    #[serde(default = "default_dpop_max_age_s")]
    pub max_age_s: u64,
    /// Clock difference tolerated on `iat` in both directions, seconds (default 5).
    #[serde(default = "default_dpop_clock_skew_s")]
    pub clock_skew_s: u64,
    /// How many proof `jti`s are remembered across all worker VMs (default 16384). Size it
    /// for requests per second × (max age + 2 × skew); when full, new proofs are refused.
    #[serde(default = "default_replay_cache_size")]
    pub replay_cache_size: usize,
    /// Server-provided nonces (RFC 9449 §9). Not implemented yet: only `false` is accepted.
    #[serde(default)]
    pub nonce: bool,
}

impl DpopConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why| Err(ConfigError::Invalid { field, why });
        let origin_ok = jose::is_printable_ascii(&self.public_origin)
            && !self.public_origin.ends_with('/')
            && normalize_htu(&format!("{}/", self.public_origin))
                .is_some_and(|u| u.starts_with("https://") && u.matches('/').count() == 3);
        if !origin_ok {
            return bad(
                "dpop.public_origin",
                "must be an https origin (https://host[:port], no path)",
            );
        }
        if self.max_age_s == 0 || self.max_age_s > MAX_DPOP_AGE_S {
            return bad("dpop.max_age_s", "must be in 1..=300");
        }
        if self.clock_skew_s > MAX_DPOP_SKEW_S {
            return bad("dpop.clock_skew_s", "must be at most 60");
        }
        if self.replay_cache_size == 0 || self.replay_cache_size > MAX_CACHE_SIZE {
            return bad("dpop.replay_cache_size", "must be in 1..=100000");
        }
        if self.nonce {
            return bad("dpop.nonce", "is not supported yet (only false)");
        }
        Ok(())
    }

    /// The proof window of [`crate::dpop::verify_proof`].
    pub fn window(&self) -> ProofWindow {
        ProofWindow {
            max_age_s: self.max_age_s,
            clock_skew_s: self.clock_skew_s,
        }
    }
}

fn default_dpop_max_age_s() -> u64 {
    60
}
fn default_dpop_clock_skew_s() -> u64 {
    5
}
fn default_replay_cache_size() -> usize {
    16_384
}
