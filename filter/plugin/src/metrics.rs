//! The filter's Envoy counters, defined once per VM and incremented by id.

use crate::host;
use certbind_core::reason::Reason;

pub const ALLOWED: &str = "certbind.allowed";
pub const SHADOW_PASSED: &str = "certbind.shadow.passed";
pub const JWKS_FETCH_OK: &str = "certbind.jwks.fetch_ok";
pub const JWKS_FETCH_FAILED: &str = "certbind.jwks.fetch_failed";
pub const TOKEN_CACHE_HIT: &str = "certbind.token_cache.hit";
pub const DECISION_CACHE_HIT: &str = "certbind.decision_cache.hit";
pub const REVOCATION_FEED_OK: &str = "certbind.revocation.feed_ok";
pub const REVOCATION_FEED_FAILED: &str = "certbind.revocation.feed_failed";
pub const REVOCATION_FAIL_OPEN: &str = "certbind.revocation.fail_open";
/// VMs verifying ES256 inside the module (the host's `verify_signature` missing or wrong).
pub const ES256_IN_MODULE: &str = "certbind.es256.in_module";

/// Which counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Allowed,
    Denied(Reason),
    ShadowPassed,
    JwksFetchOk,
    JwksFetchFailed,
    TokenCacheHit,
    DecisionCacheHit,
    RevocationFeedOk,
    RevocationFeedFailed,
    RevocationFailOpen,
    Es256InModule,
}

/// Metric ids by counter; a counter the host refused to define is skipped silently.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: Vec<(Counter, u32)>,
}

impl Metrics {
    pub fn define() -> Self {
        let mut named: Vec<(Counter, &'static str)> = vec![
            (Counter::Allowed, ALLOWED),
            (Counter::ShadowPassed, SHADOW_PASSED),
            (Counter::JwksFetchOk, JWKS_FETCH_OK),
            (Counter::JwksFetchFailed, JWKS_FETCH_FAILED),
            (Counter::TokenCacheHit, TOKEN_CACHE_HIT),
            (Counter::DecisionCacheHit, DECISION_CACHE_HIT),
            (Counter::RevocationFeedOk, REVOCATION_FEED_OK),
            (Counter::RevocationFeedFailed, REVOCATION_FEED_FAILED),
            (Counter::RevocationFailOpen, REVOCATION_FAIL_OPEN),
            (Counter::Es256InModule, ES256_IN_MODULE),
        ];
        named.extend(
            Reason::ALL
                .iter()
                .map(|r| (Counter::Denied(*r), r.stat_name())),
        );
        // Two reasons may share one stat (a missing scope is a `policy_denied`): define each
        // name once and let both counters point at it.
        let mut defined: Vec<(&'static str, u32)> = Vec::new();
        let mut ids = Vec::new();
        for (counter, name) in named {
            let id = match defined.iter().find(|(n, _)| *n == name) {
                Some((_, id)) => Some(*id),
                None => host::define_counter(name),
            };
            if let Some(id) = id {
                defined.push((name, id));
                ids.push((counter, id));
            }
        }
        Self { ids }
    }

    pub fn bump(&self, counter: Counter) {
        if let Some((_, id)) = self.ids.iter().find(|(c, _)| *c == counter) {
            host::increment_counter(*id);
        }
    }
}
