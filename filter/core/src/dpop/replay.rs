//! A bounded in-VM cache of the `jti`s of accepted proofs: a proof is admitted
//! once within its window; when full, new proofs are refused, never live entries evicted.

use super::error::DpopError;
use super::proof::VerifiedProof;
use std::collections::{BTreeSet, HashMap};

/// The `jti`s of accepted proofs, each kept until its proof leaves the window. Bounded: when
/// full of live entries a new proof is refused ([`DpopError::ReplayCacheFull`]), never a live
/// entry evicted — eviction would let a flood of proofs make room for a replay.
#[derive(Debug, Clone)]
pub struct ReplayCache {
    capacity: usize,
    until: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl ReplayCache {
    /// A cache of at most `capacity` live `jti`s. Size it for the proofs one window can bring
    /// (requests per second × (max age + 2 × skew)); 0 refuses every proof.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            until: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Admits `proof` once: records its `jti` until [`VerifiedProof::replay_until_s`], or
    /// refuses it as [`DpopError::Replayed`] if the `jti` is live, as
    /// [`DpopError::TooOld`] if its window has already closed, or as
    /// [`DpopError::ReplayCacheFull`].
    pub fn check_and_record(&mut self, proof: &VerifiedProof, now_s: u64) -> Result<(), DpopError> {
        self.purge(now_s);
        if self.until.contains_key(proof.jti()) {
            return Err(DpopError::Replayed);
        }
        if proof.replay_until_s() <= now_s {
            return Err(DpopError::TooOld);
        }
        if self.until.len() >= self.capacity {
            return Err(DpopError::ReplayCacheFull);
        }
        self.until
            .insert(proof.jti().to_owned(), proof.replay_until_s());
        self.by_expiry
            .insert((proof.replay_until_s(), proof.jti().to_owned()));
        Ok(())
    }

    /// Forgets every `jti` whose window has closed at `now_s`.
    fn purge(&mut self, now_s: u64) {
        while let Some((until, jti)) = self.by_expiry.first().cloned() {
            if until > now_s {
                break;
            }
            self.by_expiry.pop_first();
            self.until.remove(&jti);
        }
    }
}
