//! What a replica of a shared store (PostgreSQL) adds to the revocation service: it follows
//! `NOTIFY`, shares the DPoP proof `jti` set and posture reports, and counts as current only
//! while it has read the store within [`STALE_AFTER`]: cut from the database it stops
//! answering the feed and issuing tokens until a read succeeds again.

use crate::revocation::{Revocations, STALE_AFTER};
use crate::store::StoreError;
use certbind_core::binding::SpiffeId;
use std::sync::{Arc, PoisonError};

impl Revocations {
    /// Whether this server may answer from its mirror as current: always for a store of its
    /// own; for a shared store, only while it read the store within [`STALE_AFTER`].
    pub fn is_current(&self) -> bool {
        !self.shared
            || self
                .synced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|t| t.elapsed() < STALE_AFTER)
    }

    /// Whether replicas share the store.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Records a DPoP proof `jti` in the shared set; `Ok(false)` for a replay. Blocking.
    pub fn spend_dpop_jti(&self, jti: &str, until: u64, now: u64) -> Result<bool, StoreError> {
        self.store().spend_dpop_jti(jti, until, now)
    }

    /// Records a posture report in the shared store (other replicas' watchdogs see it). Blocking.
    pub fn record_posture_report(&self, subject: &SpiffeId, at: u64) -> Result<(), StoreError> {
        self.store().record_posture_report(subject.as_str(), at)
    }

    /// Every subject's last posture report in the shared store. Blocking.
    pub fn posture_reports(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.store().posture_reports()
    }

    /// Follows `NOTIFY` from a shared PostgreSQL store: each notification reads the new rows
    /// at once (the watcher's poll stays as the backstop).
    pub fn spawn_listener(
        self: Arc<Self>,
        config: postgres::Config,
        clock: crate::clock::Clock,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        crate::pg::spawn_listener(config, move || {
            if let Err(e) = self.refresh(clock()) {
                tracing::warn!(error = %e, "revocation refresh after NOTIFY failed");
            }
        })
    }

    /// Whether a follower at `since` is ahead of this replica's mirror while the store is
    /// shared: it saw a newer row at another replica, and this one has not read it yet. Answering
    /// from the mirror would send a snapshot at an older `seq` that drops rows the follower
    /// already applied, so the store is read first ([`Self::refresh`]).
    pub fn lags_behind(&self, since: Option<u64>) -> bool {
        self.shared && since.is_some_and(|s| s > self.latest())
    }
}
