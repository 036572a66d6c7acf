//! The filter's Envoy counters, defined once per VM and incremented by id. The counters every
//! admitted request bumps (`allowed`, the two cache hits) are summed in the VM and handed to
//! Envoy by the root's tick (at most a second late): each is a host call, and together they
//! were a tenth of certbind's instructions on a warm request. Everything else, a refusal
//! above all, is counted at once.

use crate::host;
use certbind_core::reason::Reason;
use std::cell::Cell;

pub const ALLOWED: &str = "certbind.allowed";
pub const SHADOW_PASSED: &str = "certbind.shadow.passed";
pub const JWKS_FETCH_OK: &str = "certbind.jwks.fetch_ok";
pub const JWKS_FETCH_FAILED: &str = "certbind.jwks.fetch_failed";
pub const TOKEN_CACHE_HIT: &str = "certbind.token_cache.hit";
pub const DECISION_CACHE_HIT: &str = "certbind.decision_cache.hit";
pub const REVOCATION_FEED_OK: &str = "certbind.revocation.feed_ok";
pub const REVOCATION_FEED_FAILED: &str = "certbind.revocation.feed_failed";
pub const REVOCATION_FAIL_OPEN: &str = "certbind.revocation.fail_open";
/// Changes of the published revocation set another VM took in as the deltas that made them.
pub const REVOCATION_ADOPTED_DELTA: &str = "certbind.revocation.adopted_delta";
/// ... and as a read of the whole set (to start, or too far behind for the deltas).
pub const REVOCATION_ADOPTED_SET: &str = "certbind.revocation.adopted_set";
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
    RevocationAdoptedDelta,
    RevocationAdoptedSet,
    Es256InModule,
}

/// Metric ids by counter; a counter the host refused to define is skipped silently.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: Vec<(Counter, u32)>,
    /// Counts of the allow path's counters not yet handed to Envoy, by metric id.
    pending: Vec<(u32, Cell<u64>)>,
}

/// The counters of the allow path, flushed by the tick.
const TALLIED: [Counter; 3] = [
    Counter::Allowed,
    Counter::TokenCacheHit,
    Counter::DecisionCacheHit,
];

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
            (Counter::RevocationAdoptedDelta, REVOCATION_ADOPTED_DELTA),
            (Counter::RevocationAdoptedSet, REVOCATION_ADOPTED_SET),
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
        let pending = ids
            .iter()
            .filter(|(c, _)| TALLIED.contains(c))
            .map(|(_, id)| (*id, Cell::new(0)))
            .collect();
        Self { ids, pending }
    }

    fn id(&self, counter: Counter) -> Option<u32> {
        self.ids
            .iter()
            .find_map(|(c, id)| (*c == counter).then_some(*id))
    }

    /// Counts one `counter`: at once, or, for the allow path's, at the next [`Self::flush`].
    pub fn bump(&self, counter: Counter) {
        let Some(id) = self.id(counter) else {
            return;
        };
        match self.pending.iter().find(|(p, _)| *p == id) {
            Some((_, n)) => n.set(n.get().saturating_add(1)),
            None => host::increment_counter(id, 1),
        }
    }

    /// Hands the summed counts to Envoy (the root's tick).
    pub fn flush(&self) {
        for (id, n) in &self.pending {
            let count = n.take();
            if count > 0 {
                host::increment_counter(*id, count);
            }
        }
    }
}
